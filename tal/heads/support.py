"""Initial weights for a task the checkpoint never trained on, from its labelled examples.

Three steps, none a gradient step: embed the task with the checkpoint's ancestry model of its
modality (the mean feature of a few hundred of its images or texts), predict the weights for
that embedding, then replace the predicted classifier head, whose rows follow no class order
the hypernetwork could have learned, by the discriminant head fitted on the same examples
(``tal.heads.discriminant``): a ViT's ``head`` from its pre-logit features, a GPT-2's ``score``
(``GPT2ForSequenceClassification``, no bias) from its final hidden state at each text's last
token, the one that model classifies.
"""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from safetensors import SafetensorError
from torch import nn

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION, OutputFormat, parse_dtype
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.text_ancestry import last_token_states
from tal.heads.discriminant import (
    DiscriminantHeadFit,
    fit_discriminant_head,
    fit_linear_discriminant,
)
from tal.tasks import NormStats, TaskData
from tal.tasks.data import Modality
from tal.tasks.preprocess import denormalize, prepare_images
from tal.tasks.text.data import TextTaskData

SUPPORT_IMAGES_KEY = "images"
SUPPORT_LABELS_KEY = "labels"
SUPPORT_IDS_KEY, SUPPORT_LENGTHS_KEY = "input_ids", "lengths"
SUPPORT_CLASSES_KEY = "tal.num_classes"
SUPPORT_MODALITY_KEY = "tal.modality"
Support = TaskData | TextTaskData  # a task's labelled examples: images or tokenised texts
FEATURE_BATCH = 64
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


def modality_of(data: Support) -> Modality:
    return "text" if isinstance(data, TextTaskData) else "image"


def task_support(data: Support, examples: int = TASK_EMBEDDING_EXAMPLES) -> Support:
    """The examples behind a new task's embedding and head: at most ``examples`` of
    ``data``'s, balanced over classes, with its class count (and an image task's
    normalisation)."""
    if examples < 1:
        raise ValueError(f"examples must be at least 1, got {examples}")
    chosen = balanced_support(data.labels, examples)
    if isinstance(data, TextTaskData):
        return replace(
            data,
            input_ids=data.input_ids[chosen],
            lengths=data.lengths[chosen],
            labels=data.labels[chosen],
        )
    return replace(data, images=data.images[chosen], labels=data.labels[chosen])


def missing_classes(support: Support) -> list[int]:
    """Classes in ``[0, support.num_classes)`` without an example in ``support``, in order."""
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


def head_fit_gflop(spec: ViTSpec | GPT2Spec, examples: int) -> float:
    """The forward pass a head fit runs over ``examples`` images or texts, in GFLOP (2
    multiply-adds per parameter and token: a lower bound that leaves attention scores out; a
    GPT-2 counted at its full ``n_positions``, without the token embedding it only looks up)."""
    if isinstance(spec, GPT2Spec):
        params = spec.num_params() - spec.vocab_size * spec.n_embd
        return FLOP_PER_PARAM_TOKEN * params * spec.n_positions * examples / GIGA
    return FLOP_PER_PARAM_TOKEN * spec.num_params() * spec.num_tokens * examples / GIGA


def fit_head_to_support(
    spec: ViTSpec | GPT2Spec,
    tensors: dict[str, torch.Tensor],
    support: Support,
    format: OutputFormat,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], DiscriminantHeadFit, NormStats | None]:
    """``tensors`` (float32, ``format``'s names) with the classifier head replaced by the
    discriminant head fitted on ``support``'s examples: a ViT's images brought to the spec's
    size and channels (:func:`support_for_spec`), a GPT-2's texts (format
    ``hf-sequence-classification``). The forward pass runs on ``device``, the fit on the CPU;
    the rest is unchanged, returned on the CPU in ``dtype``. Also returns the fit and, for
    images, the normalisation the head expects its inputs in (None for texts).

    Raises:
        ValueError: the support's modality does not match the spec's family, or
            ``spec.num_classes`` differs from the support's, or some class has no example.
    """
    check_classes(spec, support)
    model = build_model(spec, format).to(device)
    model.load_state_dict(tensors, strict=True)
    norm = None
    if isinstance(support, TextTaskData):
        if format != HF_SEQUENCE_CLASSIFICATION:
            raise ValueError(
                f"a text task's head is fitted in format '{HF_SEQUENCE_CLASSIFICATION}'"
            )
        features = text_features(model, support.input_ids, support.lengths)
        weight, _, fit = fit_linear_discriminant(
            features, support.labels, spec.num_classes, with_bias=False
        )
        with torch.no_grad():
            model.score.weight.copy_(weight.to(model.score.weight.dtype))
    else:
        support = support_for_spec(support, spec)  # type: ignore[arg-type]
        fit = fit_discriminant_head(model, support.images, support.labels)
        norm = support.norm
    state = model.state_dict()
    target = parse_dtype(dtype)
    fitted = {name: state[name].detach().to("cpu", target).contiguous() for name in tensors}
    return fitted, fit, norm


@torch.no_grad()
def text_features(model: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(N, width)``: a ``GPT2ForSequenceClassification``'s final hidden state (after
    ``ln_f``) at each text's last real token (ids ``(N, L)`` padded on the right, lengths
    ``(N,)``), what its ``score`` reads; computed in eval mode on the model's device."""
    was_training = model.training
    model.eval()
    device = model.score.weight.device
    chunks = []
    for ids, length in zip(
        input_ids.split(FEATURE_BATCH), lengths.split(FEATURE_BATCH), strict=True
    ):
        length = length.clamp_max(model.config.n_positions)  # longer texts: their first tokens
        width = int(length.max())
        hidden = model.transformer(input_ids=ids[:, :width].to(device)).last_hidden_state
        chunks.append(last_token_states(hidden, length.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(chunks)


def check_classes(spec: ViTSpec | GPT2Spec, data: Support) -> None:
    family = "gpt2" if isinstance(data, TextTaskData) else "vit"
    if spec.family != family:
        raise ValueError(
            f"the task's {modality_of(data)}s fit a {family} arch's head, not family "
            f"{spec.family!r}'s"
        )
    if spec.num_classes != data.num_classes:
        raise ValueError(
            f"the spec has num_classes={spec.num_classes} but the data has "
            f"{data.num_classes} classes; set num_classes to {data.num_classes}"
        )


def norm_metadata(norm: NormStats) -> str:
    """The input normalisation a fitted head expects, as blob metadata (``tal.input_norm``):
    JSON ``{"mean": [...], "std": [...]}`` per channel, for images scaled to [0, 1]."""
    return json.dumps({"mean": list(norm.mean), "std": list(norm.std)})


def support_to_bytes(support: Support) -> bytes:
    """``support`` as a safetensors blob, to keep beside a registered task: images ``(N, C, H,
    W)`` float32 or token ids ``(N, L)`` and lengths ``(N,)`` int64, labels ``(N,)``; modality,
    class count (and an image task's normalisation) in the metadata."""
    metadata = {
        SUPPORT_CLASSES_KEY: str(support.num_classes),
        SUPPORT_MODALITY_KEY: modality_of(support),
    }
    tensors = {SUPPORT_LABELS_KEY: support.labels}
    if isinstance(support, TextTaskData):
        tensors |= {SUPPORT_IDS_KEY: support.input_ids, SUPPORT_LENGTHS_KEY: support.lengths}
    else:
        tensors[SUPPORT_IMAGES_KEY] = support.images
        metadata[INPUT_NORM_METADATA_KEY] = norm_metadata(support.norm)
    return io.to_bytes(tensors, metadata)


def support_from_bytes(blob: bytes) -> Support:
    """The inverse of :func:`support_to_bytes` (blobs written before texts were supported are
    images); raises ValueError for any other blob."""
    try:
        tensors, metadata = io.load_state_dict(blob)
        classes = int(metadata[SUPPORT_CLASSES_KEY])
        if metadata.get(SUPPORT_MODALITY_KEY, "image") == "text":
            return TextTaskData(
                input_ids=tensors[SUPPORT_IDS_KEY],
                lengths=tensors[SUPPORT_LENGTHS_KEY],
                labels=tensors[SUPPORT_LABELS_KEY],
                num_classes=classes,
            )
        norm = json.loads(metadata[INPUT_NORM_METADATA_KEY])
        return TaskData(
            images=tensors[SUPPORT_IMAGES_KEY],
            labels=tensors[SUPPORT_LABELS_KEY],
            num_classes=classes,
            norm=NormStats(tuple(norm["mean"]), tuple(norm["std"])),
        )
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise ValueError(f"not a task support blob ({type(exc).__name__}: {exc})") from exc
