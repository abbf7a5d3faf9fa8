"""What determines a text task of the suite: its source, classes, split sizes and seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..data import SplitSizes
from .data import TEXT_MAX_TOKENS

SourceKind = Literal["fortunes", "wordnet", "man_pages"]


@dataclass(frozen=True)
class TextClass:
    """One label and the parts of the source that carry it.

    ``members`` are, by source: fortune files or folders (relative to
    /usr/share/games/fortunes), WordNet lexicographer file names, or man page sections.
    """

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class TextTaskSpec:
    """Everything that determines a text task of the suite."""

    name: str
    description: str
    source: SourceKind
    classes: tuple[TextClass, ...]
    per_class: SplitSizes
    """Examples per class in each split (every split is class-balanced)."""
    seed: int
    apt_packages: tuple[str, ...]
    """Debian packages the task reads (for man pages: the packages whose pages are read)."""
    held_out_of_stage2: bool = False
    max_tokens: int = TEXT_MAX_TOKENS
    max_per_group: int = 0
    """At most this many examples of one group (one man page) per class; 0 for no cap."""

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"text task {self.name!r} needs at least two classes")
        if len({c.name for c in self.classes}) != len(self.classes):
            raise ValueError(f"text task {self.name!r} has repeated class names")
        if self.max_tokens < 1 or self.max_per_group < 0:
            raise ValueError(f"text task {self.name!r}: max_tokens >= 1, max_per_group >= 0")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def split_sizes(self) -> SplitSizes:
        return self.per_class.scaled(self.num_classes)
