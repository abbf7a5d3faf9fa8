"""Fortune-cookie files (Debian ``fortunes``, ``fortunes-de``, ...): items separated by ``%``.

A class of a fortune task lists *members*: paths relative to ``/usr/share/games/fortunes``,
each a fortune file (``computers``) or a directory whose fortune files all belong to the class
(``de``: every German file; sub-directories such as ``es/off`` are not entered).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import TaskSourceMissingError
from .sources import SourceFile, SourceText, normalise_text, read_source_text, under_root

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SEPARATOR = "%"
"""A line holding only this separates two items (strfile's default delimiter)."""
INDEX_SUFFIXES = frozenset({".dat", ".u8"})
"""strfile's index files and fortune-mod's UTF-8 link files, which are not item files."""


def parse_fortunes(text: str) -> list[str]:
    """The items of one fortune file, normalised (``normalise_text``), empty ones dropped."""
    items: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.rstrip() == SEPARATOR:
            items.append("\n".join(current))
            current = []
        else:
            current.append(line)
    items.append("\n".join(current))
    return [item for item in (normalise_text(raw) for raw in items) if item]


def member_files(directory: Path, member: str) -> list[Path]:
    """The fortune files a class member names (a file, or a directory's regular files)."""
    path = directory / member
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and not p.is_symlink()
            and p.suffix not in INDEX_SUFFIXES
            and not p.name.startswith(".")
        )
    return [path] if path.is_file() else []


def locate_fortunes(
    root: Path, classes: Sequence[Sequence[str]], apt_packages: Sequence[str]
) -> list[SourceFile]:
    """The files of every member of each class; ``classes[i]`` lists class ``i``'s members.

    Raises ``TaskSourceMissingError`` (naming ``apt_packages``) if a member is missing.
    """
    directory = under_root(root, FORTUNES_DIR)
    files: list[SourceFile] = []
    for label, members in enumerate(classes):
        for member in members:
            found = member_files(directory, member)
            if not found:
                raise TaskSourceMissingError(
                    f"fortune file or folder {member!r}", [str(directory)], apt_packages
                )
            files.extend(SourceFile(path, label) for path in found)
    return files


def read_fortunes(
    files: Sequence[SourceFile], classes: Sequence[Sequence[str]]
) -> list[SourceText]:
    """Every item of the located files, labelled with its file's class."""
    del classes  # each file carries its label
    return [
        SourceText(item, file.label)
        for file in files
        for item in parse_fortunes(read_source_text(file.path))
    ]
