"""A FRONT-style low-frequency transfer: the ancestry's matrices resized in the DCT domain.

Every width axis of a source tensor is taken to the frequency domain with the orthonormal
DCT-II, its coefficients are truncated (target smaller) or zero-padded (target larger) to the
target's size, and the orthonormal DCT-III at the target's size brings it back: for a matrix
that is the 2-D DCT, cut or padded to the target's shape, then inverted. The low-frequency
content of the ancestry's weights is what any target size inherits; at equal sizes the round
trip returns the source (to float precision).

Scale: the resized tensor is rescaled so its root-mean-square equals the source's times
``sqrt(fan_in_source / fan_in_target)`` when its fan-in is a width axis (weight matrices keep
the per-unit output variance of the source under the usual fan-in rule), and the source's RMS
otherwise (biases, norm weights, embeddings, and the patch kernel, whose fan-in is pixels and
channels, handled before in :mod:`tal.transfer.layout`). Cutting discards, and padding spreads,
energy across more entries; the rescale undoes both, so only the shape of the weights changes.

Layers, patch and position embeddings and the head are mapped as in
:mod:`tal.transfer.layout`, the same as for weight selection, so the two methods differ only in
how a width changes. Everything is torch matrix products (the DCT matrices are built in
float64; the result has the target's dtype).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import torch

from tal.arch.specs import ViTSpec

from .layout import TensorRole, transfer_state

DCT_CACHE_SIZE = 64


@lru_cache(maxsize=DCT_CACHE_SIZE)
def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` ``(size, size)``, float64: ``C @ x`` transforms a
    length-``size`` signal, ``C.T`` inverts it (DCT-III)."""
    if size < 1:
        raise ValueError(f"DCT size must be positive, got {size}")
    k = torch.arange(size, dtype=torch.float64)[:, None]
    n = torch.arange(size, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


@lru_cache(maxsize=DCT_CACHE_SIZE)
def dct_resize_matrix(source_size: int, target_size: int) -> torch.Tensor:
    """``(target_size, source_size)`` float64: DCT at the source size, keep or zero-pad the
    first ``min`` coefficients, inverse DCT at the target size."""
    kept = min(source_size, target_size)
    return dct_matrix(target_size)[:kept].T @ dct_matrix(source_size)[:kept]


def dct_resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` with axis ``dim`` resized to ``size`` through the DCT domain (float64)."""
    matrix = dct_resize_matrix(tensor.shape[dim], size)
    moved = tensor.to(torch.float64).movedim(dim, -1)
    return (moved @ matrix.T).movedim(-1, dim)


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.to(torch.float64).square().mean().sqrt())


def dct_width(source: torch.Tensor, target_init: torch.Tensor, role: TensorRole) -> torch.Tensor:
    """Resize every width axis of ``source`` to ``target_init``'s size through the DCT domain,
    then rescale (see the module docstring). Returns ``target_init``'s shape and dtype."""
    resized = source.to(torch.float64)
    for dim, axis in enumerate(role.axes):
        if axis is not None:
            resized = dct_resize(resized, dim, target_init.shape[dim])
    target_rms = _rms(source)
    if role.fan_in_dim is not None:
        dim = role.fan_in_dim
        target_rms *= math.sqrt(source.shape[dim] / target_init.shape[dim])
    current = _rms(resized)
    if current > 0.0:
        resized = resized * (target_rms / current)
    return resized.to(target_init.dtype)


def dct_transfer(
    source: ViTSpec,
    source_state: Mapping[str, torch.Tensor],
    target: ViTSpec,
    seed: int = 0,
    head_rows: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """A timm state dict for ``target`` from ``source_state``'s low DCT frequencies.

    ``seed`` initialises what has no source (blocks beyond the source's depth, a head for a
    task the source did not learn); ``head_rows`` keeps those rows of the source head.
    """
    return transfer_state(source, source_state, target, dct_width, seed, head_rows)
