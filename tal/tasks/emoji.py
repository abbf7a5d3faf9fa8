"""A colour image task: which Unicode emoji group an emoji drawn from a colour font belongs to.

Sources are two Debian packages, fixed by version: ``unicode-data`` ships Unicode's
``emoji-test.txt`` (each emoji with its group) and ``fonts-noto-color-emoji`` ships the
colour bitmap font Pillow draws them with (``embedded_color=True``, native size 109 px).

The task keeps the emoji that are one code point (a trailing variation selector U+FE0F aside):
sequences (skin tones, ZWJ families, keycaps, flags) need text shaping that the basic layout
engine does not do, and skin-tone variants would be near-copies of their base emoji. The
Flags group has only a handful of such emoji, so it is left out; eight groups remain.

Splits are drawn **by emoji**: every emoji of a group belongs to exactly one split, so the test
split asks which group an emoji the model has never seen belongs to, and no emoji's drawing
appears in two splits. Within a split, each image shows a random emoji of its class under a
seeded random augmentation (affine map, flip, brightness, a gradient background with noise,
sometimes an occluding rectangle), rendered at ``SUPERSAMPLE`` times ``EMOJI_IMAGE_SIZE`` and
box-downsampled. Results are cached on disk as .npz, keyed by a fingerprint of everything that
affects the pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont, features

from .cache import load_npz_arrays, save_npz_atomic
from .data import SPLITS, Split, SplitSizes
from .errors import TaskSourceMissingError
from .fonts import FontFace, locate_fonts
from .glyphs import GlyphParams, inverse_affine

GENERATOR_VERSION = 1
"""Bump when the rendering code changes in a way that changes pixels; invalidates caches."""

EMOJI_IMAGE_SIZE = 64
"""Side length, in pixels, of the stored (native) emoji images."""

EMOJI_IN_CHANS = 3
"""The emoji task is RGB."""

SUPERSAMPLE = 2
"""Images are composed at this multiple of the output size and box-downsampled."""

EMOJI_FONT = FontFace("NotoColorEmoji.ttf", "fonts-noto-color-emoji")
EMOJI_FONT_SIZE = 109
"""The only pixel size of the font's colour bitmap strike (Pillow refuses others)."""

UNICODE_DATA_PACKAGE = "unicode-data"
DEBIAN_EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_TEST_ENV = "TAL_EMOJI_TEST_FILE"
"""Environment variable naming another copy of Unicode's ``emoji-test.txt``."""

FULLY_QUALIFIED = "fully-qualified"
VARIATION_SELECTOR_16 = 0xFE0F
"""Requests emoji presentation; dropped when counting an emoji's code points."""
GROUP_PREFIX = "# group:"

CACHE_KEY_CHARS = 16
"""Hex digits of the fingerprint used in a cache file name."""
OPAQUE = 255
RGB_CHANNELS = 3


@dataclass(frozen=True)
class Emoji:
    """One emoji of ``emoji-test.txt``: the character and its Unicode group."""

    char: str
    group: str


@dataclass(frozen=True)
class EmojiAugmentation:
    """Ranges of the per-image random augmentation (all sampled uniformly)."""

    max_rotation_deg: float = 25.0
    scale_range: tuple[float, float] = (0.5, 0.9)
    """Emoji size as a fraction of the image side."""
    max_translate: float = 0.15
    """Shift in x and y, as a fraction of the image side."""
    flip_probability: float = 0.5
    brightness_range: tuple[float, float] = (0.75, 1.2)
    """Factor applied to the emoji's colours."""
    max_noise: float = 16.0
    """Largest standard deviation (in 8-bit levels) of the Gaussian noise on the whole image."""
    occlusion_probability: float = 0.3
    occlusion_side_range: tuple[float, float] = (0.15, 0.35)
    """Side of the occluding rectangle, as a fraction of the image side."""


@dataclass(frozen=True)
class EmojiTaskSpec:
    """Everything that determines a rendered emoji task.

    ``groups`` are Unicode group names (``"Smileys & Emotion"``), one class each, in label
    order. ``emoji_fractions`` share each group's emoji between the splits; ``per_class`` is
    the number of images per class in each split.
    """

    name: str
    description: str
    groups: tuple[str, ...]
    per_class: SplitSizes
    seed: int
    emoji_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)
    max_emoji_per_group: int | None = None
    """Keep only the first emoji of each group in file order (small test fixtures)."""
    augmentation: EmojiAugmentation = field(default_factory=EmojiAugmentation)
    image_size: int = EMOJI_IMAGE_SIZE

    def __post_init__(self) -> None:
        if len(self.emoji_fractions) != len(SPLITS) or any(f <= 0 for f in self.emoji_fractions):
            raise ValueError(
                f"emoji_fractions must be {len(SPLITS)} positive numbers, got "
                f"{self.emoji_fractions}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def split_sizes(self) -> SplitSizes:
        return self.per_class.scaled(self.num_classes)

    @property
    def apt_packages(self) -> tuple[str, ...]:
        return (EMOJI_FONT.package, UNICODE_DATA_PACKAGE)


def parse_emoji_test(text: str) -> list[Emoji]:
    """The one-code-point, fully-qualified emoji of an ``emoji-test.txt``, in file order.

    Each data line reads ``code points ; status # emoji name``; ``# group: NAME`` lines set
    the group of the lines below them. A trailing U+FE0F does not count as a code point.
    """
    group = ""
    found: list[Emoji] = []
    for line in text.splitlines():
        if line.startswith(GROUP_PREFIX):
            group = line[len(GROUP_PREFIX) :].strip()
            continue
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        points, _, status = (part.strip() for part in data.partition(";"))
        if status != FULLY_QUALIFIED:
            continue
        code_points = [int(p, 16) for p in points.split() if int(p, 16) != VARIATION_SELECTOR_16]
        if len(code_points) == 1 and group:
            found.append(Emoji(chr(code_points[0]), group))
    return found


def emoji_test_path() -> Path:
    """``$TAL_EMOJI_TEST_FILE`` or the Debian copy; ``TaskSourceMissingError`` if absent."""
    env = os.environ.get(EMOJI_TEST_ENV)
    path = Path(env).expanduser() if env else DEBIAN_EMOJI_TEST
    if not path.is_file():
        raise TaskSourceMissingError(
            "Unicode's emoji-test.txt", [str(path)], [UNICODE_DATA_PACKAGE]
        )
    return path


@lru_cache(maxsize=4)
def _emoji_font(path: Path) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), EMOJI_FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)


def render_base(char: str, font_path: Path, canvas: int) -> Image.Image | None:
    """The emoji drawn at the font's native size, centred and scaled to fill a square
    ``canvas`` (RGBA, premultiplied as Pillow's ``RGBa``); None if the font lacks it."""
    font = _emoji_font(font_path)
    left, top, right, bottom = font.getbbox(char)
    side = max(right - left, bottom - top)
    if side <= 0:
        return None
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(image).text(
        (side / 2.0, side / 2.0), char, font=font, embedded_color=True, anchor="mm"
    )
    if image.getchannel("A").getextrema()[1] == 0:
        return None
    return image.convert("RGBa").resize((canvas, canvas), Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class EmojiParams:
    """The augmentation applied to one image."""

    affine: GlyphParams
    flip: bool
    brightness: float
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    gradient_angle: float
    noise_std: float
    occlusion: tuple[float, float, float, float, tuple[int, int, int]] | None
    """``(left, top, width, height)`` as fractions of the side, and the colour; or None."""


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, OPAQUE + 1, size=RGB_CHANNELS))  # type: ignore[return-value]


def sample_params(rng: np.random.Generator, aug: EmojiAugmentation) -> EmojiParams:
    """Draw one image's augmentation; consumes a fixed number of values from ``rng``."""
    rotation, tx, ty = rng.uniform(-1.0, 1.0, size=3)
    scale = rng.uniform(*aug.scale_range)
    flip = bool(rng.random() < aug.flip_probability)
    brightness = float(rng.uniform(*aug.brightness_range))
    background = (_colour(rng), _colour(rng))
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    noise_std = float(rng.uniform(0.0, aug.max_noise))
    occluded = bool(rng.random() < aug.occlusion_probability)
    width, height = rng.uniform(*aug.occlusion_side_range, size=2)
    left, top = rng.uniform(0.0, 1.0 - width), rng.uniform(0.0, 1.0 - height)
    occlusion_colour = _colour(rng)
    affine = GlyphParams(
        rotation_deg=float(rotation * aug.max_rotation_deg),
        scale=float(scale),
        shear=0.0,
        translate_x=float(tx * aug.max_translate),
        translate_y=float(ty * aug.max_translate),
        stroke_width=0,
    )
    occlusion = (float(left), float(top), float(width), float(height), occlusion_colour)
    return EmojiParams(
        affine, flip, brightness, background, angle, noise_std, occlusion if occluded else None
    )


def _gradient(params: EmojiParams, canvas: int) -> np.ndarray:
    """``(canvas, canvas, 3)`` float32 linear blend of the two background colours."""
    coords = (np.arange(canvas, dtype=np.float32) + 0.5) / canvas - 0.5
    along = (
        np.cos(params.gradient_angle) * coords[None, :]
        + np.sin(params.gradient_angle) * (coords[:, None])
    )
    weight = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    start, stop = (np.asarray(c, dtype=np.float32) for c in params.background)
    return start + weight[..., None] * (stop - start)


def compose_image(
    base: Image.Image, params: EmojiParams, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """One augmented image: uint8 ``(3, image_size, image_size)``.

    ``base`` is :func:`render_base`'s premultiplied square; ``rng`` supplies the noise.
    """
    canvas = image_size * SUPERSAMPLE
    if params.flip:
        base = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    moved = base.transform(
        (canvas, canvas),
        Image.Transform.AFFINE,
        inverse_affine(params.affine, canvas),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0, 0),
    )
    premultiplied = np.asarray(moved, dtype=np.float32)
    alpha = premultiplied[..., 3:] / OPAQUE
    emoji = premultiplied[..., :RGB_CHANNELS] * params.brightness
    image = emoji + (1.0 - alpha) * _gradient(params, canvas)
    if params.occlusion is not None:
        left, top, width, height, colour = params.occlusion
        x0, y0 = round(left * canvas), round(top * canvas)
        x1, y1 = round((left + width) * canvas), round((top + height) * canvas)
        image[y0:y1, x0:x1] = np.asarray(colour, dtype=np.float32)
    image = image.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE, RGB_CHANNELS)
    image = image.mean(axis=(1, 3))
    image = image + rng.normal(0.0, params.noise_std, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, OPAQUE).astype(np.uint8).transpose(2, 0, 1)


def emoji_by_group(spec: EmojiTaskSpec, entries: list[Emoji]) -> dict[str, list[str]]:
    """The task's emoji per group, in file order (``max_emoji_per_group`` applied).

    Raises ``RuntimeError`` if a group has too few emoji to give every split one.
    """
    chosen: dict[str, list[str]] = {}
    for group in spec.groups:
        chars = [e.char for e in entries if e.group == group]
        if spec.max_emoji_per_group is not None:
            chars = chars[: spec.max_emoji_per_group]
        if len(chars) < len(SPLITS):
            raise RuntimeError(
                f"task {spec.name!r}: group {group!r} has {len(chars)} drawable emoji; "
                f"need at least {len(SPLITS)} (one per split)"
            )
        chosen[group] = chars
    return chosen


def assign_splits(
    spec: EmojiTaskSpec, chosen: dict[str, list[str]]
) -> dict[Split, list[list[str]]]:
    """Each split's emoji, per class: a seeded shuffle of each group cut by ``emoji_fractions``.

    Every emoji lands in exactly one split and every split gets at least one emoji per class.
    """
    rng = np.random.default_rng([spec.seed, len(SPLITS)])
    fractions = np.asarray(spec.emoji_fractions, dtype=np.float64)
    fractions = fractions / fractions.sum()
    assignment: dict[Split, list[list[str]]] = {split: [] for split in SPLITS}
    for group in spec.groups:
        chars = chosen[group]
        order = rng.permutation(len(chars))
        counts = np.maximum(1, np.floor(fractions * len(chars)).astype(int))
        counts[0] = len(chars) - counts[1:].sum()  # train takes the remainder
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for index, split in enumerate(SPLITS):
            picked = order[bounds[index] : bounds[index + 1]]
            assignment[split].append([chars[i] for i in sorted(picked)])
    return assignment


def generate_split(
    spec: EmojiTaskSpec,
    split: Split,
    split_emoji: list[list[str]],
    bases: dict[str, Image.Image],
) -> tuple[np.ndarray, np.ndarray]:
    """Render one split: uint8 images ``(N, 3, S, S)`` and int64 labels ``(N,)``.

    Class-balanced and shuffled; the random stream is seeded by ``(spec.seed, split index)``.
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split)])
    labels = rng.permutation(np.repeat(np.arange(spec.num_classes), spec.per_class[split]))
    size = spec.image_size
    images = np.empty((labels.size, RGB_CHANNELS, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        chars = split_emoji[label]
        char = chars[rng.integers(len(chars))]
        images[i] = compose_image(bases[char], sample_params(rng, spec.augmentation), size, rng)
    return images, labels.astype(np.int64)


def generator_fingerprint(spec: EmojiTaskSpec, font_path: Path, emoji_test: Path) -> str:
    """sha256 over all that determines the pixels: spec, sources, library versions."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "description"},
        "font": [font_path.name, font_path.stat().st_size],
        "emoji_test_sha256": hashlib.sha256(emoji_test.read_bytes()).hexdigest(),
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "numpy": np.__version__,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _prepare(
    spec: EmojiTaskSpec, font_path: Path, emoji_test: Path
) -> tuple[dict[str, Image.Image], dict[Split, list[list[str]]]]:
    """The drawn emoji of the task's groups and their assignment to splits."""
    canvas = spec.image_size * SUPERSAMPLE
    listed = parse_emoji_test(emoji_test.read_text(encoding="utf-8"))
    entries = [e for e in listed if e.group in spec.groups]
    drawn = {e.char: render_base(e.char, font_path, canvas) for e in entries}
    bases = {char: base for char, base in drawn.items() if base is not None}
    drawable = [e for e in entries if e.char in bases]
    return bases, assign_splits(spec, emoji_by_group(spec, drawable))


def split_emoji(spec: EmojiTaskSpec) -> dict[Split, list[list[str]]]:
    """Which emoji each split draws from, per class (for audits and tests)."""
    font_path = locate_fonts((EMOJI_FONT,))[EMOJI_FONT]
    return _prepare(spec, font_path, emoji_test_path())[1]


def load_emoji_task_raw(
    spec: EmojiTaskSpec, cache_dir: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All splits of an emoji task as ``{split: (uint8 (N, 3, S, S), int64 (N,))}``.

    Read from the cache when present, else rendered and cached. Raises
    ``TaskSourceMissingError`` (naming the apt packages) when the font or the Unicode data is
    missing.
    """
    font_path = locate_fonts((EMOJI_FONT,))[EMOJI_FONT]
    emoji_test = emoji_test_path()
    fingerprint = generator_fingerprint(spec, font_path, emoji_test)
    path = cache_dir / f"{spec.name}-{fingerprint[:CACHE_KEY_CHARS]}.npz"
    cached = load_npz_arrays(path)
    if cached is not None and all(
        f"{s}_images" in cached and f"{s}_labels" in cached for s in SPLITS
    ):
        return {s: (cached[f"{s}_images"], cached[f"{s}_labels"]) for s in SPLITS}
    bases, assignment = _prepare(spec, font_path, emoji_test)
    splits = {s: generate_split(spec, s, assignment[s], bases) for s in SPLITS}
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    save_npz_atomic(path, arrays)
    return splits
