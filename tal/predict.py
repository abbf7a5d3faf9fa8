"""``predict``: the one-call API from a spec to a state dict or a safetensors blob."""

from __future__ import annotations

import json
from functools import lru_cache

import torch

from tal import io
from tal.formats import OutputFormat
from tal.learngene import Learngene, load_default
from tal.specs import SpecLike, parse_arch


@lru_cache(maxsize=1)
def default_learngene() -> Learngene:
    """The shipped checkpoint when present, else a fresh hypernetwork (cached per process)."""
    return load_default()


def predict(
    spec: SpecLike,
    task_embedding: torch.Tensor | str | None = None,
    format: OutputFormat = "timm",
    dtype: str = "float32",
    seed: int = 0,
    learngene: Learngene | None = None,
) -> dict[str, torch.Tensor]:
    """Predicted weights for ``spec``, in the order of the model's ``state_dict``.

    Args:
        spec: a spec, a spec dict, a timm model name or a Hugging Face config dict.
        task_embedding: ``(task_dim,)`` embedding, a task name known to the learngene, or None.
        format: ``"timm"`` (ViT) or ``"hf"`` (ViT and GPT-2) tensor names.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        seed: seed of the full-rank residual; same inputs give the same bytes.
        learngene: the hypernetwork to use (default: :func:`default_learngene`).
    """
    learngene = learngene or default_learngene()
    return learngene.predict(spec, task_embedding, format, dtype, seed)


def blob_metadata(
    spec: SpecLike, task: str | None, fmt: str, dtype: str, seed: int, learngene: Learngene
) -> dict[str, str]:
    """The metadata written into every predicted safetensors file."""
    return {
        "tal.spec": parse_arch(spec).canonical_json(),
        "tal.task": json.dumps(task),
        "tal.model_version": learngene.model_version,
        "tal.format": fmt,
        "tal.dtype": dtype,
        "tal.seed": str(seed),
    }


def predict_bytes(
    spec: SpecLike,
    task: str | None = None,
    format: OutputFormat = "timm",
    dtype: str = "float32",
    seed: int = 0,
    learngene: Learngene | None = None,
) -> bytes:
    """Like :func:`predict`, serialised to a safetensors blob with metadata."""
    learngene = learngene or default_learngene()
    tensors = learngene.predict(spec, task, format, dtype, seed)
    return io.to_bytes(tensors, blob_metadata(spec, task, format, dtype, seed, learngene))
