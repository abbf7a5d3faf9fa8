"""An exact change of width: the proxy's units repeated, where the target is a whole multiple.

When the target's width is ``r`` times the proxy's with heads of the same width (ViT-S from a
width-192 proxy: ``r = 2``; ViT-B: ``r = 4``), and its MLP hidden width a whole multiple of
the proxy's, the proxy's function can be carried over exactly (Net2Net's widening, Chen et
al., ICLR 2016; bert2BERT, Chen et al., ACL 2022). Every width axis is **tiled**: the
residual stream ``x`` becomes ``[x, x, ..., x]``, head ``h`` of the target is the proxy's head
``h mod H`` (the attention axis is heads times head width, so tiling it repeats whole heads),
MLP unit ``u`` the proxy's unit ``u mod U``. Then

* a LayerNorm sees the same mean and variance (every feature appears ``r`` times) and its
  tiled weights give the tiled output;
* a matrix reading a tiled axis divides its tiled entries by the repeat count, so each output
  sums the ``r`` copies back to the proxy's value; its output axis is tiled like its input;
* elementwise maps (GELU) and each head's softmax act on copies of the proxy's values.

So the target computes the proxy's logits (up to the norms' epsilon), which the DCT resize
(:mod:`tal.transfer.dct_transfer`) only approximates: it mixes neighbouring heads and blurs
the elementwise GELU and LayerNorm gains. On a ViT-S-width model at 64 px RGB the lifted
prediction went from 60% to 65% untrained, ViT-B/16 at 224 px from 49% to 66%
(docs/lab/user_scale.md, section 10).

Copies that start equal stay equal under gradient descent (and Adam) when every weight reading
them is equal too, and the target would train as the proxy's narrower model forever. Each
matrix that reads a tiled axis therefore gets a **symmetry-breaking** term: a seeded rank-
:data:`NOISE_RANK` matrix, centred over each group of copies so that it cancels on tiled
inputs (the function is unchanged), with :data:`NOISE_LEVEL` times the lifted matrix's RMS.
Once training moves the copies apart, each reads and writes the stream its own way.
"""

from __future__ import annotations

import zlib

import torch

from tal.arch.specs import ViTSpec

from .dct_transfer import factored_rms
from .layout import QKV_PARTS, TensorRole

NOISE_RANK = 16
"""Rank of a matrix's symmetry-breaking term: enough directions for the copies to part, at a
cost of ``NOISE_RANK`` columns in its factors."""
NOISE_LEVEL = 0.5
"""The symmetry-breaking term's RMS over the lifted matrix's: it cancels on the tiled stream, so
its size only sets how fast copies part once training moves them (a fine-tune of a ViT-S-width
model on 2,048 Fashion-MNIST images ended within 0.1 point with and without it)."""


def tiles(proxy: ViTSpec, target: ViTSpec) -> bool:
    """Whether ``target``'s widths are whole multiples of ``proxy``'s with heads of the same
    width (the exact lift applies; the head counts then differ by the width ratio too)."""
    return (
        target.embed_dim % proxy.embed_dim == 0
        and target.embed_dim // target.num_heads == proxy.embed_dim // proxy.num_heads
        and target.mlp_hidden_dim % proxy.mlp_hidden_dim == 0
    )


def tile_matrix(source_width: int, target_width: int, dtype: torch.dtype) -> torch.Tensor:
    """``(target_width, source_width)``: ``x`` -> ``[x, x, ...]`` (a whole multiple)."""
    repeats = _repeats(source_width, target_width)
    return torch.eye(source_width, dtype=dtype).repeat(repeats, 1)


def tile_tensor(
    tensor: torch.Tensor, target_shape: tuple[int, ...], role: TensorRole
) -> torch.Tensor:
    """A tensor that is not a weight matrix (vectors, embeddings, the patch kernel, biases)
    with every width axis tiled to ``target_shape``; q, k and v tiled apart."""
    if role.fan_in_dim is not None:
        raise ValueError("a weight matrix is tiled by tile_factors (it divides by its repeats)")
    if role.qkv:
        parts = tensor.reshape(QKV_PARTS, -1, *tensor.shape[1:])
        shape = (QKV_PARTS, target_shape[0] // QKV_PARTS, *target_shape[1:])
        return _tile_axes(parts, shape, (None, *role.axes[1:])).reshape(target_shape)
    return _tile_axes(tensor, target_shape, role.axes)


def tile_factors(
    left: torch.Tensor,
    right: torch.Tensor,
    target_shape: tuple[int, int],
    role: TensorRole,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrix ``left (m, k) @ right (k, n)`` tiled to ``target_shape`` as factors.

    Rows are tiled in ``left`` (q, k and v apart), columns in ``right`` and divided by their
    repeat count; where the columns are tiled, the symmetry-breaking term (module docstring,
    seeded by ``seed``) adds :data:`NOISE_RANK` columns to ``left`` and rows to ``right``.

    Returns:
        ``(target_rows, k')`` and ``(k', target_cols)`` float32 factors.
    """
    rows, cols = target_shape
    left, right = left.float(), right.float()
    if role.qkv:
        parts = left.reshape(QKV_PARTS, -1, left.shape[1])
        left = parts.repeat(1, _repeats(parts.shape[1], rows // QKV_PARTS), 1).reshape(rows, -1)
    elif role.axes[0] is not None:
        left = left.repeat(_repeats(left.shape[0], rows), 1)
    if role.axes[-1] is None or right.shape[1] == cols:
        return left, right
    repeats = _repeats(right.shape[1], cols)
    right = right.repeat(1, repeats) / repeats
    generator = torch.Generator().manual_seed(seed)
    noise_left = torch.randn(rows, NOISE_RANK, generator=generator)
    noise_right = torch.randn(NOISE_RANK, repeats, cols // repeats, generator=generator)
    noise_right = (noise_right - noise_right.mean(dim=1, keepdim=True)).reshape(NOISE_RANK, cols)
    level = NOISE_LEVEL * factored_rms(left, right) / factored_rms(noise_left, noise_right)
    return torch.cat([left, noise_left * level], 1), torch.cat([right, noise_right], 0)


def noise_seed(name: str) -> int:
    """The symmetry-breaking seed of a target parameter: a checksum of its name, so each matrix
    draws its own term and a blob's bytes are the same on every worker."""
    return zlib.crc32(name.encode())


def _repeats(source: int, target: int) -> int:
    if source < 1 or target % source:
        raise ValueError(f"cannot tile width {source} to {target}: not a whole multiple")
    return target // source


def _tile_axes(
    tensor: torch.Tensor, target_shape: tuple[int, ...], axes: tuple[object, ...]
) -> torch.Tensor:
    if tensor.ndim != len(target_shape):
        raise ValueError(f"cannot tile {tuple(tensor.shape)} to {target_shape}")
    repeats = [
        _repeats(size, want) if axis is not None else 1
        for size, want, axis in zip(tensor.shape, target_shape, axes, strict=True)
    ]
    tiled = tensor.repeat(*repeats)
    if tuple(tiled.shape) != tuple(target_shape):
        raise ValueError(f"cannot tile {tuple(tensor.shape)} to {target_shape} along {axes}")
    return tiled
