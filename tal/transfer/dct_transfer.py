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

from .layout import QKV_PARTS, TensorRole, transfer_state

DCT_CACHE_SIZE = 64
BAND_FREQUENCIES = 128
"""The lowest frequencies a matrix factor is first resized through: a predicted matrix's factors
are cosines of at most 64 frequencies along each axis (``tal.hypernet.decoder.RelativeBasis``),
so their DCT is zero beyond them."""
BAND_TOLERANCE = 1e-6
"""Largest energy outside the band, relative (root of the squares), for the band to be used."""


def dct_matrix(size: int, rows: int | None = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` ``(size, size)``, float64: ``C @ x`` transforms a
    length-``size`` signal, ``C.T`` inverts it (DCT-III). ``rows`` keeps only the first
    (lowest-frequency) rows, ``(rows, size)``."""
    if size < 1:
        raise ValueError(f"DCT size must be positive, got {size}")
    k = torch.arange(size if rows is None else min(rows, size), dtype=torch.float64)[:, None]
    n = torch.arange(size, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


@lru_cache(maxsize=DCT_CACHE_SIZE)
def dct_resize_matrix(
    source_size: int, target_size: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(target_size, source_size)``: DCT at the source size, keep or zero-pad the first
    ``min`` coefficients, inverse DCT at the target size (built in float64 from the kept
    rows only, cast to ``dtype``; only this product is cached)."""
    kept = min(source_size, target_size)
    return (dct_matrix(target_size, kept).T @ dct_matrix(source_size, kept)).to(dtype)


def dct_resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` with axis ``dim`` resized to ``size`` through the DCT domain, in the tensor's
    floating dtype (an axis already of that size is returned as it is: the round trip is the
    identity)."""
    if tensor.shape[dim] == size:
        return tensor
    matrix = dct_resize_matrix(tensor.shape[dim], size, tensor.dtype).to(tensor.device)
    return (tensor.movedim(dim, -1) @ matrix.T).movedim(-1, dim)


@lru_cache(maxsize=DCT_CACHE_SIZE)
def dct_rows(size: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """The first ``rows`` rows of the orthonormal DCT-II matrix of ``size``, in ``dtype``."""
    return dct_matrix(size, rows).to(dtype)


def band_limited_resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """:func:`dct_resize`, through the first :data:`BAND_FREQUENCIES` frequencies only when the
    tensor's energy along ``dim`` lies within them (what lies outside at most
    :data:`BAND_TOLERANCE` of it): the same result to that tolerance at about ``band / min(n,
    size)`` of the cost; otherwise the full resize."""
    source = tensor.shape[dim]
    band = min(BAND_FREQUENCIES, source, size)
    if band == min(source, size):
        return dct_resize(tensor, dim, size)
    moved = tensor.movedim(dim, -1)
    analysis = dct_rows(source, band, moved.dtype).to(moved.device)  # (band, source)
    coefficients = moved @ analysis.T
    outside = torch.linalg.vector_norm(moved - coefficients @ analysis)
    if float(outside) > BAND_TOLERANCE * float(torch.linalg.vector_norm(moved)):
        return dct_resize(tensor, dim, size)
    synthesis = dct_rows(size, band, moved.dtype).to(moved.device)  # (band, size)
    return (coefficients @ synthesis).movedim(-1, dim)


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


def factored_rms(left: torch.Tensor, right: torch.Tensor) -> float:
    """Root-mean-square of ``left (m, r) @ right (r, n)`` from the ``r x r`` Grams, without
    forming the product: ``||L R||^2 = sum((L^T L) * (R R^T))``."""
    squares = float(((left.T @ left) * (right @ right.T)).sum())
    return math.sqrt(max(squares, 0.0) / max(left.shape[0] * right.shape[1], 1))


def dct_width_factors(
    left: torch.Tensor,
    right: torch.Tensor,
    target_shape: tuple[int, int],
    role: TensorRole,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dct_width` of the matrix ``left (m, r) @ right (r, n)`` kept as factors.

    Resizing is linear along each axis, so the row axis is resized in ``left`` and the column
    axis in ``right``, and the rescale is folded into ``left``: the product equals
    ``dct_width(left @ right, ...)`` up to float rounding at about ``r / min(m, n)`` of its
    cost (a predicted matrix has rank ``r``, the hypernetwork's basis size).

    Args:
        role: a matrix's role (two axes, or q, k and v stacked on the rows).

    Returns:
        ``(target_rows, r)`` and ``(r, target_cols)`` float32 factors.
    """
    rows, cols = target_shape
    left, right = left.float(), right.float()
    if role.qkv:
        parts = left.reshape(QKV_PARTS, -1, left.shape[1])
        new_left = band_limited_resize(parts, 1, rows // QKV_PARTS).reshape(rows, -1)
    elif role.axes[0] is not None:
        new_left = band_limited_resize(left, 0, rows)
    else:
        new_left = left
    new_right = band_limited_resize(right, 1, cols) if role.axes[-1] is not None else right
    if (new_left.shape[0], new_right.shape[1]) != (rows, cols):
        reached = (new_left.shape[0], new_right.shape[1])
        raise RuntimeError(
            f"factors of {(left.shape[0], right.shape[1])} reach {reached}, not "
            f"{target_shape}: they differ outside their width axes {role.axes}"
        )
    target_rms = factored_rms(left, right)
    if role.fan_in_dim is not None:
        target_rms *= math.sqrt(right.shape[1] / cols)
    current = factored_rms(new_left, new_right)
    if current > 0.0:
        new_left = new_left * (target_rms / current)
    return new_left, new_right


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
