"""Initial weights for a task the checkpoint never trained on, from its labelled images.

Three steps, none a gradient step: embed the task with the checkpoint's ancestry model (the
mean feature of a few hundred of its images), predict the weights for that embedding, then
replace the predicted classifier head, whose rows follow no class order the hypernetwork could
have learned, by the discriminant head fitted on the same images (``tal.heads.discriminant``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from safetensors import SafetensorError

from tal.arch.formats import OutputFormat, parse_dtype
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.heads.discriminant import DiscriminantHeadFit, fit_discriminant_head
from tal.tasks import NormStats, TaskData
from tal.tasks.preprocess import denormalize, prepare_images

SUPPORT_IMAGES_KEY = "images"
SUPPORT_LABELS_KEY = "labels"
SUPPORT_CLASSES_KEY = "tal.num_classes"
# blob metadata of weights with a fitted head: the normalisation of the images their
# embedding and head were made from (a fitted head expects inputs normalised so)
INPUT_NORM_METADATA_KEY = "tal.input_norm"
FLOP_PER_PARAM_TOKEN = 2
GIGA = 1e9


def balanced_support(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``(min(count, N),)`` into ``labels`` ``(N,)`` taking the classes in turn (each
    class's examples in their order), so that a data set sorted by class gives every class
    its share of the first ``count``."""
    rank_in_class = torch.empty_like(labels)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        rank_in_class[members] = torch.arange(len(members))
    # rank first, then label: the first example of every class, then the second, ...
    order = torch.argsort(rank_in_class * (int(labels.max()) + 1) + labels, stable=True)
    return order[:count]


def task_support(data: TaskData, examples: int = TASK_EMBEDDING_EXAMPLES) -> TaskData:
    """The images behind a new task's embedding and head: at most ``examples`` of ``data``'s,
    balanced over classes, with its class count and normalisation."""
    if examples < 1:
        raise ValueError(f"examples must be at least 1, got {examples}")
    chosen = balanced_support(data.labels, examples)
    return replace(data, images=data.images[chosen], labels=data.labels[chosen])


def missing_classes(support: TaskData) -> list[int]:
    """Classes in ``[0, support.num_classes)`` without an image in ``support``, in order."""
    present = torch.zeros(support.num_classes, dtype=torch.bool)
    present[support.labels] = True
    return (~present).nonzero().squeeze(1).tolist()


def support_for_spec(support: TaskData, spec: ViTSpec) -> TaskData:
    """``support`` with its images ``(N, C, H, W)`` brought to ``(N, spec.in_chans,
    spec.img_size, spec.img_size)`` and normalised with their own statistics, as loading them
    at that size would; unchanged when they already have it."""
    if support.images.shape[1:] == (spec.in_chans, spec.img_size, spec.img_size):
        return support
    unit = denormalize(support.images, support.norm).clamp(0.0, 1.0)
    images, norm = prepare_images(unit, spec.img_size, spec.in_chans)
    return replace(support, images=images, norm=norm)


def head_fit_gflop(spec: ViTSpec, examples: int) -> float:
    """The forward pass a head fit runs over ``examples`` images, in GFLOP (2 multiply-adds
    per parameter and token: a lower bound that leaves attention scores out)."""
    return FLOP_PER_PARAM_TOKEN * spec.num_params() * spec.num_tokens * examples / GIGA


def fit_head_to_support(
    spec: ViTSpec,
    tensors: dict[str, torch.Tensor],
    support: TaskData,
    format: OutputFormat,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], DiscriminantHeadFit, NormStats]:
    """``tensors`` (float32, ``format``'s names) with the classifier head replaced by the
    discriminant head fitted on ``support``'s images (brought to the spec's size and channels
    by :func:`support_for_spec`; the forward pass runs on ``device``, the fit on the CPU); the
    rest unchanged, returned on the CPU in ``dtype``. Also returns the fit and the
    normalisation the head expects its inputs in.

    Raises:
        ValueError: ``spec.num_classes`` differs from the support's, or some class has no image.
    """
    check_classes(spec, support)
    support = support_for_spec(support, spec)
    model = build_model(spec, format).to(device)
    model.load_state_dict(tensors, strict=True)
    fit = fit_discriminant_head(model, support.images, support.labels)
    state = model.state_dict()
    target = parse_dtype(dtype)
    fitted = {name: state[name].detach().to("cpu", target).contiguous() for name in tensors}
    return fitted, fit, support.norm


def check_classes(spec: ViTSpec, data: TaskData) -> None:
    if spec.num_classes != data.num_classes:
        raise ValueError(
            f"the spec has num_classes={spec.num_classes} but the data has "
            f"{data.num_classes} classes; set num_classes to {data.num_classes}"
        )


def norm_metadata(norm: NormStats) -> str:
    """The input normalisation a fitted head expects, as blob metadata (``tal.input_norm``):
    JSON ``{"mean": [...], "std": [...]}`` per channel, for images scaled to [0, 1]."""
    return json.dumps({"mean": list(norm.mean), "std": list(norm.std)})


def support_to_bytes(support: TaskData) -> bytes:
    """``support`` as a safetensors blob (images ``(N, C, H, W)`` float32, labels ``(N,)``;
    class count and normalisation in the metadata), to keep beside a registered task."""
    metadata = {
        SUPPORT_CLASSES_KEY: str(support.num_classes),
        INPUT_NORM_METADATA_KEY: norm_metadata(support.norm),
    }
    return io.to_bytes(
        {SUPPORT_IMAGES_KEY: support.images, SUPPORT_LABELS_KEY: support.labels}, metadata
    )


def support_from_bytes(blob: bytes) -> TaskData:
    """The inverse of :func:`support_to_bytes`; raises ValueError for any other blob."""
    try:
        tensors, metadata = io.load_state_dict(blob)
        norm = json.loads(metadata[INPUT_NORM_METADATA_KEY])
        return TaskData(
            images=tensors[SUPPORT_IMAGES_KEY],
            labels=tensors[SUPPORT_LABELS_KEY],
            num_classes=int(metadata[SUPPORT_CLASSES_KEY]),
            norm=NormStats(tuple(norm["mean"]), tuple(norm["std"])),
        )
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise ValueError(f"not a task support blob ({type(exc).__name__}: {exc})") from exc
