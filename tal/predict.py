"""``predict``: the one-call API from a spec to a state dict or a safetensors blob."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from tal.arch.formats import OutputFormat
from tal.arch.parse import parse_arch
from tal.arch.specs import SpecLike, ViTSpec
from tal.blobs import io
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene, load_default
from tal.heads.discriminant import DiscriminantHeadFit
from tal.heads.support import check_classes, fit_head_to_support, task_support
from tal.tasks import TaskData


@lru_cache(maxsize=1)
def default_learngene() -> Learngene:
    """The shipped checkpoint when present, else a fresh hypernetwork (cached per process)."""
    return load_default()


def predict(
    spec: SpecLike,
    task_embedding: torch.Tensor | str | None = None,
    format: OutputFormat = "timm",
    dtype: str = "float32",
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
    spec: SpecLike, task: str | None, format: str, dtype: str, learngene: Learngene
) -> dict[str, str]:
    """The metadata written into every predicted safetensors file."""
    return {
        "tal.spec": parse_arch(spec).canonical_json(),
        "tal.task": json.dumps(task),
        "tal.model_version": learngene.model_version,
        "tal.format": format,
        "tal.dtype": dtype,
    }


def predict_bytes(
    spec: SpecLike,
    task: str | None = None,
    format: OutputFormat = "timm",
    dtype: str = "float32",
    learngene: Learngene | None = None,
) -> bytes:
    """Like :func:`predict`, serialised to a safetensors blob with metadata."""
    learngene = learngene or default_learngene()
    tensors = learngene.predict(spec, task, format, dtype)
    return io.to_bytes(tensors, blob_metadata(spec, task, format, dtype, learngene))


@dataclass(frozen=True)
class NewTaskPrediction:
    """Predicted tensors (the model's ``state_dict`` names), the task embedding ``(task_dim,)``
    and the head fit (None when the predicted head was kept)."""

    tensors: dict[str, torch.Tensor]
    embedding: torch.Tensor
    head_fit: DiscriminantHeadFit | None = None


def predict_for_task_data(
    learngene: Learngene,
    arch: SpecLike,
    data: TaskData,
    format: OutputFormat = "timm",
    dtype: str = "float32",
    examples: int = TASK_EMBEDDING_EXAMPLES,
    fit_head: bool = True,
) -> NewTaskPrediction:
    """Weights of ViT ``arch`` for the task of ``data`` (images at the spec's size and
    channels), using at most ``examples`` of its images, balanced over classes.

    Raises:
        ValueError: ``arch`` is not a ViT, its ``num_classes`` differs from the data's, or
            (with ``fit_head``) some class has no image among those used.
        NoAncestryError: the checkpoint has no ancestry model to embed the task with.
    """
    spec = parse_arch(arch)
    if not isinstance(spec, ViTSpec):
        raise ValueError("weights for a task's images need a ViT spec (family 'vit')")
    check_classes(spec, data)
    support = task_support(data, examples)
    embedding = learngene.embed_task(support.images)
    if not fit_head:
        return NewTaskPrediction(learngene.predict(spec, embedding, format, dtype), embedding)
    tensors = learngene.predict(spec, embedding, format, "float32")
    tensors, head_fit, _ = fit_head_to_support(spec, tensors, support, format, dtype)
    return NewTaskPrediction(tensors, embedding, head_fit)
