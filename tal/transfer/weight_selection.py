"""Weight selection (Xu et al., ICLR 2024, "Initializing Models with Larger Ones").

A smaller model takes a subset of a larger pretrained model's weights: its first layers (layer
selection, shared in :mod:`tal.transfer.layout`), and along every width axis evenly spaced
elements (uniform element selection). An axis shared by several tensors (the embedding width
is read by every block) gets the same indices in all of them, the consistency the method
requires, because the indices depend only on the two sizes; q, k and v are selected separately
so a selected row stays a query, key or value row.

Indices: ``k * (n // m)`` when the source size ``n`` is a multiple of the target size ``m`` (the
published rule), else ``round(linspace(0, n - 1, m))`` (the published code spaces them up to
``n``, which can step past the last element).

The paper only shrinks. Where the target is larger along an axis, the source's elements fill
the leading positions and the rest keeps the target's own timm initialisation (truncated
normal, std 0.02, for matrices and embeddings; zeros for biases; ones for norm weights): new
rows and columns are random at timm's scale. A zero fill would leave new units with zero input
and output weights, whose gradients are then zero too (dead units), and new embedding
dimensions all equal, which no update tells apart. Nothing is rescaled.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tal.arch.specs import ViTSpec

from .layout import TensorRole, transfer_state


def evenly_spaced(source_size: int, target_size: int) -> torch.Tensor:
    """``target_size`` int64 indices spread evenly over ``range(source_size)`` (shrinking only)."""
    if not 0 < target_size <= source_size:
        raise ValueError(f"cannot select {target_size} of {source_size} elements")
    if source_size % target_size == 0:
        return torch.arange(target_size) * (source_size // target_size)
    return torch.linspace(0, source_size - 1, target_size, dtype=torch.float64).round().long()


def select_width(source: torch.Tensor, target_init: torch.Tensor, role: TensorRole) -> torch.Tensor:
    """Uniform element selection along each shrinking width axis; growing axes keep
    ``target_init`` beyond the source's elements. Returns a tensor of ``target_init``'s shape."""
    selected = source
    for dim, axis in enumerate(role.axes):
        if axis is not None and source.shape[dim] > target_init.shape[dim]:
            indices = evenly_spaced(source.shape[dim], target_init.shape[dim])
            selected = selected.index_select(dim, indices)
    result = target_init.clone()
    result[tuple(slice(0, size) for size in selected.shape)] = selected
    return result


def weight_selection(
    source: ViTSpec,
    source_state: Mapping[str, torch.Tensor],
    target: ViTSpec,
    seed: int = 0,
    head_rows: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """A timm state dict for ``target`` selected from ``source_state`` (see the module docstring).

    ``head_rows`` keeps those rows of the source head (a task the source learned); None leaves
    the target's initial head. To the identical spec with ``head_rows=(0, num_classes)`` it
    returns the source's tensors exactly.
    """
    return transfer_state(source, source_state, target, select_width, seed, head_rows)
