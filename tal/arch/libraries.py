"""Model libraries: deterministic sets of architectures the hypernetwork trains on.

Presets follow the TAL / LoGAH papers (``vits-1k``, ``vits-plus-1k``, ``gpts-1k``) plus CPU-sized
ones (``cpu``, ``cpu-plus``) for 32 px, one-channel images, ``cpu-scales`` for the widths, depths
and input formats users request (up to ViT-S's blocks, 32-96 px, grey and RGB), and ``gpt2-cpu``
for GPT-2 with GPT-2's vocabulary. Each library has a fixed held-out split chosen by hashing each
architecture's canonical JSON, so the split does not depend on sampling order and training never
sees a held-out architecture; a preset may add named timm models to it (held out at their own
resolution).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

import torch

from tal.arch.parse import spec_from_timm_name
from tal.arch.specs import GPT2Spec, ViTSpec

HELD_OUT_PERCENT = 10
PAPER_LIBRARY_SIZE = 1_000
CPU_LIBRARY_SIZE = 200
PLACEHOLDER_CLASSES = 10  # heads are resized to each task's classes at training time
PAPER_HEAD_DIMS = (16, 128)  # allowed head-width range; heads are divisors of the width
CPU_HEAD_DIMS = (8, 64)
CPU_PATCH = 8
GREY, RGB = 1, 3


@dataclass(frozen=True)
class WidthRule:
    """Widths ``range(low, high + 1, step)`` allowed for depths ``min_depth..max_depth``."""

    min_depth: int
    max_depth: int
    low: int
    high: int
    step: int


@dataclass(frozen=True)
class InputFormat:
    """The images a ViT takes: ``img_size`` px squares cut into ``patch_size`` px patches, with
    ``in_chans`` channels."""

    img_size: int
    patch_size: int
    in_chans: int

    @property
    def patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


def input_formats(
    img_sizes: tuple[int, ...],
    patch_sizes: tuple[int, ...],
    channels: tuple[int, ...],
    max_patches: int,
) -> tuple[InputFormat, ...]:
    """Every format of those sizes whose patches tile the image, at most ``max_patches`` of them
    (a ViT's cost grows with its sequence)."""
    return tuple(
        InputFormat(size, patch, chans)
        for size in img_sizes
        for patch in patch_sizes
        for chans in channels
        if size % patch == 0 and (size // patch) ** 2 <= max_patches
    )


@dataclass(frozen=True)
class Corner:
    """The deep, wide end of a library, in the formats users request, drawn in a fixed share.

    Every architecture with at least ``min_depth`` blocks and ``min_width`` channels (any head
    count and MLP ratio the preset allows) joins the library in each of ``formats``, on top of
    its drawn ``size`` (split by hash as the rest, so held-out shapes stay held out), and each
    meta-batch slot is drawn uniformly from the corner's training architectures with
    probability ``share``.
    """

    min_depth: int
    min_width: int
    formats: tuple[InputFormat, ...]
    share: float


@dataclass(frozen=True)
class LibraryPreset:
    """A model library's rules.

    Attributes:
        family: ``"vit"`` or ``"gpt2"``.
        rules: the widths allowed per depth band.
        size: architectures drawn (all, if fewer exist).
        formats: a ViT library's input formats (every architecture comes in each).
        head_dims: ``(min, max)`` width per attention head; mlp_ratios: a ViT's MLP ratios.
        vocab_size, n_positions, positions: a GPT-2 library's vocabulary and context lengths
            (``positions`` to draw from; default ``n_positions``).
        held_out_models: timm model names added to the held-out split as they are.
        held_out_specs: further shapes added to the held-out split; like the timm models, no
            training architecture shares their shape whatever its head count (a hypernetwork
            without ``head_features``, the default, predicts every head count the same weights).
        cost_power: the trainer draws architectures with probability ``~ cost^-cost_power``
            (:meth:`ModelLibrary.sampling_weights`; 0: uniformly).
        corner: architectures drawn in a fixed share of the slots (None: no such share).
    """

    family: str
    rules: tuple[WidthRule, ...]
    size: int
    formats: tuple[InputFormat, ...] = (InputFormat(224, 16, RGB),)
    head_dims: tuple[int, int] = PAPER_HEAD_DIMS
    mlp_ratios: tuple[float, ...] = (4.0,)
    vocab_size: int = 50_257
    n_positions: int = 1_024
    positions: tuple[int, ...] = ()
    held_out_models: tuple[str, ...] = ()
    held_out_specs: tuple[ViTSpec, ...] = ()
    cost_power: float = 0.0
    corner: Corner | None = None


_CPU_IMAGES = dict(
    formats=(InputFormat(32, CPU_PATCH, GREY),), head_dims=CPU_HEAD_DIMS, mlp_ratios=(2.0, 4.0)
)
# Formats of the scales library: 32-96 px, patch 8 or 16, grey or RGB, at most 64 patches.
SCALES_FORMATS = input_formats((32, 48, 64, 96), (8, 16), (GREY, RGB), max_patches=64)
SCALES_HELD_OUT = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
# ViT-S's blocks at 64 px RGB, patch 16: the model `tal eval --user-scale` trains and measures.
VIT_S_WIDTH_64_RGB = ViTSpec(
    depth=12, embed_dim=384, num_heads=6, patch_size=16, img_size=64, in_chans=RGB
)
SCALES_SIZE = 600
# Drawing ~ cost^-1/2: a ViT-S-width 12-block model about a twentieth as often as a 2-block
# width-48 one, so most steps stay cheap and every step still meets wide models now and then.
SCALES_COST_POWER = 0.5
# Drawn by cost alone, depth 9-12 at width 384 is under one draw in fifty, and the 600 drawn
# shapes may hold no such model in the formats `tal eval --user-scale` asks for (64 px, patch
# 16; its 224-px proxy, 64 px, patch 8; RGB). One slot in ten comes from that corner: its models
# cost about fifteen times a cost-weighted draw, so a draw costs 2.4 times as much on average.
SCALES_CORNER = Corner(
    min_depth=9,
    min_width=384,
    formats=(InputFormat(64, 16, RGB), InputFormat(64, 8, RGB)),
    share=0.1,
)

PRESETS: dict[str, LibraryPreset] = {
    # Authors' ViTs-1K: depth 3-9; width 192-512 at depth 3, 256-512 at 4-5, 256-768 above.
    "vits-1k": LibraryPreset(
        "vit",
        (
            WidthRule(3, 3, 192, 512, 32),
            WidthRule(4, 5, 256, 512, 32),
            WidthRule(6, 9, 256, 768, 32),
        ),
        PAPER_LIBRARY_SIZE,
    ),
    # ViTs+-1K: depth 3-12, width 192-768 step 64.
    "vits-plus-1k": LibraryPreset("vit", (WidthRule(3, 12, 192, 768, 64),), PAPER_LIBRARY_SIZE),
    # LoGAH's GPTs-1K: n_layer 3-9, n_embd 72-256 step 8.
    "gpts-1k": LibraryPreset(
        "gpt2", (WidthRule(3, 9, 72, 256, 8),), PAPER_LIBRARY_SIZE, head_dims=(8, 64)
    ),
    # CPU presets: 32 px one-channel images, patch 8 (16 patches + class token: a 2-core CPU
    # trains a meta-batch of these in a fraction of a second).
    "cpu": LibraryPreset(
        "vit",
        (WidthRule(2, 4, 48, 160, 16), WidthRule(5, 6, 64, 192, 16)),
        CPU_LIBRARY_SIZE,
        **_CPU_IMAGES,
    ),
    "cpu-plus": LibraryPreset(
        "vit", (WidthRule(2, 8, 64, 256, 32),), CPU_LIBRARY_SIZE, **_CPU_IMAGES
    ),
    # The scales users request on a CPU budget: depth 2-12, width up to ViT-S's 384 (narrower
    # bands shallow), heads of width 16-64 (ViT-S's 64 included), MLP ratio 4, every format of
    # SCALES_FORMATS; timm's ViT-Ti/S/B at 224 px held out.
    "cpu-scales": LibraryPreset(
        "vit",
        (
            WidthRule(2, 4, 48, 384, 16),
            WidthRule(5, 8, 96, 384, 32),
            WidthRule(9, 12, 192, 384, 64),
        ),
        SCALES_SIZE,
        formats=SCALES_FORMATS,
        head_dims=(16, 64),
        held_out_models=SCALES_HELD_OUT,
        held_out_specs=(VIT_S_WIDTH_64_RGB,),
        cost_power=SCALES_COST_POWER,
        corner=SCALES_CORNER,
    ),
    # GPT-2 on a CPU: depth 2-6, width 64-256, heads of width 16-64, context 128-256 tokens,
    # GPT-2's vocabulary (the text tasks' tokenizer).
    "gpt2-cpu": LibraryPreset(
        "gpt2",
        (WidthRule(2, 6, 64, 256, 32),),
        CPU_LIBRARY_SIZE,
        head_dims=(16, 64),
        positions=(128, 192, 256),
    ),
}


@dataclass(frozen=True)
class ModelLibrary:
    name: str
    train: tuple[ViTSpec | GPT2Spec, ...]
    held_out: tuple[ViTSpec | GPT2Spec, ...]

    @property
    def max_width(self) -> int:
        return max(_width(spec) for spec in self.train + self.held_out)

    def sampling_weights(self) -> torch.Tensor | None:
        """Probabilities ``(len(train),)`` of drawing each training architecture, ``~
        cost^-cost_power`` with cost the parameters times the sequence length (about a step's
        work); None when the preset draws uniformly."""
        power = PRESETS[self.name].cost_power
        if not power:
            return None
        cost = torch.tensor(
            [float(training_cost(spec)) for spec in self.train], dtype=torch.float64
        )
        weights = cost.pow(-power)
        return weights / weights.sum()

    @property
    def corner_share(self) -> float:
        """The probability that a meta-batch slot is drawn from :meth:`corner_indices` (0
        without a corner)."""
        corner = PRESETS[self.name].corner
        return corner.share if corner is not None else 0.0

    def corner_indices(self) -> tuple[int, ...]:
        """Positions in ``train`` of the preset's corner architectures (empty without one)."""
        corner = PRESETS[self.name].corner
        if corner is None:
            return ()
        return tuple(i for i, spec in enumerate(self.train) if in_corner(corner, spec))


def training_cost(spec: ViTSpec | GPT2Spec) -> int:
    """Parameters times tokens per example: what a training step through ``spec`` costs, up to
    a constant."""
    tokens = spec.num_tokens if isinstance(spec, ViTSpec) else spec.n_positions
    return spec.num_params() * tokens


def in_corner(corner: Corner, spec: ViTSpec | GPT2Spec) -> bool:
    """Whether ``spec`` is one of ``corner``'s architectures."""
    return (
        isinstance(spec, ViTSpec)
        and spec.depth >= corner.min_depth
        and spec.embed_dim >= corner.min_width
        and InputFormat(spec.img_size, spec.patch_size, spec.in_chans) in corner.formats
    )


def _width(spec: ViTSpec | GPT2Spec) -> int:
    return spec.embed_dim if isinstance(spec, ViTSpec) else spec.n_embd


def is_held_out(spec: ViTSpec | GPT2Spec) -> bool:
    """Stable membership of the held-out split (hash of the canonical JSON)."""
    digest = hashlib.sha256(spec.canonical_json().encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


def _candidates(preset: LibraryPreset) -> list[tuple[int, int]]:
    return [
        (depth, width)
        for rule in preset.rules
        for depth in range(rule.min_depth, rule.max_depth + 1)
        for width in range(rule.low, rule.high + 1, rule.step)
    ]


def _make(
    preset: LibraryPreset,
    depth: int,
    width: int,
    heads: int,
    mlp_ratio: float,
    positions: int,
    image_format: InputFormat | None,
) -> ViTSpec | GPT2Spec:
    if preset.family == "gpt2":
        return GPT2Spec(
            n_layer=depth,
            n_embd=width,
            n_head=heads,
            vocab_size=preset.vocab_size,
            n_positions=positions,
        )
    assert image_format is not None
    return ViTSpec(
        depth=depth,
        embed_dim=width,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        patch_size=image_format.patch_size,
        img_size=image_format.img_size,
        in_chans=image_format.in_chans,
        num_classes=PLACEHOLDER_CLASSES,
    )


def _options(
    preset: LibraryPreset,
    shapes: list[tuple[int, int]],
    formats: tuple[InputFormat | None, ...],
) -> list[tuple[int, int, int, float, int, InputFormat | None]]:
    """Every ``(depth, width, heads, mlp_ratio, positions, format)`` the preset allows for
    ``shapes`` (depth, width) in ``formats``."""
    low, high = preset.head_dims
    return [
        (depth, width, heads, ratio, positions, image_format)
        for depth, width in shapes
        for heads in range(1, width // low + 1)
        if width % heads == 0 and low <= width // heads <= high
        for ratio in preset.mlp_ratios
        for positions in preset.positions or (preset.n_positions,)
        for image_format in formats
    ]


@lru_cache(maxsize=16)
def build_library(name: str, seed: int = 0) -> ModelLibrary:
    """``preset.size`` distinct architectures (all, if fewer exist), deterministically."""
    if name not in PRESETS:
        raise KeyError(f"unknown model library {name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[name]
    rng = random.Random(f"{name}:{seed}")
    formats = preset.formats if preset.family == "vit" else (None,)
    options = _options(preset, _candidates(preset), formats)
    if not options:
        raise ValueError(f"library {name!r} has no valid architecture")
    rng.shuffle(options)
    chosen = options[: preset.size]
    corner = preset.corner
    if corner is not None:
        deep_and_wide = [
            (depth, width)
            for depth, width in _candidates(preset)
            if depth >= corner.min_depth and width >= corner.min_width
        ]
        chosen += [o for o in _options(preset, deep_and_wide, corner.formats) if o not in chosen]
    specs = [_make(preset, *option) for option in chosen]
    specs.sort(key=lambda s: s.canonical_json())
    named = [spec_from_timm_name(model) for model in preset.held_out_models]
    named += preset.held_out_specs
    named = [spec.model_copy(update={"num_classes": PLACEHOLDER_CLASSES}) for spec in named]
    named_shapes = {_shape(spec) for spec in named}
    train = tuple(s for s in specs if not is_held_out(s) and _shape(s) not in named_shapes)
    held_out = tuple(s for s in specs if is_held_out(s) and s not in named) + tuple(named)
    return ModelLibrary(name, train, held_out)


def _shape(spec: ViTSpec | GPT2Spec) -> str:
    """``spec``'s canonical JSON up to its head count."""
    if not isinstance(spec, ViTSpec):
        return spec.canonical_json()
    return spec.model_copy(update={"num_heads": 1}).canonical_json()
