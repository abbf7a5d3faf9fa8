"""WordNet 3.0 glosses (Debian ``wordnet-base``) labelled by lexicographer file.

Each line of ``data.noun``/``data.verb``/``data.adj``/``data.adv`` is one synset:
``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers ... | gloss``. The gloss
follows `` | `` and holds the definition, then usage examples in quotes. Lines that start with
two spaces are the licence header. The 45 lexicographer file names are fixed by WordNet
(lexnames(5WN)); ``wordnet-base`` does not ship the ``lexnames`` file, so they are listed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskSourceMissingError
from .sources import SourceFile, SourceText, normalise_text, read_source_text, under_root

WORDNET_DIR = Path("/usr/share/wordnet")
GLOSS_SEPARATOR = " | "
HEADER_PREFIX = "  "
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
"""Lexicographer file names by number (lex_filenum 0..44)."""
_LEXNUM = {name: number for number, name in enumerate(LEXNAMES)}


@dataclass(frozen=True)
class Synset:
    """The lexicographer file and gloss of one line of a WordNet data file."""

    lexname: str
    gloss: str


def data_file_for(lexname: str) -> str:
    """The data file that holds a lexicographer file's synsets (``noun.animal`` -> data.noun)."""
    return "data." + lexname.split(".", 1)[0]


def parse_synset(line: str) -> Synset | None:
    """Parse one data-file line; None for licence-header and blank lines.

    Raises ``ValueError`` if the line is not a synset line.
    """
    if not line.strip() or line.startswith(HEADER_PREFIX):
        return None
    head, separator, gloss = line.partition(GLOSS_SEPARATOR)
    fields = head.split(" ", 3)
    if not separator or len(fields) < 4 or not fields[1].isdigit():
        raise ValueError(f"not a WordNet synset line: {line[:80]!r}")
    lexnum = int(fields[1])
    if not 0 <= lexnum < len(LEXNAMES):
        raise ValueError(f"lex_filenum {lexnum} out of range in {line[:80]!r}")
    return Synset(LEXNAMES[lexnum], gloss)


def _label_of(classes: Sequence[Sequence[str]]) -> dict[str, int]:
    label_of: dict[str, int] = {}
    for label, members in enumerate(classes):
        for lexname in members:
            if lexname not in _LEXNUM:
                raise ValueError(f"unknown WordNet lexicographer file {lexname!r}")
            label_of[lexname] = label
    return label_of


def locate_wordnet(
    root: Path, classes: Sequence[Sequence[str]], apt_packages: Sequence[str]
) -> list[SourceFile]:
    """The data files that hold the lexicographer files ``classes[i]`` lists.

    Raises ``TaskSourceMissingError`` if one is missing, ``ValueError`` for an unknown
    lexicographer file name.
    """
    directory = under_root(root, WORDNET_DIR)
    files: list[SourceFile] = []
    for name in sorted({data_file_for(lexname) for lexname in _label_of(classes)}):
        path = directory / name
        if not path.is_file():
            raise TaskSourceMissingError(f"WordNet {name}", [str(directory)], apt_packages)
        files.append(SourceFile(path))
    return files


def read_wordnet(files: Sequence[SourceFile], classes: Sequence[Sequence[str]]) -> list[SourceText]:
    """The gloss of every synset whose lexicographer file is in ``classes[i]``, labelled ``i``."""
    label_of = _label_of(classes)
    examples: list[SourceText] = []
    for file in files:
        for line in read_source_text(file.path).split("\n"):
            synset = parse_synset(line)
            if synset is not None and synset.lexname in label_of:
                gloss = normalise_text(synset.gloss)
                if gloss:
                    examples.append(SourceText(gloss, label_of[synset.lexname]))
    return examples
