"""Model libraries: deterministic sets of architectures the hypernetwork trains on.

Presets follow the TAL / LoGAH papers (``vits-1k``, ``vits-plus-1k``, ``gpts-1k``) plus CPU-sized
ones (``cpu``, ``cpu-plus``) for 32 px, one-channel images, and ``gpt2-cpu`` for GPT-2 with
GPT-2's vocabulary. Each library has a fixed held-out
split chosen by hashing each architecture's canonical JSON, so the split does not depend on
sampling order and training never sees a held-out architecture.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

from tal.arch.specs import GPT2Spec, ViTSpec

HELD_OUT_PERCENT = 10
PAPER_LIBRARY_SIZE = 1_000
CPU_LIBRARY_SIZE = 200
PLACEHOLDER_CLASSES = 10  # heads are resized to each task's classes at training time
PAPER_HEAD_DIMS = (16, 128)  # allowed head-width range; heads are divisors of the width
CPU_HEAD_DIMS = (8, 64)
CPU_PATCH = 8


@dataclass(frozen=True)
class WidthRule:
    """Widths ``range(low, high + 1, step)`` allowed for depths ``min_depth..max_depth``."""

    min_depth: int
    max_depth: int
    low: int
    high: int
    step: int


@dataclass(frozen=True)
class LibraryPreset:
    family: str  # "vit" or "gpt2"
    rules: tuple[WidthRule, ...]
    size: int
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    head_dims: tuple[int, int] = PAPER_HEAD_DIMS  # (min, max) width per head
    mlp_ratios: tuple[float, ...] = (4.0,)
    vocab_size: int = 50_257
    n_positions: int = 1_024
    positions: tuple[int, ...] = ()  # GPT-2 context lengths to draw from (default: n_positions)


_CPU_IMAGES = dict(
    img_size=32, patch_size=CPU_PATCH, in_chans=1, head_dims=CPU_HEAD_DIMS, mlp_ratios=(2.0, 4.0)
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
    preset: LibraryPreset, depth: int, width: int, heads: int, mlp_ratio: float, positions: int
):
    if preset.family == "gpt2":
        return GPT2Spec(
            n_layer=depth,
            n_embd=width,
            n_head=heads,
            vocab_size=preset.vocab_size,
            n_positions=positions,
        )
    return ViTSpec(
        depth=depth,
        embed_dim=width,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        patch_size=preset.patch_size,
        img_size=preset.img_size,
        in_chans=preset.in_chans,
        num_classes=PLACEHOLDER_CLASSES,
    )


@lru_cache(maxsize=16)
def build_library(name: str, seed: int = 0) -> ModelLibrary:
    """``preset.size`` distinct architectures (all, if fewer exist), deterministically."""
    if name not in PRESETS:
        raise KeyError(f"unknown model library {name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[name]
    rng = random.Random(f"{name}:{seed}")
    options = []
    for depth, width in _candidates(preset):
        low, high = preset.head_dims
        for heads in range(1, width // low + 1):
            if width % heads == 0 and low <= width // heads <= high:
                for ratio in preset.mlp_ratios:
                    for positions in preset.positions or (preset.n_positions,):
                        options.append((depth, width, heads, ratio, positions))
    if not options:
        raise ValueError(f"library {name!r} has no valid architecture")
    rng.shuffle(options)
    specs = [_make(preset, *option) for option in options[: preset.size]]
    specs.sort(key=lambda s: s.canonical_json())
    train = tuple(s for s in specs if not is_held_out(s))
    held_out = tuple(s for s in specs if is_held_out(s))
    return ModelLibrary(name, train, held_out)
