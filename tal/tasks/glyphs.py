"""Procedurally rendered glyph tasks: characters drawn from Debian fonts under random distortion.

Every image is a white glyph on a black background, rendered at ``SUPERSAMPLE`` times the
output size, distorted by a seeded random affine map (rotation, scale, shear, translation) and
stroke thickening, then box-downsampled. Generation depends only on the task spec, the split and
the font files, so it is repeatable; results are cached on disk as .npz, keyed by a fingerprint
of everything that affects them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, features

from .cache import load_npz_arrays, save_npz_atomic
from .data import SPLITS, SUITE_IMAGE_SIZE, Split, SplitSizes
from .fonts import FONT_POOL, FontFace, has_glyph, load_font, locate_fonts

GENERATOR_VERSION = 1
"""Bump when the rendering code changes in a way that changes pixels; invalidates caches."""

SUPERSAMPLE = 2
"""Glyphs are drawn at this multiple of the output size and box-downsampled."""

FONT_EM_FRACTION = 0.7
"""Font size (em height) as a fraction of the render canvas side."""

INK = 255
BACKGROUND = 0
CACHE_KEY_CHARS = 16
"""Hex digits of the fingerprint used in a cache file name."""


@dataclass(frozen=True)
class DistortionConfig:
    """Ranges of the per-image random distortion (all sampled uniformly)."""

    max_rotation_deg: float = 12.0
    scale_range: tuple[float, float] = (0.85, 1.1)
    max_shear: float = 0.2
    """Horizontal shear factor (x += shear * y), in either direction."""
    max_translate: float = 0.06
    """Shift in x and y, as a fraction of the image side."""
    max_stroke_width: int = 2
    """Extra outline width in render-canvas pixels (0 = the font's own weight)."""


@dataclass(frozen=True)
class GlyphParams:
    """The distortion applied to one image."""

    rotation_deg: float
    scale: float
    shear: float
    translate_x: float
    translate_y: float
    stroke_width: int


@dataclass(frozen=True)
class GlyphClass:
    """One label: its name and the characters that carry it."""

    name: str
    chars: str


@dataclass(frozen=True)
class GlyphTaskSpec:
    """Everything that determines a rendered glyph task."""

    name: str
    description: str
    classes: tuple[GlyphClass, ...]
    per_class: SplitSizes
    """Examples per class in each split (every split is class-balanced)."""
    seed: int
    upright_only: bool = False
    """Use only upright faces (slanted faces blur some cross-script look-alikes)."""
    held_out_of_stage2: bool = False
    distortion: DistortionConfig = field(default_factory=DistortionConfig)
    image_size: int = SUITE_IMAGE_SIZE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def split_sizes(self) -> SplitSizes:
        return self.per_class.scaled(self.num_classes)

    @property
    def faces(self) -> tuple[FontFace, ...]:
        return tuple(f for f in FONT_POOL if not (self.upright_only and f.slanted))

    @property
    def apt_packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(face.package for face in self.faces))


def sample_params(rng: np.random.Generator, distortion: DistortionConfig) -> GlyphParams:
    """Draw one image's distortion; consumes a fixed number of values from ``rng``."""
    rotation, shear, tx, ty = rng.uniform(-1.0, 1.0, size=4)
    low, high = distortion.scale_range
    scale = rng.uniform(low, high)
    stroke = rng.integers(0, distortion.max_stroke_width + 1)
    return GlyphParams(
        rotation_deg=float(rotation * distortion.max_rotation_deg),
        scale=float(scale),
        shear=float(shear * distortion.max_shear),
        translate_x=float(tx * distortion.max_translate),
        translate_y=float(ty * distortion.max_translate),
        stroke_width=int(stroke),
    )


def inverse_affine(params: GlyphParams, canvas: int) -> tuple[float, ...]:
    """Pillow AFFINE coefficients mapping output pixels back to the undistorted canvas.

    The forward map is ``p -> R(theta) Sh(shear) S(scale) (p - c) + c + t`` about the canvas
    centre ``c``; this returns its inverse in closed form (no BLAS, so it is bit-stable).
    """
    theta = math.radians(params.rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    s, sh = params.scale, params.shear
    a, b = (cos + sh * sin) / s, (sin - sh * cos) / s
    d, e = -sin / s, cos / s
    centre = canvas / 2.0
    ox = centre + params.translate_x * canvas
    oy = centre + params.translate_y * canvas
    return (a, b, centre - (a * ox + b * oy), d, e, centre - (d * ox + e * oy))


def render_glyph(char: str, font_path: Path, params: GlyphParams, image_size: int) -> np.ndarray:
    """Render ``char`` with the font at ``font_path`` under ``params``.

    Returns a uint8 array ``(image_size, image_size)``, white glyph on black.
    """
    canvas = image_size * SUPERSAMPLE
    font = load_font(font_path, round(canvas * FONT_EM_FRACTION))
    image = Image.new("L", (canvas, canvas), BACKGROUND)
    ImageDraw.Draw(image).text(
        (canvas / 2.0, canvas / 2.0),
        char,
        font=font,
        fill=INK,
        anchor="mm",
        stroke_width=params.stroke_width,
        stroke_fill=INK,
    )
    image = image.transform(
        (canvas, canvas),
        Image.Transform.AFFINE,
        inverse_affine(params, canvas),
        resample=Image.Resampling.BILINEAR,
        fillcolor=BACKGROUND,
    )
    return np.asarray(image.reduce(SUPERSAMPLE), dtype=np.uint8)


def glyph_coverage(spec: GlyphTaskSpec, paths: dict[FontFace, Path]) -> dict[str, list[Path]]:
    """For each character of the task, the font files (in pool order) that really contain it.

    Raises ``RuntimeError`` if some character has no font at all.
    """
    canvas = spec.image_size * SUPERSAMPLE
    size = round(canvas * FONT_EM_FRACTION)
    coverage: dict[str, list[Path]] = {}
    for glyph_class in spec.classes:
        for char in glyph_class.chars:
            fonts = [paths[f] for f in spec.faces if has_glyph(load_font(paths[f], size), char)]
            if not fonts:
                raise RuntimeError(
                    f"task {spec.name!r}: no font of the pool draws {char!r} (U+{ord(char):04X})"
                )
            coverage[char] = fonts
    return coverage


def generate_split(
    spec: GlyphTaskSpec, split: Split, coverage: dict[str, list[Path]]
) -> tuple[np.ndarray, np.ndarray]:
    """Render one split: uint8 images ``(N, S, S)`` and int64 labels ``(N,)``.

    The split is class-balanced and shuffled; its random stream is seeded by
    ``(spec.seed, split index)`` so splits are independent and repeatable.
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split)])
    labels = rng.permutation(np.repeat(np.arange(spec.num_classes), spec.per_class[split]))
    images = np.empty((labels.size, spec.image_size, spec.image_size), dtype=np.uint8)
    for i, label in enumerate(labels):
        chars = spec.classes[label].chars
        char = chars[rng.integers(len(chars))]
        fonts = coverage[char]
        font_path = fonts[rng.integers(len(fonts))]
        images[i] = render_glyph(
            char, font_path, sample_params(rng, spec.distortion), spec.image_size
        )
    return images, labels.astype(np.int64)


def generator_fingerprint(spec: GlyphTaskSpec, paths: dict[FontFace, Path]) -> str:
    """sha256 over all that determines the rendered pixels: spec, fonts, library versions."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "description"},
        "fonts": [[face.filename, paths[face].stat().st_size] for face in spec.faces],
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def cache_path(spec: GlyphTaskSpec, cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / f"{spec.name}-{fingerprint[:CACHE_KEY_CHARS]}.npz"


def load_glyph_task_raw(
    spec: GlyphTaskSpec, cache_dir: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All splits of a glyph task as ``{split: (uint8 (N, S, S), int64 (N,))}``.

    Read from the cache when present, else rendered and cached. Raises
    ``TaskSourceMissingError`` (naming the apt packages) when fonts of the pool are missing.
    """
    paths = locate_fonts(spec.faces)
    path = cache_path(spec, cache_dir, generator_fingerprint(spec, paths))
    cached = load_npz_arrays(path)
    if cached is not None and all(
        f"{s}_images" in cached and f"{s}_labels" in cached for s in SPLITS
    ):
        return {s: (cached[f"{s}_images"], cached[f"{s}_labels"]) for s in SPLITS}
    coverage = glyph_coverage(spec, paths)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {
        s: generate_split(spec, s, coverage) for s in SPLITS
    }
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    save_npz_atomic(path, arrays)
    return splits
