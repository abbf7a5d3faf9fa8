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

    >>> state = dct_transfer(source_spec, source_state, target_spec, seed=0, head_rows=(0, 10))

``tal.checkpoints.ancestry.Ancestry.transfer`` applies them to the ancestry model;
:mod:`tal.transfer.lift` to a learngene's own predictions outside its trained range, with
:mod:`tal.transfer.regrid` where the target's patch grid is finer than the proxy's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .dct_transfer import dct_transfer
from .weight_selection import weight_selection

TransferMethod = Literal["weight_selection", "dct"]
TRANSFER_METHODS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "weight_selection": weight_selection,
    "dct": dct_transfer,
}


__all__ = [
    "TRANSFER_METHODS",
    "TransferMethod",
    "dct_transfer",
    "weight_selection",
]
