"""Decoder: node embeddings -> tensors of the exact shape of every parameter slot.

A matrix slot with logical shape ``(rows, cols)`` is

    W = s * L R / rms(L R)

* ``L = P(rows) A`` ``(rows, r)`` and ``R = (P(cols) B)^T`` ``(r, cols)``, where ``P(n)`` is a
  row basis (``(n, d)``: cosines of the relative index, or GHN-3 / LoGAH periodic one-hot
  rows) and ``A``, ``B`` are the predicted core factors. ``rms`` is computed exactly from the
  ``r x r`` Gram matrices, so ``L R / rms`` has unit RMS without a pass over ``W``; with
  ``span_scaling`` the amplitude is further multiplied by ``sqrt(k / cols)`` (``k`` the rank
  bound), the fan-in gain on the inputs it reads.
* ``s`` is ``sqrt(gain / fan_in)`` (weights) or ``EMBEDDING_STD`` (embeddings) times a
  predicted factor in ``[1 / GAIN_RANGE, GAIN_RANGE]``.

Vectors are ``P(n) c`` through a bounded map (biases ``~0``, norm scales ``~1``). The heads that
produce ``c`` and the scalars are zero-initialised, so an untrained decoder gives timm's
default biases and norms. Cores of all slots come from one batched MLP call; slots of equal
shape are expanded together.

Token-indexed rows (``ParamSlot.token_rows``: GPT-2's token embedding, an untied LM head) have
no order, so with ``DecoderConfig.token_basis`` their row basis is the text ancestry's token
table ``T (vocab, d)`` instead of ``P(vocab)``: ``W = s * T A R / rms`` (with a tied head the
logits then live in the ancestry's token space). Without a table (a learngene that never
learned GPT-2) the whole model is Hugging Face's initialisation, each tensor drawn from a
generator seeded by its name and shape. For a vocabulary the table does not cover (a foreign
vocabulary, e.g. bytes) the row basis is rows drawn from the zero-mean normal with the table
rows' covariance (:func:`rows_like`, seeded by the vocabulary size), so the blocks see token
embeddings spread as those they were trained with: on text no task uses, such a start ended 200
steps of training below Hugging Face's init of the whole model on every seed, and spread far
less over seeds (docs/lab/foreign_vocabulary.md).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import torch
from torch import nn

from tal.arch.formats import ExportPiece, ExportPlan
from tal.arch.graph import ParamKind, ParamSlot
from tal.hypernet.arena import OUTPUT_POOL
from tal.hypernet.config import DecoderConfig

T = TypeVar("T")
R = TypeVar("R")

EMBEDDING_STD = 0.02  # timm / Hugging Face convention for token, position and class embeddings
GAIN_RANGE = 4.0
BIAS_LIMIT = 0.5
NORM_SCALE_RANGE = 1.0  # norm scales live in (1 - range, 1 + range)
RMS_EPS = 1e-8
# The scalar head's outputs: the log-gain, then the share of a retired residual that the
# checkpoints' weights still carry (unused; a width-1 head would round the log-gain differently)
SCALAR_OUTPUTS = 2
BASIS_CACHE_ENTRIES = 64
# Elements of a group composed per batched product (4 MiB of float32, the L2 cache of our 2
# cores) when the output is float32 and written in place.
COMPOSE_CHUNK_ELEMENTS = 2**20
PLAN_CACHE_ENTRIES = 256  # export plans' decoding groups kept (plans are cached per spec too)
HF_INIT_STD = 0.02  # GPT2Config.initializer_range: Hugging Face's normal init of embeddings
SEED_BYTES = 8
FOREIGN_TABLE_NAME = "token-table"  # seeds the rows drawn for a vocabulary the table lacks
# Bytes of drawn token bases kept between predictions (the token table itself costs nothing):
# one for a vocabulary of the spec limit's size at basis 64, or a few dozen of typical sizes
TOKEN_BASIS_CACHE_BYTES = 2**28
GRAM_CHUNK_ROWS = 65_536  # rows per float64 product when a token basis's Gram is summed


@dataclass(frozen=True)
class LowRankMatrix:
    """A predicted ``(rows, cols)`` matrix kept as its factors ``left (rows, r) @ right (r,
    cols)``, so that training never builds GPT-2's ``(vocab, width)`` token embedding: rows are
    looked up and products taken through the factors, differentiably."""

    left: torch.Tensor
    right: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape[0], self.right.shape[1]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """``W[index]``: ``index (...)`` int64 -> ``(..., cols)``."""
        return self.left[index] @ self.right

    def times_transpose(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T``: ``(..., cols)`` -> ``(..., rows)`` (a tied LM head's logits)."""
        return (x @ self.right.T) @ self.left.T

    def dense(self) -> torch.Tensor:
        return self.left @ self.right


def hugging_face_std(slot: ParamSlot) -> float:
    """GPT-2's initialisation in transformers: normal with std 0.02 for every weight and
    embedding, ``0.02 / sqrt(2 * n_layer)`` for the projections into the residual stream (the
    slots whose gain is below 1)."""
    return HF_INIT_STD * math.sqrt(min(1.0, slot.gain))


def seeded_normal(name: str, rows: int, cols: int, std: float = HF_INIT_STD) -> torch.Tensor:
    """``(rows, cols)`` float32 normal values with ``std``, from a CPU generator seeded by the
    slot's name and shape: the same values on every device and in every output dtype."""
    digest = hashlib.sha256(f"{name}:{rows}x{cols}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:SEED_BYTES], "big") >> 1)
    return torch.randn(rows, cols, generator=generator).mul_(std)


def rows_like(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``(rows, d)`` float32 rows drawn from the zero-mean normal with the covariance of
    ``table``'s rows ``(vocab, d)``, from a CPU generator seeded by ``rows``: the token basis of
    a vocabulary the table does not cover, the same for every slot and on every device.

    The table's mean row is left out: it is what every GPT-2 token shares, not something a
    foreign token has; rows drawn around it trained worse on text no task uses
    (docs/lab/foreign_vocabulary.md)."""
    values64 = table.double()
    centred = values64 - values64.mean(0)
    covariance = centred.T @ centred / max(len(table) - 1, 1)
    values, vectors = torch.linalg.eigh(covariance)  # a square root, also for a singular one
    root = (vectors * values.clamp(min=0.0).sqrt()).float().cpu()
    noise = seeded_normal(FOREIGN_TABLE_NAME, rows, table.shape[1], 1.0)
    return (noise @ root.T).to(table.device)


def in_threads(work: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[work(item) for item in items]``, computed by up to ``threads`` threads (torch releases
    the GIL in its kernels), so at most ``threads`` items are in work at once. The threads run
    in the caller's grad and inference mode (both are per thread in torch)."""
    if threads <= 1:
        return [work(item) for item in items]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def in_callers_mode(item: T) -> R:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return work(item)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(in_callers_mode, items))


class CosineBasis(nn.Module):
    """``P(n)[i] = sqrt(2 / d) * cos(t_i * w + phi)`` for fixed ``w``, ``phi`` ``(d,)``, where
    the position ``t_i`` is the index ``i`` (absolute) or ``(i + 1/2) / n`` (relative)."""

    def __init__(self, frequency: torch.Tensor, phase: torch.Tensor, relative: bool) -> None:
        super().__init__()
        self.size = frequency.numel()
        self.relative = relative
        self.register_buffer("frequency", frequency)
        self.register_buffer("phase", phase)
        self._cache: OrderedDict[tuple[int, str, torch.dtype], torch.Tensor] = OrderedDict()

    def features(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``(n, d)`` basis rows (cached)."""
        key = (n, str(self.frequency.device), dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.inference_mode(False), torch.no_grad():  # a constant, cached across modes
            position = torch.arange(n, dtype=torch.float64, device=self.frequency.device)
            if self.relative:
                position = (position + 0.5) / n
            angles = position[:, None] * self.frequency.clone() + self.phase.clone()
            value = (torch.cos(angles) * math.sqrt(2.0 / self.size)).to(dtype)
        self._cache[key] = value
        if len(self._cache) > BASIS_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return value

    def project(self, n: int, coefficients: torch.Tensor) -> torch.Tensor:
        """``(..., d, r)`` -> ``(..., n, r)``."""
        return self.features(n, coefficients.dtype) @ coefficients

    def gram(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``P(n)^T P(n)`` ``(d, d)`` (cached with the features)."""
        key = (-n, str(self.frequency.device), dtype)
        if key not in self._cache:
            with torch.inference_mode(False), torch.no_grad():
                features = self.features(n, torch.float64)
                self._cache[key] = (features.T @ features).to(dtype)
        return self._cache[key]


class RelativeBasis(CosineBasis):
    """``P(n)[i, k] = sqrt(2 / d) * cos(pi (k + 1) (i + 1/2) / n)``: cosines of the *relative*
    index ``(i + 1/2) / n``, frequencies 1 to ``d``.

    The DCT-II basis of length ``n`` without its constant row, cut to ``d`` frequencies
    (orthogonal columns for ``n > d``). A tensor of width ``2n`` samples the same ``d`` smooth
    profiles as one of width ``n``, twice as densely, so a core means nearly the same function
    at every width (as GHN-3's tiling does exactly), while no two rows are equal and nothing
    caps the size. The constant profile is left out: behind a pre-norm LayerNorm it carries
    nothing, and it adds the same shift to every channel of the residual stream block after
    block.
    """

    def __init__(self, size: int) -> None:
        frequency = torch.arange(1, size + 1, dtype=torch.float64) * math.pi
        super().__init__(frequency, torch.zeros(size, dtype=torch.float64), relative=True)


class PeriodicBasis(nn.Module):
    """``P(n)[i]`` = one-hot of ``i mod d``: rows of the core repeat every ``d`` (tiling)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def project(self, n: int, coefficients: torch.Tensor) -> torch.Tensor:
        """``(..., d, r)`` -> ``(..., n, r)``."""
        index = torch.arange(n, device=coefficients.device) % self.size
        return coefficients[..., index, :]

    def gram(self, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``P(n)^T P(n)`` ``(d, d)``: diagonal, how often each core row is repeated."""
        index = torch.arange(n) % self.size
        return torch.diag(torch.bincount(index, minlength=self.size).to(dtype))


BASES: dict[str, type[nn.Module]] = {"relative": RelativeBasis, "periodic": PeriodicBasis}


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
        self.scalar_head = nn.Linear(config.hidden, SCALAR_OUTPUTS)
        for head in (self.vector_head, self.scalar_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.basis = BASES[config.basis](d)
        self.register_buffer("token_table", None, persistent=False)
        # per vocabulary size: a token basis (the table, or rows drawn like it) and its Gram
        self._token_bases: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_token_table(self, table: torch.Tensor | None) -> None:
        """The row basis of token-indexed matrices, ``(vocab, basis_size)`` (the text ancestry's
        token table; ``tal.checkpoints.text_ancestry``), or None: every such matrix is then
        Hugging Face's seeded initialisation. Not saved with the decoder's weights."""
        if table is not None and (table.ndim != 2 or table.shape[1] != self.config.basis_size):
            raise ValueError(
                f"token table must be (vocab, {self.config.basis_size}), got {tuple(table.shape)}"
            )
        device = self.kind_embedding.weight.device
        self.token_table = None if table is None else table.detach().float().to(device)
        self._token_bases = {}

    def _token_basis(self, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The row basis of a vocabulary of ``rows`` tokens ``(rows, d)`` and its Gram ``T^T T``
        ``(d, d)`` float64: the token table when it covers the vocabulary, else rows drawn like
        the table's (:func:`rows_like`); None without a table. Drawn bases are kept, oldest
        evicted first, up to :data:`TOKEN_BASIS_CACHE_BYTES` in all."""
        table = self.token_table
        if table is None:
            return None
        cached = self._token_bases.get(rows)
        if cached is not None:
            return cached
        with torch.inference_mode(False), torch.no_grad():
            basis = table if table.shape[0] == rows else rows_like(table, rows)
            gram = sum(chunk.double().T @ chunk.double() for chunk in basis.split(GRAM_CHUNK_ROWS))
        entry = (basis, gram)
        size = self._drawn_bytes(basis)
        if size > TOKEN_BASIS_CACHE_BYTES:  # served, never kept
            return entry
        while self._token_bases and self.token_basis_cache_bytes + size > TOKEN_BASIS_CACHE_BYTES:
            self._token_bases.pop(next(iter(self._token_bases)))
        self._token_bases[rows] = entry
        return entry

    def _drawn_bytes(self, basis: torch.Tensor) -> int:
        """Memory a cached basis holds beyond the token table (which it may be)."""
        return 0 if basis is self.token_table else basis.numel() * basis.element_size()

    @property
    def token_basis_cache_bytes(self) -> int:
        """Bytes the drawn token bases kept between predictions hold now."""
        return sum(self._drawn_bytes(basis) for basis, _ in self._token_bases.values())

    def _hugging_face_init(
        self,
        plan: ExportPlan,
        dtype: torch.dtype,
        device: torch.device,
        out: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every tensor of ``plan`` as transformers initialises GPT-2 (norm scales 1, biases 0,
        weights and embeddings :func:`seeded_normal` with :func:`hugging_face_std`), written
        into ``out`` when given (as :meth:`forward`)."""
        slots = [slot for slot, _ in plan.pieces]
        groups = slot_groups(plan)
        vector_groups, matrix_groups = groups.vectors, groups.matrices
        in_place = not torch.is_grad_enabled()
        writer = _OutputWriter(plan, groups.ordered, dtype, device, in_place, out)
        for length, members in vector_groups.items():
            ones = torch.tensor([slots[i].kind == ParamKind.NORM_SCALE for i in members])
            writer.vectors(members, ones[:, None].float().expand(-1, length).to(device))
        # One CPU generator per matrix (seeded by its slot): the matrices are drawn and written
        # in parallel threads, with the same values as one after another; each thread holds
        # one matrix's float32 values at a time.
        matrices = [(i, rows, cols) for (rows, cols, _, _), ms in matrix_groups.items() for i in ms]

        def draw(matrix: tuple[int, int, int]) -> None:
            i, rows, cols = matrix
            std = hugging_face_std(slots[i])
            writer.dense([i], [seeded_normal(slots[i].name, rows, cols, std)])

        in_threads(draw, matrices, torch.get_num_threads())
        return writer.result()

    def _cores(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(S, hidden)`` -> factors ``A (S, d, r)`` and ``B (S, d, r)`` with ``C = A B^T``;
        ``B`` is None for a full core (``B = I``)."""
        d, slots = self.config.basis_size, hidden.shape[0]
        raw = self.core_head(hidden)
        if self.config.core_rank is None:
            return raw.view(slots, d, d), None
        a, b = raw.view(slots, 2, d, self.rank).unbind(1)
        return a, b

    def _scales(self, slots: list[ParamSlot], log_gain: torch.Tensor) -> torch.Tensor:
        """Per-slot amplitudes ``(S,)`` from the raw log-gains ``(S,)``, before the rms
        normalisation."""
        base = torch.tensor(
            [
                EMBEDDING_STD if s.kind == ParamKind.EMBEDDING else math.sqrt(s.gain / s.fan_in)
                for s in slots
            ],
            device=log_gain.device,
            dtype=log_gain.dtype,
        )
        std = base * torch.exp(math.log(GAIN_RANGE) * torch.tanh(log_gain))
        if self.config.span_scaling:
            std = std * self._span_factors(slots, std)
        return std

    def _span_factors(self, slots: list[ParamSlot], like: torch.Tensor) -> torch.Tensor:
        """``sqrt(k / cols)`` per slot ``(S,)`` on ``like``'s device and dtype, ``k`` the structured
        part's rank bound.

        A rank-``k`` matrix with the entry variance of a full-rank one amplifies inputs that lie
        in its row space by ``cols / k`` in variance; inside a network those are the inputs it
        sees (every matrix reads from the span of the same basis), so without this factor the
        residual stream of a fresh hypernetwork's prediction grows block after block.
        """
        rank = self.config.core_rank or self.config.basis_size
        return torch.tensor(
            [
                1.0
                if s.kind == ParamKind.EMBEDDING
                else math.sqrt(min(rank, s.rows, s.cols) / s.cols)
                for s in slots
            ],
            device=like.device,
            dtype=like.dtype,
        )

    def forward(
        self,
        nodes: torch.Tensor,
        plan: ExportPlan,
        dtype: torch.dtype = torch.float32,
        factor_token_rows: bool = False,
        out: torch.Tensor | None = None,
        factor_matrices: bool = False,
        skip_matrices: Collection[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Decodes every slot of ``plan`` (differentiable when grad is enabled).

        Without autograd, all outputs are views of one flat buffer laid out in
        :func:`arena_pieces` order (group by group), and each group of equal-shape slots is
        composed in place with a few batched kernels.

        Args:
            nodes: ``(N, node_dim)`` node embeddings from the encoder.
            plan: output names, row ranges and shapes (``tal.arch.formats.export_plan``).
            dtype: output dtype (computation is float32).
            factor_token_rows: decoded token-indexed matrices are returned as
                :class:`LowRankMatrix` factors instead of tensors (training; float32, built
                functionally even without autograd).
            out: the flat buffer to write into, ``(total elements,)`` of ``dtype`` on the
                nodes' device (e.g. a safetensors blob's payload); default: one from the
                output pool. Only without autograd.
            factor_matrices: every matrix slot is returned as a :class:`LowRankMatrix`
                (float32; what a lift resizes factor by factor, ``tal.transfer.lift``).
            skip_matrices: names of matrix slots that are not composed: their outputs are
                views of the buffer left as they are, for the caller to write whole (a lift
                overwrites them). Only in place, without autograd.

        Returns:
            ``{name: tensor}`` in plan order, aliases included.
        """
        slots = [slot for slot, _ in plan.pieces]
        if (
            self.config.token_basis
            and self.token_table is None
            and any(s.token_rows for s in slots)
        ):
            return self._hugging_face_init(plan, dtype, nodes.device, out)  # learned no GPT-2
        node_index = torch.tensor([s.node for s in slots], device=nodes.device)
        kind_index = torch.tensor([int(s.kind) for s in slots], device=nodes.device)
        hidden = self.trunk(nodes[node_index] + self.kind_embedding(kind_index))
        log_gain = self.scalar_head(hidden)[:, 0]
        vectors = self.vector_head(hidden)
        groups = slot_groups(plan)
        vector_groups, matrix_groups = groups.vectors, groups.matrices
        factored = factor_token_rows or factor_matrices
        in_place = not torch.is_grad_enabled() and not factored
        if out is not None and not in_place:
            raise ValueError("out= writes in place: call without autograd (torch.no_grad)")
        if skip_matrices and not in_place:
            raise ValueError("skip_matrices leaves outputs to the caller: only in place")
        writer = _OutputWriter(
            plan, groups.ordered, dtype, nodes.device, in_place, out, frozenset(skip_matrices)
        )
        for length, members in vector_groups.items():
            raw = self.basis.project(length, vectors[members].T).T  # (n, length)
            writer.vectors(members, _bounded([slots[i].kind for i in members], raw))
        matrix_slots = [i for members in matrix_groups.values() for i in members]
        if not matrix_slots:
            return writer.result()
        amplitude = self._scales([slots[i] for i in matrix_slots], log_gain[matrix_slots])
        a, b = self._cores(hidden[matrix_slots])
        start = 0
        for (rows, cols, _, tokens), members in matrix_groups.items():
            group = slice(start, start + len(members))
            start += len(members)
            core_a = a[group]  # (n, d, r)
            token = self._token_basis(rows) if tokens and self.config.token_basis else None
            if token is not None:
                token_basis, token_gram = token
                left = token_basis.to(a.dtype) @ core_a  # (n, vocab, r)
                row_gram = token_gram.to(device=a.device, dtype=a.dtype)
            else:
                left = self.basis.project(rows, core_a)  # (n, rows, r)
                row_gram = self.basis.gram(rows, a.dtype).to(a.device)
            # ||L R||^2 = sum((A^T G_rows A) * (B^T G_cols B)), with the d x d Grams of the bases
            gram = core_a.transpose(1, 2) @ row_gram @ core_a
            if b is None:
                eye = torch.eye(self.rank, device=a.device, dtype=a.dtype)
                right = self.basis.project(cols, eye)[None]  # (1, cols, r), shared
                gram = gram * self.basis.gram(cols, a.dtype).to(a.device)
            else:
                core_b = b[group]
                right = self.basis.project(cols, core_b)  # (n, cols, r)
                gram = gram * (
                    core_b.transpose(1, 2) @ self.basis.gram(cols, a.dtype).to(a.device) @ core_b
                )
            rms = torch.sqrt(gram.sum((1, 2)) / (rows * cols)) + RMS_EPS  # (n,)
            left = left * (amplitude[group] / rms)[:, None, None]
            if factor_matrices or (factor_token_rows and slots[members[0]].token_rows):
                writer.factors(members, left, right.transpose(1, 2))
            else:
                writer.matrices(members, left, right.transpose(1, 2))
        return writer.result()


@dataclass(frozen=True)
class SlotGroups:
    """Slots that are decoded together: vectors by length, matrices by ``(rows, cols,
    transposed, token_rows)``, each in plan order (indices into ``plan.pieces``)."""

    vectors: dict[int, list[int]]
    matrices: dict[tuple[int, int, bool, bool], list[int]]

    @property
    def ordered(self) -> list[list[int]]:
        """The groups in output-buffer order: vectors first, then matrices."""
        return [*self.vectors.values(), *self.matrices.values()]


@lru_cache(maxsize=PLAN_CACHE_ENTRIES)
def slot_groups(plan: ExportPlan) -> SlotGroups:
    """The decoding groups of ``plan``'s slots."""
    vectors: dict[int, list[int]] = defaultdict(list)
    matrices: dict[tuple[int, int, bool, bool], list[int]] = defaultdict(list)
    for i, (slot, _) in enumerate(plan.pieces):
        if slot.is_vector:
            vectors[slot.rows].append(i)
        else:
            matrices[(slot.rows, slot.cols, slot.transposed, slot.token_rows)].append(i)
    return SlotGroups(dict(vectors), dict(matrices))


def arena_pieces(plan: ExportPlan) -> list[ExportPiece]:
    """Every stored output of ``plan`` in the order the decoder lays them out in its flat
    buffer: group by group, each slot's pieces in row order. A safetensors layout planned in
    this order has the decoder's buffer as its payload."""
    return [
        piece for group in slot_groups(plan).ordered for i in group for piece in plan.pieces[i][1]
    ]


def _chunks(positions: list[int], size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``size`` consecutive integers covering the sorted
    ``positions``."""
    ranges: list[tuple[int, int]] = []
    for position in positions:
        if ranges and ranges[-1][1] == position and position - ranges[-1][0] < size:
            ranges[-1] = (ranges[-1][0], position + 1)
        else:
            ranges.append((position, position + 1))
    return ranges


def _bounded(kinds: list[ParamKind], raw: torch.Tensor) -> torch.Tensor:
    """Maps raw vector values ``(n, length)`` into their trainable range: norm scales ``~1``,
    biases ``~0``."""
    is_norm = torch.tensor([k == ParamKind.NORM_SCALE for k in kinds], device=raw.device)
    squashed = torch.tanh(raw)
    norm = 1 + NORM_SCALE_RANGE * squashed
    return torch.where(is_norm[:, None], norm, BIAS_LIMIT * squashed)


class _OutputWriter:
    """Collects decoded tensors under their export names.

    ``in_place``: every output is a view of one buffer, laid out group after group, each
    slot's pieces in row order, so a group of equal-shape slots is one ``(n, rows, cols)``
    block that is composed with batched kernels (float32), or through a reused float32
    scratch buffer no larger than the largest slot (other dtypes). Otherwise tensors are
    built functionally so autograd can track them.
    """

    def __init__(
        self,
        plan: ExportPlan,
        groups: list[list[int]],
        dtype: torch.dtype,
        device: torch.device,
        in_place: bool,
        out: torch.Tensor | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.plan, self.dtype, self.device, self.in_place = plan, dtype, device, in_place
        self.skip = skip  # matrix slot names whose outputs the caller writes (in place only)
        self.outputs: dict[str, torch.Tensor] = {}
        if not in_place:
            return
        self.slot_offsets: dict[int, int] = {}
        self.piece_offsets: dict[str, int] = {}
        total = largest = 0
        for members in groups:
            for i in members:
                self.slot_offsets[i] = total
                for piece in plan.pieces[i][1]:
                    self.piece_offsets[piece.name] = total
                    total += math.prod(piece.stored_shape)
                largest = max(largest, total - self.slot_offsets[i])
        if out is None:
            out = OUTPUT_POOL.empty(total, dtype, device)
        elif out.shape != (total,) or out.dtype != dtype or out.device != device:
            raise ValueError(
                f"out must be a flat ({total},) {dtype} tensor on {device}; got "
                f"{tuple(out.shape)} {out.dtype} on {out.device}"
            )
        self.arena = out
        scratch = 0 if dtype == torch.float32 else largest
        self.scratch = torch.empty(scratch, dtype=torch.float32, device=device)

    def _block(self, members: list[int], shape: tuple[int, int]) -> torch.Tensor:
        """``(n, *shape)`` view of the members' consecutive regions of the arena; names each
        export piece as a view of it."""
        start = self.slot_offsets[members[0]]
        block = self.arena[start : start + len(members) * math.prod(shape)].view(-1, *shape)
        for j, i in enumerate(members):
            flat = block[j].view(-1)
            offset = 0
            for piece in self.plan.pieces[i][1]:
                numel = math.prod(piece.stored_shape)
                self.outputs[piece.name] = flat[offset : offset + numel].view(piece.stored_shape)
                offset += numel
        return block

    def _rows_are_stored_in_order(self, members: list[int]) -> bool:
        """True when each slot's pieces, laid out one after another, are its stored tensor:
        consecutive row ranges from the first row to the last (one piece if transposed)."""
        for i in members:
            slot, pieces = self.plan.pieces[i]
            stop = 0
            for piece in pieces:
                if piece.row_start != stop:
                    return False
                stop = piece.row_stop
            if stop != slot.rows or (slot.transposed and len(pieces) > 1):
                return False
        return True

    def vectors(self, members: list[int], values: torch.Tensor) -> None:
        """``values (n, length)`` for the vector slots ``members``, in that order."""
        if self.in_place and self._rows_are_stored_in_order(members):
            self._block(members, (values.shape[1],)).copy_(values)
            return
        for j, i in enumerate(members):
            for piece in self.plan.pieces[i][1]:
                part = values[j, piece.row_start : piece.row_stop].reshape(piece.stored_shape)
                self._store(piece, part)

    def matrices(self, members: list[int], left: torch.Tensor, right: torch.Tensor) -> None:
        """Matrix slots ``members`` of one logical shape ``(rows, cols)``: ``W_j = left_j @
        right_j`` with ``left (n, rows, r)`` already scaled and ``right (n or 1, r, cols)``."""
        if self.in_place and self._rows_are_stored_in_order(members):
            self._compose_block(members, left, right)
            return
        for j, i in enumerate(members):
            slot, pieces = self.plan.pieces[i]
            member_right = right[min(j, right.shape[0] - 1)]
            for piece in pieces:
                if slot.name in self.skip:
                    self._view(piece)
                    continue
                value = left[j, piece.row_start : piece.row_stop] @ member_right
                if slot.transposed:
                    value = value.T
                self._store(piece, value.reshape(piece.stored_shape))

    def dense(self, members: list[int], values: list[torch.Tensor]) -> None:
        """Matrix slots ``members`` given whole: ``values[j]`` is slot j's logical ``(rows,
        cols)`` float32 matrix (computed outside the decoder, no gradient)."""
        for j, i in enumerate(members):
            slot, pieces = self.plan.pieces[i]
            value = values[j].to(self.device)
            for piece in pieces:
                part = value[piece.row_start : piece.row_stop]
                part = part.T if slot.transposed else part
                self._store(piece, part.reshape(piece.stored_shape))

    def factors(self, members: list[int], left: torch.Tensor, right: torch.Tensor) -> None:
        """Matrix slots ``members`` kept as :class:`LowRankMatrix`: ``left (n, rows, r)``
        already scaled, ``right (n or 1, r, cols)`` (the writer is not in place)."""
        for j, i in enumerate(members):
            slot, pieces = self.plan.pieces[i]
            if slot.transposed or len(pieces) != 1:
                raise ValueError(f"{slot.name}: only whole, untransposed matrices are factored")
            factor = LowRankMatrix(left[j], right[min(j, right.shape[0] - 1)])
            self.outputs[pieces[0].name] = factor  # type: ignore[assignment]

    def _compose_block(self, members: list[int], left: torch.Tensor, right: torch.Tensor) -> None:
        """In place: ``W_j = left_j @ right_j`` for a whole group, in batched products of at most
        ``COMPOSE_CHUNK_ELEMENTS`` outputs (float32) or through the float32 scratch buffer (other
        dtypes). A transposed slot is stored as ``W^T = right^T left^T``."""
        n = len(members)
        if self.plan.pieces[members[0]][0].transposed:  # (n or 1, m, r) @ (n or 1, r, k)
            first, second = right.transpose(1, 2), left.transpose(1, 2)
        else:
            first, second = left, right
        m, k = first.shape[1], second.shape[2]
        block = self._block(members, (m, k))
        first, second = first.expand(n, -1, -1), second.expand(n, -1, -1)
        budget = COMPOSE_CHUNK_ELEMENTS if self.dtype == torch.float32 else self.scratch.numel()
        chunk = max(1, budget // (m * k))
        slots = (self.plan.pieces[i][0] for i in members)
        composed = [j for j, slot in enumerate(slots) if slot.name not in self.skip]
        for begin, stop in _chunks(composed, chunk):
            part = slice(begin, stop)
            if self.dtype == torch.float32:
                torch.bmm(first[part], second[part], out=block[part])
            else:
                work = self.scratch[: (part.stop - begin) * m * k].view(-1, m, k)
                torch.bmm(first[part], second[part], out=work)
                block[part].copy_(work)

    def _store(self, piece: ExportPiece, value: torch.Tensor) -> None:
        if not self.in_place:
            self.outputs[piece.name] = value.to(self.dtype)
            return
        self._view(piece).copy_(value)

    def _view(self, piece: ExportPiece) -> torch.Tensor:
        """The piece's output: its view of the arena (in place)."""
        start = self.piece_offsets[piece.name]
        view = self.arena[start : start + math.prod(piece.stored_shape)].view(piece.stored_shape)
        self.outputs[piece.name] = view
        return view

    def result(self) -> dict[str, torch.Tensor]:
        ordered = {p.name: self.outputs[p.name] for _, pieces in self.plan.pieces for p in pieces}
        for alias, source in self.plan.aliases:
            ordered[alias] = ordered[source]
        return ordered
