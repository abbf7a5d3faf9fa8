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
how a width changes. Everything is torch matrix products in the target's dtype (the DCT
matrices are built in float64, then cast).
"""

from __future__ import annotations

import itertools
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
def dct_resize_matrix(
    source_size: int, target_size: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(target_size, source_size)``: DCT at the source size, keep or zero-pad the first
    ``min`` coefficients, inverse DCT at the target size (built in float64, cast to
    ``dtype``)."""
    kept = min(source_size, target_size)
    return (dct_matrix(target_size)[:kept].T @ dct_matrix(source_size)[:kept]).to(dtype)


def dct_resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` with axis ``dim`` resized to ``size`` through the DCT domain, in the tensor's
    floating dtype (an axis already of that size is returned as it is: the round trip is the
    identity)."""
    if tensor.shape[dim] == size:
        return tensor
    matrix = dct_resize_matrix(tensor.shape[dim], size, tensor.dtype).to(tensor.device)
    return (tensor.movedim(dim, -1) @ matrix.T).movedim(-1, dim)


def cheapest_order(shape: tuple[int, ...], sizes: dict[int, int]) -> tuple[int, ...]:
    """The order of the axes ``sizes`` (axis -> new size) that resizes ``shape`` with the fewest
    multiply-adds: resizing an axis costs the current element count times its new size."""

    def cost(order: tuple[int, ...]) -> int:
        current, total = list(shape), 0
        for dim in order:
            total += math.prod(current) * sizes[dim]
            current[dim] = sizes[dim]
        return total

    return min(itertools.permutations(sizes), key=cost)


def _rms(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor)) / math.sqrt(max(tensor.numel(), 1))


def dct_width(source: torch.Tensor, target_init: torch.Tensor, role: TensorRole) -> torch.Tensor:
    """Resize every width axis of ``source`` to ``target_init``'s size through the DCT domain,
    then rescale (see the module docstring). Returns ``target_init``'s shape and dtype."""
    resized = source.to(target_init.dtype)
    sizes = {dim: target_init.shape[dim] for dim, axis in enumerate(role.axes) if axis is not None}
    for dim in cheapest_order(tuple(resized.shape), sizes):
        resized = dct_resize(resized, dim, sizes[dim])
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
    initial: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A timm state dict for ``target`` from ``source_state``'s low DCT frequencies.

    ``seed`` initialises what has no source (blocks beyond the source's depth, a head for a
    task the source did not learn) unless ``initial``, a state dict of ``target``, gives it;
    ``head_rows`` keeps those rows of the source head.
    """
    return transfer_state(source, source_state, target, dct_width, seed, head_rows, initial)
