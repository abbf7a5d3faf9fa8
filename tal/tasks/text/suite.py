"""The text tasks of the suite: four training tasks of different kinds and one held out.

Every task is built from files that Debian packages ship (scripts/setup installs them), so
nothing is downloaded and the data are fixed by the packages' versions.

- ``fortune_topic`` (topic): which of 12 topical fortune-cookie categories an English
  fortune comes from.
- ``wordnet_noun_sense`` (word sense): which of 24 semantic fields (WordNet noun lexicographer
  files, e.g. noun.animal, noun.feeling) a noun sense's gloss defines.
- ``man_section`` (register): which section of the manual (commands, system calls, library
  functions, special files, file formats, overviews, administration) a man page paragraph
  comes from.
- ``fortune_language`` (language): which of 10 languages (Latin and Cyrillic scripts) a
  fortune cookie is written in.
- ``wordnet_verb_sense`` (held out): which of 14 semantic fields of verbs (WordNet verb
  lexicographer files) a verb sense's gloss defines. No training task sees a verb gloss or
  these classes, as no image task draws Greek letters.
"""

from __future__ import annotations

from ..data import SplitSizes
from .spec import TextClass, TextTaskSpec

PKG_FORTUNES = "fortunes"
PKG_FORTUNES_MIN = "fortunes-min"
PKG_WORDNET = "wordnet-base"
MAN_PAGE_PACKAGES = ("manpages", "manpages-dev", "coreutils", "util-linux")
"""Packages whose man pages ``man_section`` reads (the first two are the Linux man-pages
project's; coreutils and util-linux are Essential, so on every Debian system)."""

FORTUNE_TOPICS = (
    "art",
    "computers",
    "drugs",
    "education",
    "food",
    "law",
    "linux",
    "men-women",
    "politics",
    "science",
    "startrek",
    "work",
)
"""Topical English categories with enough items (fortunes such as ``people``, ``wisdom`` or
``zippy`` are grouped by author or form, not topic)."""

ENGLISH_FORTUNE_FILES = (
    "cookie",
    "definitions",
    "fortunes",
    "literature",
    "people",
    "platitudes",
    "riddles",
    "wisdom",
)
"""The English class of ``fortune_language``: files ``fortune_topic`` does not read."""

FORTUNE_LANGUAGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("en", ENGLISH_FORTUNE_FILES, PKG_FORTUNES),
    ("de", ("de",), "fortunes-de"),
    ("es", ("es",), "fortunes-es"),
    ("it", ("it",), "fortunes-it"),
    ("pt", ("brasil",), "fortunes-br"),
    ("pl", ("pl",), "fortunes-pl"),
    ("cs", ("cs",), "fortunes-cs"),
    ("ru", ("ru",), "fortunes-ru"),
    ("bg", ("bg",), "fortunes-bg"),
    ("eo", ("eo",), "fortunes-eo"),
)
"""(ISO 639-1 code, fortune files or folders, Debian package) per language."""

NOUN_FIELDS = (
    "act",
    "animal",
    "artifact",
    "attribute",
    "body",
    "cognition",
    "communication",
    "event",
    "feeling",
    "food",
    "group",
    "location",
    "object",
    "person",
    "phenomenon",
    "plant",
    "possession",
    "process",
    "quantity",
    "relation",
    "shape",
    "state",
    "substance",
    "time",
)
"""WordNet noun lexicographer files, less noun.Tops (51 synsets) and noun.motive (42)."""

VERB_FIELDS = (
    "body",
    "change",
    "cognition",
    "communication",
    "competition",
    "consumption",
    "contact",
    "creation",
    "emotion",
    "motion",
    "perception",
    "possession",
    "social",
    "stative",
)
"""WordNet verb lexicographer files, less verb.weather (81 synsets)."""

MAN_SECTIONS = (
    ("commands", "1"),
    ("system calls", "2"),
    ("library functions", "3"),
    ("special files", "4"),
    ("file formats", "5"),
    ("overviews", "7"),
    ("administration", "8"),
)
MAX_PARAGRAPHS_PER_PAGE = 8
"""Long pages (proc(5) has hundreds of paragraphs) would otherwise fill a class."""


def _fields(part_of_speech: str, fields: tuple[str, ...]) -> tuple[TextClass, ...]:
    return tuple(
        TextClass(f"{part_of_speech}.{field}", (f"{part_of_speech}.{field}",)) for field in fields
    )


TEXT_TASK_SPECS: tuple[TextTaskSpec, ...] = (
    TextTaskSpec(
        name="fortune_topic",
        description="Topic of an English fortune cookie: 12 categories of Debian's fortunes "
        "(art, computers, drugs, ... work).",
        source="fortunes",
        classes=tuple(TextClass(topic, (topic,)) for topic in FORTUNE_TOPICS),
        per_class=SplitSizes(train=140, val=20, test=30),
        seed=2_001,
        apt_packages=(PKG_FORTUNES,),
    ),
    TextTaskSpec(
        name="wordnet_noun_sense",
        description="Semantic field of a noun sense from its WordNet gloss: 24 noun "
        "lexicographer files (noun.animal, noun.feeling, ...).",
        source="wordnet",
        classes=_fields("noun", NOUN_FIELDS),
        per_class=SplitSizes(train=200, val=30, test=60),
        seed=2_002,
        apt_packages=(PKG_WORDNET,),
    ),
    TextTaskSpec(
        name="man_section",
        description="Manual section of a man page paragraph (commands, system calls, library "
        "functions, special files, file formats, overviews, administration); split by page.",
        source="man_pages",
        classes=tuple(TextClass(name, (section,)) for name, section in MAN_SECTIONS),
        per_class=SplitSizes(train=100, val=20, test=40),
        seed=2_003,
        apt_packages=MAN_PAGE_PACKAGES,
        max_per_group=MAX_PARAGRAPHS_PER_PAGE,
    ),
    TextTaskSpec(
        name="fortune_language",
        description="Language of a fortune cookie: 10 languages in Latin and Cyrillic script "
        "(en, de, es, it, pt, pl, cs, ru, bg, eo) from Debian's fortunes-* packages.",
        source="fortunes",
        classes=tuple(TextClass(code, members) for code, members, _ in FORTUNE_LANGUAGES),
        per_class=SplitSizes(train=400, val=50, test=100),
        seed=2_004,
        apt_packages=tuple(
            dict.fromkeys(
                (PKG_FORTUNES, PKG_FORTUNES_MIN, *(pkg for _, _, pkg in FORTUNE_LANGUAGES))
            )
        ),
    ),
    TextTaskSpec(
        name="wordnet_verb_sense",
        description="Semantic field of a verb sense from its WordNet gloss: 14 verb "
        "lexicographer files (verb.motion, verb.emotion, ...); held out of multi-task training "
        "as the unseen text task (no training task sees verb glosses).",
        source="wordnet",
        classes=_fields("verb", VERB_FIELDS),
        per_class=SplitSizes(train=100, val=20, test=60),
        seed=2_005,
        apt_packages=(PKG_WORDNET,),
        held_out_of_stage2=True,
    ),
)
TEXT_SPECS_BY_NAME = {spec.name: spec for spec in TEXT_TASK_SPECS}
