"""Training-free baselines that start from the ancestry's trained weights.

Two methods map a source ViT's timm state dict to any target ViT (depth, width, patch size,
image size, channels), with no training:

* :func:`weight_selection` — Xu et al., ICLR 2024: evenly spaced elements, first layers.
* :func:`dct_transfer` — FRONT-style: low DCT frequencies of each matrix, truncated or
  zero-padded to the target's shape, rescaled to its fan-in.

What they share (layers, patch and position embeddings, channels, the head) is in
:mod:`tal.transfer.layout`. Both are pure functions of (source spec, source state dict, target
spec, seed, head rows) and return a state dict that loads with ``strict=True`` into
``tal.arch.target_models.build_model(target, "timm")``.

    >>> from tal.checkpoints.ancestry import Ancestry
    >>> ancestry = Ancestry.from_bytes(open("ancestry.safetensors", "rb").read())
    >>> target = ViTSpec(depth=6, embed_dim=128, num_heads=4, patch_size=8, img_size=32,
    ...                  in_chans=1, num_classes=10)
    >>> state = transfer_from_ancestry(ancestry, target, "dct", task="glyphs_digits")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch

from tal.arch.specs import ViTSpec
from tal.checkpoints.ancestry import Ancestry

from .dct_transfer import dct_transfer
from .weight_selection import weight_selection

TransferMethod = Literal["weight_selection", "dct"]
TRANSFER_METHODS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "weight_selection": weight_selection,
    "dct": dct_transfer,
}


def transfer_from_ancestry(
    ancestry: Ancestry,
    target: ViTSpec,
    method: TransferMethod,
    task: str | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The target's timm state dict transferred from the ancestry by ``method``.

    For a ``task`` the ancestry was trained on, its rows of the ancestry's union head become
    the target's head (``target.num_classes`` must equal the task's class count); for any
    other task, or none, the head keeps the target's timm initialisation.
    """
    if method not in TRANSFER_METHODS:
        raise ValueError(f"unknown transfer method {method!r}; use one of {list(TRANSFER_METHODS)}")
    head_rows = ancestry.task_offsets.get(task) if task is not None else None
    source_state: Mapping[str, torch.Tensor] = {
        name: tensor.detach().cpu() for name, tensor in ancestry.model.state_dict().items()
    }
    return TRANSFER_METHODS[method](ancestry.spec, source_state, target, seed, head_rows)


__all__ = [
    "TRANSFER_METHODS",
    "TransferMethod",
    "dct_transfer",
    "transfer_from_ancestry",
    "weight_selection",
]
