"""One path from a spec to predicted weights: tensors (:func:`predict`) or a safetensors blob
(:func:`predict_blob`), which the CLI writes, the service caches and sends, and the benchmarks
time.

A blob with the predicted head is decoded straight into its payload: the layout is planned from
the export plan in the decoder's buffer order (``tal.hypernet.decoder.arena_pieces``), and the
decoder's flat output buffer *is* the payload, so nothing is copied after prediction (on a GPU,
one device-to-host copy). A blob with a head fitted to a task's images is predicted in float32,
fitted, then cast once into its payload.

Every blob carries metadata: ``tal.spec`` (canonical JSON), ``tal.task``, ``tal.model_version``,
``tal.format``, ``tal.dtype``, ``tal.head``, with a task's images ``tal.input_norm`` (the
normalisation their embedding and a fitted head expect), and for a ViT outside the learngene's
trained range ``tal.proxy`` (the spec predicted, then lifted to this one: ``tal.transfer.lift``,
in place in the payload the target's own prediction was decoded into) and, where its first
blocks rebuild the proxy's patch grid, ``tal.adapter_blocks``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from tal.arch.formats import ExportPlan, OutputDType, OutputFormat, export_plan, parse_dtype
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, SpecLike, ViTSpec
from tal.blobs.layout import Blob, Entry, Layout, plan_layout
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene, load_default
from tal.heads.choice import HEAD_DISCRIMINANT, HEAD_METADATA_KEY, HEAD_PREDICTED, ServedHead
from tal.heads.discriminant import DiscriminantHeadFit
from tal.heads.support import (
    INPUT_NORM_METADATA_KEY,
    Support,
    check_classes,
    fit_head_to_support,
    norm_metadata,
    support_for_spec,
    task_support,
)
from tal.hypernet.arena import OUTPUT_POOL
from tal.hypernet.decoder import arena_pieces
from tal.tasks import TaskData
from tal.tasks.text.data import TextTaskData
from tal.transfer.regrid import plan_regrid

CPU = torch.device("cpu")
PROXY_METADATA_KEY = "tal.proxy"
"""Present when the ViT is outside the learngene's trained range: the canonical JSON of the
in-range spec that was predicted and lifted to it (``tal.transfer.lift``)."""
ADAPTER_METADATA_KEY = "tal.adapter_blocks"
"""Present when the lift rebuilt the proxy's coarser patch grid in the target's first blocks
(``tal.transfer.regrid``): how many blocks (a decimal string). Their gradients are one to two
orders larger than the rest's (they read codes a hundred times their content): a fine-tuning
recipe that clips the global gradient norm should leave them out of it, or freeze them."""


@lru_cache(maxsize=1)
def default_learngene() -> Learngene:
    """The shipped checkpoint when present, else a fresh hypernetwork (cached per process)."""
    return load_default()


def predict(
    spec: SpecLike,
    task_embedding: torch.Tensor | str | None = None,
    format: OutputFormat = "timm",
    dtype: OutputDType = "float32",
    learngene: Learngene | None = None,
) -> dict[str, torch.Tensor]:
    """Predicted weights for ``spec``, in the order of the model's ``state_dict``.

    Args:
        spec: a spec, a spec dict, a timm model name or a Hugging Face config dict.
        task_embedding: ``(task_dim,)`` embedding, a task name known to the learngene, or None.
        format: ``"timm"`` (ViT) or ``"hf"`` (ViT and GPT-2) tensor names.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        learngene: the hypernetwork to use (default: :func:`default_learngene`).
    """
    learngene = learngene or default_learngene()
    return learngene.predict(spec, task_embedding, format, dtype)


def blob_metadata(
    spec: ViTSpec | GPT2Spec,
    task: str | None,
    format: str,
    dtype: str,
    learngene: Learngene,
    head: ServedHead = HEAD_PREDICTED,
) -> dict[str, str]:
    """The metadata written into every predicted safetensors blob."""
    return {
        "tal.spec": spec.canonical_json(),
        "tal.task": json.dumps(task),
        "tal.model_version": learngene.model_version,
        "tal.format": format,
        "tal.dtype": dtype,
        HEAD_METADATA_KEY: head,
    }


@dataclass(frozen=True)
class BlobPrediction:
    """A predicted blob, and the head fit when its head was fitted to the task's images."""

    blob: Blob
    head_fit: DiscriminantHeadFit | None = None


def predict_blob(
    arch: SpecLike,
    task: str | None = None,
    format: OutputFormat = "timm",
    dtype: OutputDType = "float32",
    *,
    learngene: Learngene | None = None,
    embedding: torch.Tensor | None = None,
    support: Support | None = None,
    head: ServedHead = HEAD_PREDICTED,
) -> BlobPrediction:
    """Predicted weights of ``arch`` for ``task`` as a safetensors blob (send or cache
    ``result.blob.memoryview()``; ``result.blob.tensors()`` are views of it).

    Args:
        arch: a spec, a spec dict, a timm model name or a Hugging Face config dict.
        task: the task's name, recorded in the metadata; looked up in the learngene unless
            ``embedding`` is given; None = unconditioned.
        format, dtype: tensor names and output dtype.
        learngene: the hypernetwork (default: :func:`default_learngene`).
        embedding: ``(task_dim,)`` the task's embedding (a task registered or made from
            images); overrides the look-up of ``task``.
        support: the task's labelled examples (images or tokenised texts):
            ``head="discriminant"`` is fitted to them, and images' normalisation is recorded
            (``tal.input_norm``).
        head: ``"predicted"`` (the hypernetwork's) or ``"discriminant"`` (fitted to ``support``).

    Raises:
        SpecError: an invalid arch, or a format the arch cannot be written in.
        UnknownTaskError: ``task`` is not in the learngene and no embedding was given.
        ValueError: an unknown dtype, or a discriminant head without support images, or one
            the support cannot fit (``tal.heads.support.fit_head_to_support``).
    """
    learngene = learngene or default_learngene()
    spec = parse_arch(arch)
    output_dtype = parse_dtype(dtype)
    plan = export_plan(spec, format)
    if embedding is None:
        embedding = learngene.task_embedding(task)
    metadata = blob_metadata(spec, task, format, dtype, learngene, head)
    proxy = learngene.proxy(spec)
    if proxy is not None:
        metadata[PROXY_METADATA_KEY] = proxy.canonical_json()
        regrid = plan_regrid(proxy, spec)
        if regrid is not None:
            metadata[ADAPTER_METADATA_KEY] = str(regrid.depth)
    if head == HEAD_DISCRIMINANT:
        return _with_fitted_head(
            learngene, spec, embedding, format, output_dtype, metadata, support
        )
    if isinstance(support, TaskData) and isinstance(spec, ViTSpec):
        metadata[INPUT_NORM_METADATA_KEY] = norm_metadata(support_for_spec(support, spec).norm)
    layout = _layout(plan, output_dtype, metadata)
    blob = layout.allocate(OUTPUT_POOL.empty(layout.total_bytes, torch.uint8, CPU))
    payload = blob.payload_as(output_dtype)
    device = learngene.hypernet.device
    with torch.inference_mode():
        if device.type == CPU.type:
            learngene.predict(spec, embedding, format, dtype, out=payload)
        else:  # decoded on the device into one buffer, then copied to the host once
            staged = torch.empty(payload.shape, dtype=output_dtype, device=device)
            learngene.predict(spec, embedding, format, dtype, out=staged)
            payload.copy_(staged)
    return BlobPrediction(blob)


def _with_fitted_head(
    learngene: Learngene,
    spec: ViTSpec | GPT2Spec,
    embedding: torch.Tensor | None,
    format: OutputFormat,
    output_dtype: torch.dtype,
    metadata: dict[str, str],
    support: Support | None,
) -> BlobPrediction:
    """Predicts in float32, replaces the head by the one fitted to ``support`` and casts the
    result once into a blob of ``output_dtype``."""
    if support is None:
        raise ValueError("a discriminant head needs the task's labelled examples")
    tensors = learngene.predict(spec, embedding, format, "float32")
    tensors, head_fit, norm = fit_head_to_support(
        spec, tensors, support, format, "float32", learngene.hypernet.device
    )
    if norm is not None:
        metadata[INPUT_NORM_METADATA_KEY] = norm_metadata(norm)
    blob = _layout(export_plan(spec, format), output_dtype, metadata).allocate()
    blob.write(tensors)
    return BlobPrediction(blob, head_fit)


def _layout(plan: ExportPlan, output_dtype: torch.dtype, metadata: dict[str, str]) -> Layout:
    """The blob layout of ``plan``'s outputs in the decoder's buffer order (tied names stored
    once)."""
    entries = [Entry(p.name, output_dtype, p.stored_shape) for p in arena_pieces(plan)]
    return plan_layout(entries, metadata, aliases=dict(plan.aliases))


@dataclass(frozen=True)
class NewTaskPrediction:
    """Predicted tensors (the model's ``state_dict`` names, views of ``blob``), the task
    embedding ``(task_dim,)`` and the head fit (None when the predicted head was kept)."""

    tensors: dict[str, torch.Tensor]
    embedding: torch.Tensor
    blob: Blob
    head_fit: DiscriminantHeadFit | None = None


def predict_for_task_data(
    learngene: Learngene,
    arch: SpecLike,
    data: Support,
    format: OutputFormat = "timm",
    dtype: OutputDType = "float32",
    examples: int = TASK_EMBEDDING_EXAMPLES,
    fit_head: bool = True,
    task: str | None = None,
) -> NewTaskPrediction:
    """Weights of ``arch`` for the task of ``data``, its labelled images (a ViT) or tokenised
    texts (a GPT-2; a fitted head needs format ``hf-sequence-classification``), using at most
    ``examples`` of them, balanced over classes: they give the embedding and, with
    ``fit_head``, the classifier head. ``task`` names the task in the blob's metadata.

    Raises:
        ValueError: ``arch``'s family does not take ``data``'s modality, its ``num_classes``
            differs from the data's, or (with ``fit_head``) some class has no example among
            those used.
        NoAncestryError: the checkpoint has no ancestry model of the data's modality.
    """
    spec = parse_arch(arch)
    check_classes(spec, data)
    support = task_support(data, examples)
    if isinstance(support, TextTaskData):
        embedding = learngene.embed_text_task(support.input_ids, support.lengths)
    else:
        embedding = learngene.embed_task(support.images)
    head = HEAD_DISCRIMINANT if fit_head else HEAD_PREDICTED
    result = predict_blob(
        spec, task, format, dtype,
        learngene=learngene, embedding=embedding, support=support, head=head,
    )  # fmt: skip
    return NewTaskPrediction(result.blob.tensors(), embedding, result.blob, result.head_fit)
