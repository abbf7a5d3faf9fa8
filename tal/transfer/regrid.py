"""Regrid: a proxy's coarse patch grid rebuilt in the first blocks of a finer-grid target.

A learngene's proxy sees a few large patches (the ``cpu`` library: 32-px images cut into a
4 x 4 grid of 8-px patches). ``vit_small_patch16_224`` cuts the same picture into a 14 x 14
grid: each token holds a sliver of what a proxy token held, and resizing the patch kernel and
resampling the positions (what the plain lift does) leaves every method near chance at 224 px
(docs/lab/user_scale.md). The target has more blocks than the proxy, so its first blocks can
compute, from the fine grid, the very stream the proxy's patch embedding computes from the
image brought to the proxy's size; the proxy's blocks, lifted, follow. This module builds those
first blocks (the **adapter**), in closed form:

1. **Patch embedding.** Each token writes the mean of each of its ``s x s`` sub-cells (per
   proxy channel, the target's channels mixed as :func:`convert_kernel_channels` mixes them)
   into the residual stream; the position embedding writes, :data:`CODE_SCALE` times larger, a
   code per token: which proxy token it will hold (:func:`token_roles`), which slot it fills in
   each proxy patch it overlaps (per axis), its *phase* (how its sub-cells fall on the proxy's
   pixels), and a constant that gives every token the same norm.
2. **Block 1's MLP** copies each token's content into the slot of its phase pair (GELU units
   gated by the phase code: ``gelu(c + B) - gelu(B)`` where the phase matches, about zero
   elsewhere), so a fixed linear map can treat each phase with its own weights.
3. **Gather heads**, one per slot pair, over the next blocks: every token attends (with a
   margin of :data:`HARD_LOGIT` nats) to the token in that slot of the proxy patch it will
   hold, or to the class token, whose content is zero, where the slot is empty; the value is
   that token's phase-gated content and the output projection adds the sub-cells' shares of
   each proxy pixel (area weights) into a scratch space. The last gather block's MLP erases the
   content.
4. **The last adapter block**: self-attention heads read the scratch through the proxy's patch
   kernel (its embedding of patch ``j``), add its bias and position ``j`` (for the class token
   and its copies, the proxy's class token and position), all mapped to the target's width by
   the lift's stream map (:func:`stream_map`), and erase the scratch and the codes.

Every token then carries ``T (e_j + b + p_j)``, the lifted stream of the proxy token it holds;
the lifted proxy blocks follow. Attention weighs a proxy token by how many target tokens hold
it, so :func:`token_roles` makes the counts as even as they can be (11 or 12 at 224 px). While
the adapter runs, every feature sits in its own direction orthogonal to the all-ones vector (the
highest DCT frequencies of the width), so each LayerNorm only divides by the norm the codes fix:
the content's share of it changes the division by about ``CODE_SCALE**-2``. The result is the
lifted proxy on the image area-averaged to the proxy's size, up to the sub-cell means (a
sub-cell is taken as flat), the counts' unevenness and float rounding.

:func:`plan_regrid` says whether a target can hold an adapter (a class token, a patch grid finer
than the proxy's, enough width, heads and depth); :func:`regrid_adapter` builds its tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch

from tal.arch.specs import ViTSpec

from .dct_transfer import dct_matrix, dct_resize_matrix
from .layout import GREY, convert_kernel_channels
from .tile import tile_matrix, tiles

CODE_SCALE = 100.0
"""Scale of the codes in the residual stream while the adapter runs, the content's being about
one (see the module docstring). Large codes rather than small content: the content's weights
(the patch kernel) keep the size of an ordinary kernel, which an optimiser's steps do not swamp
when the served model is fine-tuned."""
HARD_LOGIT = 80.0
"""Attention margin, in nats, between the token a head must read and the next best."""
GATE = 30.0
"""Pre-activation drop of a gated unit whose phase does not match (GELU is then ~0)."""
GATE_OFFSET = 16.0
"""Pre-activation of a matching gated unit before its content (GELU is the identity there)."""
CLS_FALLBACK = 1.5
"""A gather head's score for the class token, in units of one axis matching: above one axis,
below both, so an empty slot reads the class token (whose content is zero)."""
OVERLAP_TOLERANCE = 1e-9
SUBCELL_CHOICES = (4, 2, 1)
"""Sub-cells per patch side tried, finest first; the finest that fits the target is used."""
GATING_BLOCKS = 1
FINAL_BLOCKS = 1
PLAN_CACHE_SIZE = 64
DTYPE = torch.float32
"""The adapter's tensors are built in the blob's working precision: float64 would double the
memory traffic of its large, mostly zero matrices for no measurable gain (the stream matches
the proxy's to about 1e-3 either way, ``tests/transfer/test_regrid.py``)."""


@dataclass(frozen=True)
class AxisMap:
    """How one side of the target's patch grid falls on the proxy's (the grid is square).

    Attributes:
        patch_of: per target token, the proxy patch its centre lies in.
        memberships: per target token, the ``(proxy patch, slot)`` pairs it fills: the proxy
            patches it overlaps and its rank among their tokens.
        phase: per target token, its phase (tokens that fall alike on the proxy's pixels).
        weights: ``(phases, slots, subcells, proxy_patch)``: the share of each sub-cell in each
            pixel of a proxy patch, for a token of that phase in that slot (zero elsewhere).
        slot_phases: per slot, the phases that occur in it.
    """

    patch_of: tuple[int, ...]
    memberships: tuple[tuple[tuple[int, int], ...], ...]
    phase: tuple[int, ...]
    weights: torch.Tensor
    slot_phases: tuple[tuple[int, ...], ...]

    @property
    def slots(self) -> int:
        return len(self.slot_phases)

    @property
    def phases(self) -> int:
        return self.weights.shape[0]


def axis_map(grid: int, subcells: int, proxy_grid: int, proxy_patch: int) -> AxisMap:
    """The :class:`AxisMap` of a side of ``grid`` tokens (each cut into ``subcells``) over a
    proxy side of ``proxy_grid`` patches of ``proxy_patch`` pixels, both spanning the image.

    Lengths are in target tokens: a sub-cell is ``1 / subcells``, a proxy pixel
    ``grid / (proxy_grid * proxy_patch)``; a proxy pixel is the mean of the image over it.
    """
    pixels = proxy_grid * proxy_patch
    cell = grid / pixels
    shares = torch.zeros(grid, subcells, pixels, dtype=torch.float64)
    for token in range(grid):
        for sub in range(subcells):
            start, stop = token + sub / subcells, token + (sub + 1) / subcells
            for pixel in range(pixels):
                overlap = min(stop, (pixel + 1) * cell) - max(start, pixel * cell)
                if overlap > OVERLAP_TOLERANCE:
                    shares[token, sub, pixel] = overlap / cell
    per_patch = shares.view(grid, subcells, proxy_grid, proxy_patch)
    touches = per_patch.abs().sum(dim=(1, 3)) > 0  # (grid, proxy_grid)
    memberships: list[list[tuple[int, int]]] = [[] for _ in range(grid)]
    for patch in range(proxy_grid):
        for slot, token in enumerate(torch.nonzero(touches[:, patch]).flatten().tolist()):
            memberships[token].append((patch, slot))
    slots = int(touches.sum(dim=0).max())
    keys: dict[tuple, int] = {}
    phase: list[int] = []
    tables: list[torch.Tensor] = []
    for token in range(grid):
        table = torch.zeros(slots, subcells, proxy_patch, dtype=torch.float64)
        for patch, slot in memberships[token]:
            table[slot] = per_patch[token, :, patch]
        key = tuple(round(v, 9) for v in table.flatten().tolist())
        if key not in keys:
            keys[key] = len(keys)
            tables.append(table)
        phase.append(keys[key])
    slot_phases = tuple(
        tuple(sorted({phase[t] for t in range(grid) for _, s in memberships[t] if s == slot}))
        for slot in range(slots)
    )
    patch_of = tuple(min(int((t + 0.5) * proxy_grid / grid), proxy_grid - 1) for t in range(grid))
    return AxisMap(
        patch_of=patch_of,
        memberships=tuple(tuple(m) for m in memberships),
        phase=tuple(phase),
        weights=torch.stack(tables),
        slot_phases=slot_phases,
    )


@dataclass(frozen=True)
class RegridPlan:
    """Where an adapter's features and heads go in a target (see :func:`plan_regrid`)."""

    proxy: ViTSpec
    target: ViTSpec
    subcells: int
    axis: AxisMap
    features: dict[str, tuple[int, int]]
    gather_blocks: int

    @property
    def depth(self) -> int:
        """Blocks the adapter takes: gating, gathering, and the last one."""
        return GATING_BLOCKS + self.gather_blocks + FINAL_BLOCKS

    @property
    def content_dims(self) -> int:
        return self.subcells**2 * self.proxy.in_chans

    @property
    def grid(self) -> int:
        """Target patches per side."""
        return self.target.img_size // self.target.patch_size

    @property
    def proxy_grid(self) -> int:
        """Proxy patches per side."""
        return self.proxy.img_size // self.proxy.patch_size

    @property
    def member_dims(self) -> int:
        """Membership codes per axis: a slot of each proxy patch."""
        return self.proxy_grid * self.axis.slots

    @property
    def erasing_block(self) -> int:
        """The last gather block, whose MLP erases the content."""
        return GATING_BLOCKS + self.gather_blocks - 1

    def zero_mlps(self) -> frozenset[str]:
        """The MLP output projections (timm names) that are all zero: every adapter block's but
        the gating and the erasing block's."""
        writing = {*range(GATING_BLOCKS), self.erasing_block}
        return frozenset(
            f"blocks.{b}.mlp.fc2.weight" for b in range(self.depth) if b not in writing
        )

    def written(self) -> frozenset[str]:
        """The target's block matrices (timm names) the adapter writes whole, zeros included."""
        names = {
            f"blocks.{b}.{m}.weight" for b in range(self.depth) for m in ("attn.qkv", "attn.proj")
        }
        names |= {f"blocks.{b}.mlp.fc2.weight" for b in range(self.depth)}
        names |= {f"blocks.{b}.mlp.fc1.weight" for b in range(GATING_BLOCKS)}
        names.add(f"blocks.{self.erasing_block}.mlp.fc1.weight")
        return frozenset(names)


def token_roles(axis: AxisMap, proxy_grid: int) -> list[int]:
    """Which proxy token each target patch token holds after the adapter (row-major):
    ``j < proxy_grid**2`` for proxy patch ``j``, ``proxy_grid**2`` for the class token.

    Attention weighs a token by how many copies of it the target holds, so the copies are made
    as even as they can be: each role gets ``tokens / roles`` of them, rounded (the class token
    counts for its role). A token starts with the patch its centre lies in; a patch with more
    than its share gives its tokens farthest from its centre to the roles short of theirs, the
    class token's first. Content is gathered from every token whatever it holds.
    """
    grid = len(axis.patch_of)
    patches = proxy_grid**2
    cls_role = patches
    centre = [
        axis.patch_of[iy] * proxy_grid + axis.patch_of[ix]
        for iy in range(grid)
        for ix in range(grid)
    ]
    natural = [centre.count(role) for role in range(patches)] + [1]
    base, extra = divmod(grid * grid + 1, patches + 1)
    by_size = sorted(range(patches + 1), key=lambda role: (-natural[role], role))
    quota = [base] * (patches + 1)
    for role in by_size[:extra]:
        quota[role] += 1
    roles = list(centre)
    spare: list[int] = []
    for role in range(patches):
        members = [t for t, r in enumerate(roles) if r == role]
        middle = (
            (role // proxy_grid + 0.5) * grid / proxy_grid,
            (role % proxy_grid + 0.5) * grid / proxy_grid,
        )
        members.sort(
            key=lambda t: -((t // grid + 0.5 - middle[0]) ** 2 + (t % grid + 0.5 - middle[1]) ** 2)
        )
        spare += members[: max(0, natural[role] - quota[role])]
    for role in [cls_role, *range(patches)]:
        for _ in range(max(0, quota[role] - natural[role])):
            roles[spare.pop()] = role
    return roles


def _feature_sizes(axis: AxisMap, proxy: ViTSpec, subcells: int) -> dict[str, int]:
    """The adapter's stream features, in order, and how many directions each takes."""
    grid, content = proxy.img_size // proxy.patch_size, subcells**2 * proxy.in_chans
    return {
        "unit": 1,  # one for every token: the constant the heads and units read
        "norm": 1,  # the constant that gives every token the same norm
        "cls": 1,
        "cls_copy": 1,  # a patch token that holds the class token's stream (token_roles)
        "phase_x": axis.phases,
        "phase_y": axis.phases,
        "patch_x": grid,
        "patch_y": grid,
        "patch": grid * grid,
        "member_x": grid * axis.slots,
        "member_y": grid * axis.slots,
        "content": content,
        "gated": axis.phases * axis.phases * content,
        "scratch": proxy.in_chans * proxy.patch_size**2,
    }


CODES = ("unit", "norm", "cls", "cls_copy", "phase_x", "phase_y", "patch_x", "patch_y", "patch")
CODES += ("member_x", "member_y")
"""The codes, which the last adapter block erases (the content goes in the last gather block's
MLP, the scratch as the last block reads it)."""


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def plan_regrid(proxy: ViTSpec, target: ViTSpec) -> RegridPlan | None:
    """How ``target`` holds an adapter for ``proxy``, with the finest sub-cells that fit; None
    where it cannot (no class token, a patch grid no finer than the proxy's, a target narrower
    than the features it needs, too few heads per block or blocks, channels the patch kernel
    cannot map). Cached: a request asks for it to skip the decode, to lift and to label the
    blob (the plan is read, never changed)."""
    grid = target.img_size // target.patch_size
    proxy_grid = proxy.img_size // proxy.patch_size
    if not (target.class_token and proxy.class_token) or grid <= proxy_grid:
        return None
    if target.embed_dim < proxy.embed_dim:
        return None
    if GREY not in (proxy.in_chans, target.in_chans) and proxy.in_chans != target.in_chans:
        return None
    head_dim = target.embed_dim // target.num_heads
    for subcells in SUBCELL_CHOICES:
        if target.patch_size % subcells:
            continue
        axis = axis_map(grid, subcells, proxy_grid, proxy.patch_size)
        sizes = _feature_sizes(axis, proxy, subcells)
        content = subcells**2 * proxy.in_chans
        gather_heads = axis.slots**2
        gather_blocks = math.ceil(gather_heads / target.num_heads)
        widest_value = max(len(p) for p in axis.slot_phases) ** 2 * content
        code_dims = sum(sizes[name] for name in CODES)
        final_heads = math.ceil(sizes["scratch"] / head_dim) + math.ceil(code_dims / head_dim)
        units = max(axis.phases**2 * (content + 1), 2 * (content + sizes["gated"]))
        fits = (
            sum(sizes.values()) < target.embed_dim  # the all-ones direction is never used
            and widest_value <= head_dim
            and 2 * proxy_grid * axis.slots + 1 <= head_dim
            and final_heads <= target.num_heads
            and units <= target.mlp_hidden_dim
            and GATING_BLOCKS + gather_blocks + FINAL_BLOCKS + proxy.depth <= target.depth
        )
        if fits:
            features, start = {}, 0
            for name, size in sizes.items():
                features[name] = (start, start + size)
                start += size
            return RegridPlan(proxy, target, subcells, axis, features, gather_blocks)
    return None


def stream_map(proxy: ViTSpec, target: ViTSpec, gain: float) -> torch.Tensor:
    """``(target width, proxy width)`` float64: how the lift writes a proxy stream vector into
    the target's, times the stream gain: tiled where the lift tiles (:mod:`tal.transfer.tile`),
    else the DCT resize with the RMS kept (an isometry up to those factors when the target is
    wider)."""
    if tiles(proxy, target):
        return tile_matrix(proxy.embed_dim, target.embed_dim, torch.float64) * gain
    resize = dct_resize_matrix(proxy.embed_dim, target.embed_dim)
    return resize * (gain * math.sqrt(target.embed_dim / proxy.embed_dim))


@dataclass(frozen=True)
class _Stream:
    """The adapter's features in the target's residual stream and how a LayerNorm reads them.

    Each feature has its own unit direction (columns of ``basis``), orthonormal and orthogonal
    to the all-ones vector: the highest DCT frequencies of the width, highest first. Every
    token's codes have mean square ``CODE_SCALE**2``, so every norm divides by ``sigma``.
    """

    plan: RegridPlan
    basis: torch.Tensor
    sigma: float

    @classmethod
    def of(cls, plan: RegridPlan) -> _Stream:
        width = plan.target.embed_dim
        count = max(stop for _, stop in plan.features.values())
        basis = dct_matrix(width)[width - count :].flip(0).T.contiguous().to(DTYPE)
        return cls(plan, basis, math.sqrt(CODE_SCALE**2 + plan.target.norm_eps))

    def size(self, name: str) -> int:
        start, stop = self.plan.features[name]
        return stop - start

    def direction(self, name: str, index: int = 0) -> torch.Tensor:
        """``(width,)``: where feature ``name[index]`` lives."""
        start, stop = self.plan.features[name]
        if not 0 <= index < stop - start:
            raise IndexError(f"{name}[{index}] outside its {stop - start} features")
        return self.basis[:, start + index]

    def directions(self, name: str) -> torch.Tensor:
        """``(width, size)``: every direction of feature ``name``."""
        start, stop = self.plan.features[name]
        return self.basis[:, start:stop]

    @property
    def code_reader(self) -> float:
        """Reads a code (after a norm) as 0 or 1."""
        return self.sigma / CODE_SCALE

    @property
    def content_reader(self) -> float:
        """Reads content (after a norm) at its own scale."""
        return self.sigma


def regrid_adapter(
    plan: RegridPlan, proxy_state: Mapping[str, torch.Tensor], gain: float
) -> Iterator[tuple[str, torch.Tensor]]:
    """The adapter's tensors, ``(timm name, tensor)`` in :data:`DTYPE`, one block at a time (so
    a caller that writes each away holds one block's at most): the patch embedding, class token
    and positions, then every tensor of blocks ``0 .. plan.depth - 1`` but the MLPs' that write
    nothing (:meth:`RegridPlan.zero_mlps`; their input projections keep the prediction).

    Args:
        proxy_state: the proxy's dense timm tensors (at least its patch embedding, class token
            and positions).
        gain: the lift's residual stream gain (:func:`stream_map`).
    """
    target = plan.target
    width, hidden = target.embed_dim, target.mlp_hidden_dim
    stream = _Stream.of(plan)
    yield "patch_embed.proj.weight", _patch_kernel(stream)
    yield "patch_embed.proj.bias", torch.zeros(width, dtype=DTYPE)
    yield "pos_embed", _codes(stream)[None]
    yield "cls_token", torch.zeros(1, 1, width, dtype=DTYPE)
    shapes = {
        "norm1.bias": (width,),
        "norm2.bias": (width,),
        "attn.qkv.weight": (3 * width, width),
        "attn.qkv.bias": (3 * width,),
        "attn.proj.weight": (width, width),
        "attn.proj.bias": (width,),
        "mlp.fc2.bias": (width,),
    }
    slot_pairs = [(a, b) for a in range(plan.axis.slots) for b in range(plan.axis.slots)]
    heads = target.num_heads
    zero_mlps = plan.zero_mlps()
    for block in range(plan.depth):
        out = {
            f"blocks.{block}.{name}": torch.zeros(shape, dtype=DTYPE)
            for name, shape in shapes.items()
        }
        for norm in ("norm1", "norm2"):
            out[f"blocks.{block}.{norm}.weight"] = torch.ones(width, dtype=DTYPE)
        if f"blocks.{block}.mlp.fc2.weight" not in zero_mlps:
            out[f"blocks.{block}.mlp.fc2.weight"] = torch.zeros(width, hidden, dtype=DTYPE)
        if block < GATING_BLOCKS:
            _gating_mlp(stream, out)
        first = (block - GATING_BLOCKS) * heads  # this block's gather heads (none: empty)
        for head, (slot_y, slot_x) in enumerate(slot_pairs[max(first, 0) : first + heads]):
            _gather_head(stream, _Head.of(out, block, head, target), slot_x, slot_y)
        if block == plan.erasing_block:
            _erasing_mlp(stream, out)
        if block == plan.depth - 1:
            lifted = stream_map(plan.proxy, plan.target, gain)
            _final_block(stream, out, proxy_state, lifted)
        while out:  # each tensor let go once written
            yield out.popitem()


def _patch_kernel(stream: _Stream) -> torch.Tensor:
    """``(width, channels, patch, patch)``: each sub-cell's mean per proxy channel, the target's
    channels mixed as the lift mixes them (:func:`convert_kernel_channels`)."""
    plan = stream.plan
    proxy, target, sub = plan.proxy, plan.target, plan.subcells
    identity = torch.eye(proxy.in_chans, dtype=DTYPE)[..., None, None]
    mix = convert_kernel_channels(identity, target.in_chans)[:, :, 0, 0]  # (proxy, target)
    side = target.patch_size // sub
    kernel = torch.zeros(
        target.embed_dim,
        target.in_chans,
        target.patch_size,
        target.patch_size,
        dtype=DTYPE,
    )
    for ky in range(sub):
        for kx in range(sub):
            for channel in range(proxy.in_chans):
                feature = (ky * sub + kx) * proxy.in_chans + channel
                weights = stream.direction("content", feature)[:, None] * mix[channel][None, :]
                cell = (slice(None), slice(None), slice(ky * side, (ky + 1) * side))
                kernel[(*cell, slice(kx * side, (kx + 1) * side))] += (
                    weights[:, :, None, None] / side**2
                )
    return kernel


def _codes(stream: _Stream) -> torch.Tensor:
    """``(1 + tokens, width)``: every token's codes (the class token's first), at
    ``CODE_SCALE``, each token's norm made the same by the ``norm`` feature."""
    plan = stream.plan
    axis, width = plan.axis, plan.target.embed_dim
    grid, proxy_grid = plan.grid, plan.proxy_grid
    roles = token_roles(axis, proxy_grid)
    rows: list[list[torch.Tensor]] = [[stream.direction("cls")]]
    for iy in range(grid):
        for ix in range(grid):
            role = roles[iy * grid + ix]
            codes = [
                stream.direction("phase_x", axis.phase[ix]),
                stream.direction("phase_y", axis.phase[iy]),
            ]
            if role == proxy_grid**2:
                codes.append(stream.direction("cls_copy"))
            else:
                codes += [
                    stream.direction("patch_x", role % proxy_grid),
                    stream.direction("patch_y", role // proxy_grid),
                    stream.direction("patch", role),
                ]
            for name, members in (
                ("member_x", axis.memberships[ix]),
                ("member_y", axis.memberships[iy]),
            ):
                codes += [stream.direction(name, j * axis.slots + a) for j, a in members]
            rows.append(codes)
    positions = torch.stack([torch.stack(codes).sum(dim=0) for codes in rows])
    positions += stream.direction("unit")[None, :]
    ones = torch.tensor([len(codes) + 1 for codes in rows], dtype=DTYPE)
    level = torch.sqrt(width - ones)  # every token's squared norm: width
    positions += level[:, None] * stream.direction("norm")[None, :]
    return CODE_SCALE * positions


@dataclass(frozen=True)
class _Head:
    """One attention head's rows of a block's qkv and columns of its output projection (views:
    writing them writes the block)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    proj: torch.Tensor

    @classmethod
    def of(cls, out: dict[str, torch.Tensor], block: int, head: int, target: ViTSpec) -> _Head:
        width = target.embed_dim
        head_dim = width // target.num_heads
        qkv = out[f"blocks.{block}.attn.qkv.weight"]
        q, k, v = (
            qkv[part * width + head * head_dim : part * width + (head + 1) * head_dim]
            for part in range(3)
        )
        proj = out[f"blocks.{block}.attn.proj.weight"]
        return cls(q, k, v, proj[:, head * head_dim : (head + 1) * head_dim])

    @property
    def dim(self) -> int:
        return self.q.shape[0]


def _gating_mlp(stream: _Stream, out: dict[str, torch.Tensor]) -> None:
    """Block 1's MLP: ``gated[phase_x, phase_y, d] = content[d]`` where the token's phases are
    ``(phase_x, phase_y)``, zero elsewhere: ``gelu(GATE_OFFSET + c) - gelu(GATE_OFFSET)``, each
    pre-activation lowered by ``GATE`` per phase that does not match."""
    plan = stream.plan
    axis, hidden = plan.axis, plan.target.mlp_hidden_dim
    fc1 = torch.zeros(hidden, plan.target.embed_dim, dtype=DTYPE)
    fc1_bias = torch.zeros(hidden, dtype=DTYPE)
    fc2 = out["blocks.0.mlp.fc2.weight"]
    unit = 0
    for px in range(axis.phases):
        for py in range(axis.phases):
            phases = stream.direction("phase_x", px) + stream.direction("phase_y", py)
            gate = GATE * stream.code_reader * phases
            reference = unit
            fc1[reference], fc1_bias[reference] = gate, GATE_OFFSET - 2 * GATE
            for d in range(plan.content_dims):
                unit += 1
                content = stream.direction("content", d) * stream.content_reader
                fc1[unit], fc1_bias[unit] = gate + content, GATE_OFFSET - 2 * GATE
                gated = stream.direction("gated", (px * axis.phases + py) * plan.content_dims + d)
                fc2[:, unit] += gated
                fc2[:, reference] -= gated
            unit += 1
    out["blocks.0.mlp.fc1.weight"] = fc1
    out["blocks.0.mlp.fc1.bias"] = fc1_bias


def _erasing_mlp(stream: _Stream, out: dict[str, torch.Tensor]) -> None:
    """The last gather block's MLP erases the content and the gated content, read for the last
    time by that block's heads: ``gelu(a) - gelu(-a) = a`` exactly."""
    plan = stream.plan
    block = plan.erasing_block
    hidden = plan.target.mlp_hidden_dim
    fc1 = torch.zeros(hidden, plan.target.embed_dim, dtype=DTYPE)
    fc2 = out[f"blocks.{block}.mlp.fc2.weight"]
    features = torch.cat([stream.directions("content"), stream.directions("gated")], dim=1)
    count = features.shape[1]
    fc1[0 : 2 * count : 2] = stream.content_reader * features.T
    fc1[1 : 2 * count : 2] = -stream.content_reader * features.T
    fc2[:, 0 : 2 * count : 2] = -features
    fc2[:, 1 : 2 * count : 2] = features
    out[f"blocks.{block}.mlp.fc1.weight"] = fc1
    out[f"blocks.{block}.mlp.fc1.bias"] = torch.zeros(hidden, dtype=DTYPE)


def _gather_head(stream: _Stream, head: _Head, slot_x: int, slot_y: int) -> None:
    """One gather head: each token reads the token in slot ``(slot_y, slot_x)`` of the proxy
    patch it will hold (the class token where that slot is empty, or where the token holds the
    class token) and adds that token's share of the patch's pixels to the scratch."""
    plan = stream.plan
    axis, proxy = plan.axis, plan.proxy
    score = 2 * HARD_LOGIT * math.sqrt(head.dim)  # both axes match: 2; next best: 1.5
    code = stream.code_reader
    members = plan.member_dims  # q and k: x memberships, y memberships, class token
    for j in range(plan.proxy_grid):
        head.q[j * axis.slots + slot_x] += score * code * stream.direction("patch_x", j)
        head.q[members + j * axis.slots + slot_y] += score * code * stream.direction("patch_y", j)
    head.q[2 * members] += CLS_FALLBACK * score * code * stream.direction("unit")
    head.k[:members] += code * stream.directions("member_x").T
    head.k[members : 2 * members] += code * stream.directions("member_y").T
    head.k[2 * members] += code * stream.direction("cls")
    # value rows: the gated content of each phase pair the slot pair holds; output columns:
    # each sub-cell's share of every proxy pixel (per channel), in the scratch
    subcells, channels, patch = plan.subcells, proxy.in_chans, proxy.patch_size
    gated, frames = [], []
    for px in axis.slot_phases[slot_x]:
        for py in axis.slot_phases[slot_y]:
            share_x = axis.weights[px, slot_x].to(DTYPE)  # (subcells, proxy_patch)
            share_y = axis.weights[py, slot_y].to(DTYPE)
            # (subcells y, subcells x, patch y, patch x): a sub-cell's share of each pixel
            shares = share_y[:, None, :, None] * share_x[None, :, None, :]
            first = (px * axis.phases + py) * plan.content_dims
            for ky in range(subcells):
                for kx in range(subcells):
                    for channel in range(channels):
                        gated.append(first + (ky * subcells + kx) * channels + channel)
                        frame = torch.zeros(channels, patch, patch, dtype=DTYPE)
                        frame[channel] = shares[ky, kx]
                        frames.append(frame.flatten())
    start = plan.features["gated"][0]
    rows = len(gated)
    head.v[:rows] = stream.basis[:, [start + g for g in gated]].T * stream.content_reader
    head.proj[:, :rows] = stream.directions("scratch") @ torch.stack(frames, dim=1)


def _self_attention(stream: _Stream, head: _Head) -> None:
    """``head`` reads each token itself: its memberships (or the class token's code) match its
    own alone."""
    members = stream.plan.member_dims
    score = HARD_LOGIT * math.sqrt(head.dim)  # itself: both axes; next best: one
    code = stream.code_reader
    for part, name in ((0, "member_x"), (members, "member_y")):
        head.q[part : part + members] += score * code * stream.directions(name).T
        head.k[part : part + members] += code * stream.directions(name).T
    head.q[2 * members] += score * code * stream.direction("cls")
    head.k[2 * members] += code * stream.direction("cls")


def _final_block(
    stream: _Stream,
    out: dict[str, torch.Tensor],
    proxy_state: Mapping[str, torch.Tensor],
    lifted: torch.Tensor,
) -> None:
    """The last adapter block: each token reads itself; the scratch's pixels go through the
    proxy's patch kernel into its lifted stream (``lifted``: :func:`stream_map`), the role codes
    add its bias and position (or its class token), and the codes and scratch are erased."""
    plan = stream.plan
    target = plan.target
    f64 = torch.float64
    bias = proxy_state["patch_embed.proj.bias"].detach().to(f64)
    pos = proxy_state["pos_embed"].detach().to(f64)[0]  # (1 + proxy patches, proxy width)
    cls = proxy_state["cls_token"].detach().to(f64)[0, 0]
    embed = lifted @ proxy_state["patch_embed.proj.weight"].detach().to(f64).flatten(1)
    block = plan.depth - 1
    head_dim = target.embed_dim // target.num_heads
    reads = [("scratch", i) for i in range(stream.size("scratch"))]
    codes = [(name, i) for name in CODES for i in range(stream.size(name))]
    chunks = [reads[i : i + head_dim] for i in range(0, len(reads), head_dim)]
    chunks += [codes[i : i + head_dim] for i in range(0, len(codes), head_dim)]
    for index, chunk in enumerate(chunks):
        head = _Head.of(out, block, index, target)
        _self_attention(stream, head)
        for row, (name, feature) in enumerate(chunk):
            direction = stream.direction(name, feature)
            if name == "scratch":
                head.v[row] = direction * stream.content_reader
                head.proj[:, row] = embed[:, feature] - direction
                continue
            head.v[row] = direction * stream.code_reader
            column = -CODE_SCALE * direction
            if name == "patch":
                column = column + lifted @ (bias + pos[1 + feature])
            elif name in ("cls", "cls_copy"):
                column = column + lifted @ (cls + pos[0])
            head.proj[:, row] = column
