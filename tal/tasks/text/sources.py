"""What every text source yields, where the sources are looked up, and text clean-up."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SOURCE_ROOT_ENV = "TAL_TEXT_SOURCE_ROOT"
"""Environment variable naming the file-system root the Debian text files are read under
(default ``/``); tests point it at a fixture tree with the same layout."""
DEFAULT_SOURCE_ROOT = Path("/")

_SPACES = re.compile(r"[ \t\f\v\r\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_LINE_EDGES = re.compile(r" ?\n ?")
_OVERSTRIKE = re.compile(r"[^\x08\n]\x08")
"""A character then a backspace: terminal bold and underline (``_\bx``) in old text files."""
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_NEEDS_CLEANING = re.compile(r"[\x00-\x1f\x7f\u00a0]|  ")
"""Texts without these (most one-line texts) only need stripping."""


@dataclass(frozen=True)
class SourceText:
    """One labelled text read from a source.

    ``group`` ties examples that must land in the same split (the paragraphs of one man page);
    an empty group means the example is its own group.
    """

    text: str
    label: int
    group: str = ""


MIXED_LABELS = -1
"""``SourceFile.label`` of a file whose texts belong to several classes."""


@dataclass(frozen=True)
class SourceFile:
    """One file a task reads.

    ``label`` is the class of every text in the file, or ``MIXED_LABELS`` when the reader
    labels each text itself; ``group`` is given to every text of the file.
    """

    path: Path
    label: int = MIXED_LABELS
    group: str = ""


def source_root() -> Path:
    """The root the Debian paths are resolved under: ``$TAL_TEXT_SOURCE_ROOT`` or ``/``."""
    env = os.environ.get(TEXT_SOURCE_ROOT_ENV)
    return Path(env).expanduser() if env else DEFAULT_SOURCE_ROOT


def under_root(root: Path, absolute: str | Path) -> Path:
    """``absolute`` (a path as Debian installs it, e.g. /usr/share/wordnet) inside ``root``."""
    return root / Path(absolute).relative_to("/")


def normalise_text(text: str) -> str:
    """Resolve backspace overstrikes, drop other control characters, collapse runs of spaces
    and tabs to one space, strip every line, keep line breaks but at most one blank line in a
    row, and strip the whole text."""
    text = text.strip()
    if _NEEDS_CLEANING.search(text) is None:
        return text
    while "\x08" in text:
        stripped = _OVERSTRIKE.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _SPACES.sub(" ", _CONTROL.sub("", text))
    text = _LINE_EDGES.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def read_source_text(path: Path) -> str:
    """A source file's text: UTF-8 (every file the suite reads is), undecodable bytes replaced
    by U+FFFD so that one stray byte cannot stop a build."""
    return path.read_bytes().decode("utf-8", errors="replace")
