"""Decoder: node embeddings -> tensors of the exact shape of every parameter slot.

A matrix slot with logical shape ``(rows, cols)`` is

    W = s * ( a * L R / rms(L R)  +  b * sqrt(12) * (frac(u v^T) - 1/2) )

* ``L = P(rows) A`` ``(rows, r)`` and ``R = (P(cols) B)^T`` ``(r, cols)``, where ``P(n)`` is a
  row basis (``(n, d)`` random Fourier features of the index, or GHN-3 / LoGAH periodic one-hot
  rows) and ``A``, ``B`` are the predicted core factors. ``rms`` is computed exactly from the
  ``r x r`` Gram matrices, so the structured part has unit RMS without a pass over ``W``.
* ``frac(u v^T)`` is a seeded hash lattice (``u``, ``v`` uniform in ``[HASH_LOW, HASH_HIGH)``):
  full rank, uniform on [0, 1), one outer product to make. Its share ``b^2`` of the variance is
  predicted (at least ``min_noise_fraction``), ``a^2 = 1 - b^2``.
* ``s`` is ``sqrt(gain / fan_in)`` (weights) or ``EMBEDDING_STD`` (embeddings) times a
  predicted factor in ``[1 / GAIN_RANGE, GAIN_RANGE]``.

Vectors are ``P(n) c`` through a bounded map (biases ``~0``, norm scales ``~1``). The heads that
produce ``c`` and the scalars are zero-initialised, so an untrained decoder gives timm's
default biases and norms. Cores of all slots come from one batched MLP call; slots of equal
shape are expanded together.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict, defaultdict

import torch
from torch import nn

from tal.formats import ExportPiece, ExportPlan
from tal.graph import ParamKind, ParamSlot
from tal.hypernet.config import DecoderConfig

EMBEDDING_STD = 0.02  # timm / Hugging Face convention for token, position and class embeddings
GAIN_RANGE = 4.0
BIAS_LIMIT = 0.5
NORM_SCALE_RANGE = 1.0  # norm scales live in (1 - range, 1 + range)
HASH_LOW, HASH_HIGH = 64.0, 128.0
UNIFORM_TO_UNIT_VARIANCE = math.sqrt(12.0)
RMS_EPS = 1e-8
BASIS_CACHE_ENTRIES = 64
THP_ENV = "THP_MEM_ALLOC_ENABLE"  # PyTorch's switch for huge-page backed CPU tensors


class FourierBasis(nn.Module):
    """``P(n)[i] = sqrt(2 / d) * cos(i * w + phi)`` with fixed random ``w`` in (0, pi)."""

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.size = size
        self.register_buffer(
            "frequency", torch.rand(size, generator=generator, dtype=torch.float64) * math.pi
        )
        self.register_buffer(
            "phase", torch.rand(size, generator=generator, dtype=torch.float64) * 2 * math.pi
        )
        self._cache: OrderedDict[tuple[int, str, torch.dtype], torch.Tensor] = OrderedDict()

    def features(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``(n, d)`` basis rows (cached)."""
        key = (n, str(self.frequency.device), dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.inference_mode(False), torch.no_grad():  # a constant, cached across modes
            index = torch.arange(n, dtype=torch.float64, device=self.frequency.device)
            angles = index[:, None] * self.frequency.clone() + self.phase.clone()
            value = (torch.cos(angles) * math.sqrt(2.0 / self.size)).to(dtype)
        self._cache[key] = value
        if len(self._cache) > BASIS_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return value

    def project(self, n: int, coefficients: torch.Tensor) -> torch.Tensor:
        """``(..., d, r)`` -> ``(..., n, r)``."""
        return self.features(n, coefficients.dtype) @ coefficients


class PeriodicBasis(nn.Module):
    """``P(n)[i]`` = one-hot of ``i mod d``: rows of the core repeat every ``d`` (tiling)."""

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        self.size = size

    def project(self, n: int, coefficients: torch.Tensor) -> torch.Tensor:
        """``(..., d, r)`` -> ``(..., n, r)``."""
        index = torch.arange(n, device=coefficients.device) % self.size
        return coefficients[..., index, :]


class ParamDecoder(nn.Module):
    """Node embeddings ``(N, node_dim)`` + an export plan -> ordered dict of output tensors."""

    def __init__(self, config: DecoderConfig, node_dim: int) -> None:
        super().__init__()
        self.config = config
        d = config.basis_size
        self.rank = config.core_rank or d
        core_outputs = d * d if config.core_rank is None else 2 * d * self.rank
        self.kind_embedding = nn.Embedding(len(ParamKind), node_dim)
        self.trunk = nn.Sequential(
            nn.LayerNorm(node_dim), nn.Linear(node_dim, config.hidden), nn.GELU()
        )
        self.core_head = nn.Linear(config.hidden, core_outputs)
        self.vector_head = nn.Linear(config.hidden, d)
        self.scalar_head = nn.Linear(config.hidden, 2)  # (log-gain, noise logit)
        for head in (self.vector_head, self.scalar_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        basis_cls = FourierBasis if config.basis == "fourier" else PeriodicBasis
        self.basis = basis_cls(d, config.basis_seed)

    def _cores(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(S, hidden)`` -> factors ``A (S, d, r)`` and ``B (S, d, r)`` with ``C = A B^T``;
        ``B`` is None for a full core (``B = I``)."""
        d, slots = self.config.basis_size, hidden.shape[0]
        raw = self.core_head(hidden)
        if self.config.core_rank is None:
            return raw.view(slots, d, d), None
        a, b = raw.view(slots, 2, d, self.rank).unbind(1)
        return a, b

    def _scales(
        self, slots: list[ParamSlot], scalars: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slot structured and noise amplitudes ``(S,)``, before the rms normalisation."""
        base = torch.tensor(
            [
                EMBEDDING_STD if s.kind == ParamKind.EMBEDDING else math.sqrt(s.gain / s.fan_in)
                for s in slots
            ],
            device=scalars.device,
            dtype=scalars.dtype,
        )
        std = base * torch.exp(math.log(GAIN_RANGE) * torch.tanh(scalars[:, 0]))
        if not self.config.residual_noise:
            return std, torch.zeros_like(std)
        floor = self.config.min_noise_fraction
        noise_fraction = floor + (1 - floor) * torch.sigmoid(scalars[:, 1])
        return std * torch.sqrt(1 - noise_fraction), std * torch.sqrt(noise_fraction)

    def forward(
        self,
        nodes: torch.Tensor,
        plan: ExportPlan,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, torch.Tensor]:
        """Decodes every slot of ``plan`` (differentiable when grad is enabled).

        Without autograd, all outputs are views of one freshly allocated buffer (one large
        allocation, so the OS can back it with huge pages) and are written in place.

        Args:
            nodes: ``(N, node_dim)`` node embeddings from the encoder.
            plan: output names, row ranges and shapes (``tal.formats.export_plan``).
            seed: seeds the hash-lattice residual; same inputs and seed give the same bytes.
            dtype: output dtype (computation is float32).

        Returns:
            ``{name: tensor}`` in plan order, aliases included.
        """
        slots = [slot for slot, _ in plan.pieces]
        node_index = torch.tensor([s.node for s in slots], device=nodes.device)
        kind_index = torch.tensor([int(s.kind) for s in slots], device=nodes.device)
        hidden = self.trunk(nodes[node_index] + self.kind_embedding(kind_index))
        scalars = self.scalar_head(hidden)
        vectors = self.vector_head(hidden)
        writer = _OutputWriter(plan, dtype, nodes.device, in_place=not torch.is_grad_enabled())
        generator = torch.Generator().manual_seed(seed)
        hash_vectors = [self._hash_vectors(s, generator) for s in slots]
        vector_groups: dict[int, list[int]] = defaultdict(list)
        matrix_groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, slot in enumerate(slots):
            if slot.is_vector:
                vector_groups[slot.rows].append(i)
            else:
                matrix_groups[(slot.rows, slot.cols)].append(i)
        for length, members in vector_groups.items():
            raw = self.basis.project(length, vectors[members].T)  # (length, n)
            for j, i in enumerate(members):
                writer.vector(plan.pieces[i], _bounded(slots[i].kind, raw[:, j]))
        matrix_slots = [i for members in matrix_groups.values() for i in members]
        if matrix_slots:
            structured, noise = self._scales(
                [slots[i] for i in matrix_slots], scalars[matrix_slots]
            )
            a, b = self._cores(hidden[matrix_slots])
            position = {i: j for j, i in enumerate(matrix_slots)}
            for (rows, cols), members in matrix_groups.items():
                index = [position[i] for i in members]
                left = self.basis.project(rows, a[index])  # (n, rows, r)
                if b is None:
                    right = self.basis.project(
                        cols, torch.eye(self.rank, device=a.device, dtype=a.dtype)
                    ).expand(len(members), -1, -1)
                else:
                    right = self.basis.project(cols, b[index])  # (n, cols, r)
                gram = (left.transpose(1, 2) @ left) * (right.transpose(1, 2) @ right)
                rms = torch.sqrt(gram.sum((1, 2)) / (rows * cols)) + RMS_EPS  # (n,)
                for j, i in enumerate(members):
                    k = position[i]
                    writer.matrix(
                        plan.pieces[i],
                        left[j] * (structured[k] / rms[j]),
                        right[j].T,
                        noise[k],
                        hash_vectors[i],
                    )
        return writer.result()

    def _hash_vectors(
        self, slot: ParamSlot, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if slot.is_vector or not self.config.residual_noise:
            return None
        span = HASH_HIGH - HASH_LOW
        u = HASH_LOW + span * torch.rand(slot.rows, generator=generator)
        v = HASH_LOW + span * torch.rand(slot.cols, generator=generator)
        return u, v


def _bounded(kind: ParamKind, raw: torch.Tensor) -> torch.Tensor:
    """Maps raw vector values into their trainable range (norm scales ~1, biases ~0)."""
    if kind == ParamKind.NORM_SCALE:
        return 1 + NORM_SCALE_RANGE * torch.tanh(raw)
    return BIAS_LIMIT * torch.tanh(raw)


class _OutputWriter:
    """Collects decoded tensors under their export names.

    ``in_place``: every output is a view of one buffer and matrices are composed directly in
    it (float32) or in a reused float32 scratch buffer (other dtypes). Otherwise tensors are
    built functionally so autograd can track them.
    """

    def __init__(
        self, plan: ExportPlan, dtype: torch.dtype, device: torch.device, in_place: bool
    ) -> None:
        self.plan, self.dtype, self.device, self.in_place = plan, dtype, device, in_place
        self.outputs: dict[str, torch.Tensor] = {}
        self.offsets: dict[str, int] = {}
        total = largest = 0
        for _, pieces in plan.pieces:
            for piece in pieces:
                numel = math.prod(piece.stored_shape)
                self.offsets[piece.name] = total
                total += numel
                largest = max(largest, numel)
        if in_place:
            self.arena = torch.empty(total, dtype=dtype, device=device)
            if device.type == "cpu" and os.environ.get(THP_ENV) == "1":
                # Measured: with huge pages, faulting the buffer in with one zero_ pass and then
                # composing is ~5x faster than letting the per-matrix kernels fault it piecemeal.
                self.arena.zero_()
            scratch = 0 if dtype == torch.float32 else largest
            self.scratch = torch.empty(scratch, dtype=torch.float32, device=device)

    def _slot_view(self, piece: ExportPiece) -> torch.Tensor:
        start = self.offsets[piece.name]
        return self.arena[start : start + math.prod(piece.stored_shape)].view(piece.stored_shape)

    def vector(self, entry: tuple[ParamSlot, tuple[ExportPiece, ...]], value: torch.Tensor) -> None:
        """``value (rows,)`` for a vector slot, split into its export pieces."""
        for piece in entry[1]:
            part = value[piece.row_start : piece.row_stop].reshape(piece.stored_shape)
            if self.in_place:
                self.outputs[piece.name] = self._slot_view(piece).copy_(part)
            else:
                self.outputs[piece.name] = part.to(self.dtype)

    def matrix(
        self,
        entry: tuple[ParamSlot, tuple[ExportPiece, ...]],
        left: torch.Tensor,
        right: torch.Tensor,
        noise_amplitude: torch.Tensor,
        hash_vectors: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """``left (rows, r)`` already scaled and ``right (r, cols)`` of one matrix slot."""
        slot, pieces = entry
        for piece in pieces:
            rows = slice(piece.row_start, piece.row_stop)
            piece_left, piece_right = left[rows], right
            u = v = None
            if hash_vectors is not None:
                u, v = hash_vectors[0][rows].to(self.device), hash_vectors[1].to(self.device)
            if slot.transposed:  # stored as (cols, rows): W^T = right^T left^T
                piece_left, piece_right, u, v = right.T, piece_left.T, v, u
            shape = (piece_left.shape[0], piece_right.shape[1])
            if not self.in_place:
                value = _compose(piece_left, piece_right, noise_amplitude, u, v, None)
                self.outputs[piece.name] = value.to(self.dtype).view(piece.stored_shape)
                continue
            target = self._slot_view(piece)
            if self.dtype == torch.float32:
                _compose(piece_left, piece_right, noise_amplitude, u, v, target.view(shape))
            else:
                work = self.scratch[: target.numel()].view(shape)
                target.view(shape).copy_(
                    _compose(piece_left, piece_right, noise_amplitude, u, v, work)
                )
            self.outputs[piece.name] = target

    def result(self) -> dict[str, torch.Tensor]:
        ordered = {p.name: self.outputs[p.name] for _, pieces in self.plan.pieces for p in pieces}
        for alias, source in self.plan.aliases:
            ordered[alias] = ordered[source]
        return ordered


def _compose(
    left: torch.Tensor,
    right: torch.Tensor,
    noise_amplitude: torch.Tensor,
    u: torch.Tensor | None,
    v: torch.Tensor | None,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """``left @ right + c * (frac(u v^T) - 1/2)`` with ``c = sqrt(12) * noise_amplitude``.

    With ``out`` (no autograd) it is built in place: outer product, ``frac_``, then one
    ``addmm_`` that also applies the noise scale and the ``-c/2`` shift (folded into the
    product as an extra rank-one term). Shapes: ``left (m, r)``, ``right (r, n)``, ``u (m,)``,
    ``v (n,)``, ``out (m, n)``.
    """
    if u is None or v is None:
        return left @ right if out is None else torch.mm(left, right, out=out)
    scale = noise_amplitude * UNIFORM_TO_UNIT_VARIANCE
    if out is None:
        return left @ right + scale * (torch.frac(torch.outer(u, v)) - 0.5)
    torch.outer(u, v, out=out).frac_()
    shift = torch.full(
        (left.shape[0], 1), -0.5 * float(scale), dtype=left.dtype, device=left.device
    )
    ones = torch.ones((1, right.shape[1]), dtype=right.dtype, device=right.device)
    return out.addmm_(torch.cat([left, shift], 1), torch.cat([right, ones], 0), beta=float(scale))
