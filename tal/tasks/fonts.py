"""The fixed pool of Debian font faces the glyph tasks are rendered from.

The pool is an explicit list of files (not "whatever is installed"), so the same packages
give the same data on every machine. Fonts are looked up by file name under the font
directories (``/usr/share/fonts`` by default, or ``$TAL_FONT_DIRS``, separated by ``os.pathsep``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from .errors import TaskSourceMissingError

FONT_DIRS_ENV = "TAL_FONT_DIRS"
DEFAULT_FONT_DIRS = (Path("/usr/share/fonts"),)

PKG_DEJAVU = "fonts-dejavu-core"
PKG_FREEFONT = "fonts-freefont-ttf"
PKG_LIBERATION = "fonts-liberation2"

SLANTED_MARKERS = ("Italic", "Oblique")
"""File-name parts that mark a slanted face."""

MISSING_PROBE = "\U0010fffd"
"""A private-use code point no font in the pool maps; renders as the font's .notdef glyph."""


@dataclass(frozen=True)
class FontFace:
    """One font file of the pool and the Debian package that ships it."""

    filename: str
    package: str

    @property
    def slanted(self) -> bool:
        return any(marker in self.filename for marker in SLANTED_MARKERS)


def _faces(package: str, *filenames: str) -> tuple[FontFace, ...]:
    return tuple(FontFace(name, package) for name in filenames)


FONT_POOL: tuple[FontFace, ...] = (
    *_faces(
        PKG_DEJAVU,
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Bold.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
    ),
    *_faces(
        PKG_FREEFONT,
        "FreeMono.ttf",
        "FreeMonoBold.ttf",
        "FreeMonoBoldOblique.ttf",
        "FreeMonoOblique.ttf",
        "FreeSans.ttf",
        "FreeSansBold.ttf",
        "FreeSansBoldOblique.ttf",
        "FreeSansOblique.ttf",
        "FreeSerif.ttf",
        "FreeSerifBold.ttf",
        "FreeSerifBoldItalic.ttf",
        "FreeSerifItalic.ttf",
    ),
    *_faces(
        PKG_LIBERATION,
        "LiberationMono-Regular.ttf",
        "LiberationMono-Bold.ttf",
        "LiberationMono-Italic.ttf",
        "LiberationMono-BoldItalic.ttf",
        "LiberationSans-Regular.ttf",
        "LiberationSans-Bold.ttf",
        "LiberationSans-Italic.ttf",
        "LiberationSans-BoldItalic.ttf",
        "LiberationSerif-Regular.ttf",
        "LiberationSerif-Bold.ttf",
        "LiberationSerif-Italic.ttf",
        "LiberationSerif-BoldItalic.ttf",
    ),
)
FONT_PACKAGES: tuple[str, ...] = tuple(dict.fromkeys(face.package for face in FONT_POOL))


def font_dirs() -> tuple[Path, ...]:
    """Directories searched for font files (``$TAL_FONT_DIRS`` or /usr/share/fonts)."""
    env = os.environ.get(FONT_DIRS_ENV)
    if env:
        return tuple(Path(part).expanduser() for part in env.split(os.pathsep) if part)
    return DEFAULT_FONT_DIRS


@lru_cache(maxsize=8)
def _index_font_files(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Map file name -> path for every .ttf/.otf under ``dirs`` (first in sorted order wins)."""
    found: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.suffix.lower() in (".ttf", ".otf") and path.is_file():
                found.setdefault(path.name, path)
    return found


def locate_fonts(faces: tuple[FontFace, ...] = FONT_POOL) -> dict[FontFace, Path]:
    """Path of each face; ``TaskSourceMissingError`` naming the apt packages if any is missing."""
    dirs = font_dirs()
    index = _index_font_files(dirs)
    missing = [face for face in faces if face.filename not in index]
    if missing:
        packages = list(dict.fromkeys(face.package for face in missing))
        names = ", ".join(face.filename for face in missing)
        raise TaskSourceMissingError(f"font files {names}", [str(d) for d in dirs], packages)
    return {face: index[face.filename] for face in faces}


def clear_font_index() -> None:
    """Forget the cached directory scan (after installing fonts or changing $TAL_FONT_DIRS)."""
    _index_font_files.cache_clear()


@lru_cache(maxsize=256)
def load_font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    """A FreeType font at ``size`` pixels, with the basic (shaping-free) layout engine.

    The basic engine renders one code point as its nominal glyph whether or not libraqm is
    present, which keeps rendering identical across Pillow builds.
    """
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


def _mask_signature(font: ImageFont.FreeTypeFont, text: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(text)
    return mask.size, bytes(mask)


@lru_cache(maxsize=256)
def _notdef_signature(font: ImageFont.FreeTypeFont) -> tuple[tuple[int, int], bytes]:
    return _mask_signature(font, MISSING_PROBE)


def has_glyph(font: ImageFont.FreeTypeFont, char: str) -> bool:
    """Whether ``font`` draws ``char`` with a real glyph (not .notdef, not blank)."""
    size, pixels = _mask_signature(font, char)
    if not any(pixels):
        return False
    return (size, pixels) != _notdef_signature(font)
