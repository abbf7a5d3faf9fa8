"""Parsing the Debian text sources, splitting and caching, on small fixture trees laid out
exactly as the packages install them (so no real package is needed here)."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from tal.tasks import TaskSourceMissingError
from tal.tasks.data import SPLITS, SplitSizes
from tal.tasks.text.build import build_fingerprint, load_text_task_raw, locate_sources
from tal.tasks.text.fortunes import parse_fortunes
from tal.tasks.text.man_pages import roff_paragraphs, unescape
from tal.tasks.text.sources import normalise_text
from tal.tasks.text.spec import TextClass, TextTaskSpec
from tal.tasks.text.splits import NotEnoughExamplesError
from tal.tasks.text.tokenizer import END_OF_TEXT_ID, gpt2_tokenizer
from tal.tasks.text.wordnet import LEXNAMES, parse_synset

FORTUNES = Path("usr/share/games/fortunes")
WORDNET = Path("usr/share/wordnet")
DPKG_INFO = Path("var/lib/dpkg/info")
MAN = Path("usr/share/man")

WORDNET_HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
)
WORDNET_LINE = "{offset:08d} {lexnum:02d} n 01 {word} 0 001 @ 00001740 n 0000 | {gloss}  \n"
NOUN_ANIMAL, NOUN_PLANT = LEXNAMES.index("noun.animal"), LEXNAMES.index("noun.plant")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _fortune_file(items: list[str]) -> str:
    return "\n%\n".join(items) + "\n%\n"


def _decode_rows(arrays: object) -> list[str]:
    tokenizer = gpt2_tokenizer()
    ids, lengths = arrays.input_ids, arrays.lengths  # type: ignore[attr-defined]
    return [tokenizer.decode(ids[i, : lengths[i]].tolist()) for i in range(len(lengths))]


# --- fortune files --------------------------------------------------------------------------


def test_parse_fortunes_splits_on_percent_lines_and_normalises() -> None:
    text = (
        "First\tfortune,\n   indented.   \n%\n\n%\n"
        "Second: *___\b\b\bnot* bold X\bX.\n\t\t-- Someone\n%   \nThird, unterminated"
    )
    assert parse_fortunes(text) == [
        "First fortune,\nindented.",
        "Second: *not* bold X.\n-- Someone",
        "Third, unterminated",
    ]


def test_normalise_text_keeps_single_blank_lines() -> None:
    assert normalise_text("  a  \n\n\n\n b\r\n\x1bc \x00") == "a\n\nb\nc"


def _fortune_tree(root: Path, per_topic: int = 12) -> None:
    for topic in ("cats", "dogs"):
        items = [f"A {topic} saying number {i} about {topic}." for i in range(per_topic)]
        items += ["Shared by both topics.", f"A {topic} saying number 0 about {topic}."]
        _write(root / FORTUNES / topic, _fortune_file(items))
        _write(root / FORTUNES / f"{topic}.dat", b"\x00\x00\x00\x02 index")
    _write(root / FORTUNES / "de" / "tiere", _fortune_file(["Ein Hund bellt.", "Die Katze."]))
    _write(root / FORTUNES / "de" / "tiere.dat", b"\x00index")
    _write(root / FORTUNES / "de" / "off" / "derb", _fortune_file(["Nicht lesen."]))


def _fortune_spec(
    per_class: SplitSizes, classes: tuple[TextClass, ...] | None = None
) -> TextTaskSpec:
    return TextTaskSpec(
        name="fixture_topics",
        description="fixture",
        source="fortunes",
        classes=classes or (TextClass("cats", ("cats",)), TextClass("dogs", ("dogs",))),
        per_class=per_class,
        seed=7,
        apt_packages=("fortunes",),
        max_tokens=16,
    )


def test_fortune_task_splits_are_balanced_distinct_and_cached(tmp_path: Path) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    _fortune_tree(root)
    spec = _fortune_spec(SplitSizes(train=8, val=1, test=3))
    splits = load_text_task_raw(spec, cache, root)
    seen: dict[str, str] = {}
    for split in SPLITS:
        arrays = splits[split]
        assert arrays.input_ids.shape == (spec.split_sizes[split], 16)
        assert arrays.input_ids.dtype == np.uint16
        assert np.bincount(arrays.labels, minlength=2).tolist() == [spec.per_class[split]] * 2
        for text, label in zip(_decode_rows(arrays), arrays.labels, strict=True):
            assert text not in seen, f"{text!r} in {seen.get(text)} and {split}"
            seen[text] = split
            assert "Shared by both" not in text, "a text under two labels is dropped"
            assert spec.classes[label].name in text
        padding = np.arange(16)[None, :] >= arrays.lengths[:, None]
        assert (arrays.input_ids[padding] == END_OF_TEXT_ID).all()
    assert len(list(cache.glob("fixture_topics-*.npz"))) == 1
    again = load_text_task_raw(spec, tmp_path / "other-cache", root)
    for split in SPLITS:
        assert np.array_equal(again[split].input_ids, splits[split].input_ids)
        assert np.array_equal(again[split].labels, splits[split].labels)


def test_changed_source_changes_the_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fortune_tree(root)
    spec = _fortune_spec(SplitSizes(train=8, val=1, test=3))
    before = build_fingerprint(spec, root, locate_sources(spec, root))
    cats = root / FORTUNES / "cats"
    cats.write_text(cats.read_text() + "One more about cats.\n%\n")
    assert build_fingerprint(spec, root, locate_sources(spec, root)) != before
    # where the tree lies does not matter, only what it holds
    moved = tmp_path / "moved"
    root.rename(moved)
    assert build_fingerprint(spec, moved, locate_sources(spec, moved)) != before


def test_fortune_folder_member_reads_its_files_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fortune_tree(root)
    spec = _fortune_spec(
        SplitSizes(train=1, val=0, test=1),
        classes=(TextClass("de", ("de",)), TextClass("cats", ("cats",))),
    )
    files = [f.path.name for f in locate_sources(spec, root) if f.label == 0]
    assert files == ["tiere"], "index files and sub-folders (de/off) are not read"


def test_too_few_examples_names_the_class(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fortune_tree(root, per_topic=3)
    with pytest.raises(NotEnoughExamplesError, match=r"'cats'.*10"):
        load_text_task_raw(_fortune_spec(SplitSizes(train=6, val=1, test=3)), tmp_path, root)


def test_missing_fortune_file_names_the_package(tmp_path: Path) -> None:
    spec = _fortune_spec(SplitSizes(train=1, val=1, test=1))
    with pytest.raises(TaskSourceMissingError, match="apt-get install -y fortunes"):
        locate_sources(spec, tmp_path)


# --- WordNet ----------------------------------------------------------------------------------


def test_parse_synset_reads_lexname_and_gloss() -> None:
    line = (
        "00015388 05 n 03 animal 0 animate_being 0 beast 0 002 @ 00004258 n 0000 ~ 01317541 n "
        '0000 | a living organism characterized by voluntary movement; "the animal moved"  '
    )
    synset = parse_synset(line)
    assert synset is not None and synset.lexname == "noun.animal"
    assert normalise_text(synset.gloss) == (
        'a living organism characterized by voluntary movement; "the animal moved"'
    )
    assert parse_synset(WORDNET_HEADER.splitlines()[0]) is None
    with pytest.raises(ValueError, match="not a WordNet synset line"):
        parse_synset("garbage without a gloss")


def _wordnet_tree(root: Path, per_field: int) -> None:
    lines = [WORDNET_HEADER]
    for i in range(per_field):
        lines.append(
            WORDNET_LINE.format(
                offset=100 + i, lexnum=NOUN_ANIMAL, word=f"beast{i}", gloss=f"an animal of kind {i}"
            )
        )
        lines.append(
            WORDNET_LINE.format(
                offset=500 + i,
                lexnum=NOUN_PLANT,
                word=f"herb{i}",
                gloss=f'a plant of kind {i}; "grows {i}"',
            )
        )
    _write(root / WORDNET / "data.noun", "".join(lines))


def test_wordnet_task_labels_glosses_by_lexicographer_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _wordnet_tree(root, per_field=6)
    spec = TextTaskSpec(
        name="fixture_nouns",
        description="fixture",
        source="wordnet",
        classes=(
            TextClass("noun.plant", ("noun.plant",)),
            TextClass("noun.animal", ("noun.animal",)),
        ),
        per_class=SplitSizes(train=3, val=1, test=2),
        seed=3,
        apt_packages=("wordnet-base",),
    )
    splits = load_text_task_raw(spec, tmp_path / "cache", root)
    for split in SPLITS:
        for text, label in zip(_decode_rows(splits[split]), splits[split].labels, strict=True):
            assert text.startswith(("a plant of kind", "an animal of kind")[label])
    with pytest.raises(ValueError, match=r"unknown WordNet lexicographer file 'noun\.unicorn'"):
        locate_sources(
            dataclasses.replace(
                spec, classes=(TextClass("x", ("noun.unicorn",)), TextClass("y", ("noun.plant",)))
            ),
            root,
        )
    with pytest.raises(TaskSourceMissingError, match="wordnet-base"):
        locate_sources(spec, tmp_path / "empty")


# --- man pages --------------------------------------------------------------------------------

PAGE_OPEN = r""".\" Copyright comment that must not appear
.TH OPEN 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
open, creat \- open and possibly create a file
.SH SYNOPSIS
.nf
.B #include <fcntl.h>
.BI "int open(const char *" pathname ", int " flags );
.fi
.SH DESCRIPTION
The
.BR open ()
system call opens the file specified by
.IR pathname .
If it does not exist, it may be created by
.BR creat (2)
when \fBO_CREAT\fP is given \(em see
.BR fcntl (2).
.PP
A second paragraph that says enough words \- to be kept as an example.
.PP
Too short.
.EX
int fd = open("x", O_RDONLY); /* code is not prose, however long this line is */
.EE
.SS Subsection heading
.TP
.B O_APPEND
The file is opened in append mode, and the offset is positioned at the end.
.SH SEE ALSO
.BR close (2),
.BR read (2),
and many more pages that are listed here.
"""
PAGE_LS = """.TH LS 1
.SH DESCRIPTION
List information about the FILEs (the current directory by default), sorted.
.PP
Mandatory arguments to long options are mandatory for short options too, always.
"""


def test_roff_paragraphs_keep_prose_only() -> None:
    paragraphs = roff_paragraphs(PAGE_OPEN)
    assert [heading for heading, _ in paragraphs] == ["DESCRIPTION"] * 3
    texts = [text for _, text in paragraphs]
    assert texts[0] == (
        "The open() system call opens the file specified by pathname. If it does not exist, "
        "it may be created by creat when O_CREAT is given \u2014 see fcntl."
    )
    assert texts[1] == "A second paragraph that says enough words - to be kept as an example."
    assert texts[2].startswith("O_APPEND The file is opened in append mode")
    joined = " ".join(texts)
    for absent in ("Copyright", "#include", "O_RDONLY", "Subsection", "close", "Too short", "(2)"):
        assert absent not in joined


def test_unescape_resolves_fonts_and_named_characters() -> None:
    assert unescape(r"\fBbold\fR and \fIit\fP \(lqq\(rq \[em] a\-b \e \*(lq\&.") == (
        "bold and it \u201cq\u201d \u2014 a-b \\ ."
    )


def _man_tree(root: Path, excluded: bool = False) -> None:
    pages = {
        "/usr/share/man/man2/open.2.gz": PAGE_OPEN,
        "/usr/share/man/man2/creat.2.gz": ".so man2/open.2\n",
        "/usr/share/man/man1/ls.1.gz": PAGE_LS,
        "/usr/share/man/de/man1/ls.1.gz": PAGE_LS.replace("List", "Auflisten"),
    }
    for path, source in pages.items():
        if not excluded:
            _write(root / path.lstrip("/"), gzip.compress(source.encode()))
    alias = root / "usr/share/man/man2/openat.2.gz"
    if not excluded:
        alias.symlink_to("open.2.gz")
    listing = ["/.", "/usr", "/usr/share/man/man2", *pages, "/usr/share/man/man2/openat.2.gz"]
    _write(root / DPKG_INFO / "manpages-fixture:amd64.list", "\n".join(listing) + "\n")


def _man_spec(per_class: SplitSizes) -> TextTaskSpec:
    return TextTaskSpec(
        name="fixture_man",
        description="fixture",
        source="man_pages",
        classes=(TextClass("commands", ("1",)), TextClass("system calls", ("2",))),
        per_class=per_class,
        seed=5,
        apt_packages=("manpages-fixture",),
        max_per_group=3,
    )


def test_man_pages_are_read_from_dpkg_lists_without_aliases(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _man_tree(root)
    files = locate_sources(_man_spec(SplitSizes(1, 0, 1)), root)
    assert sorted(str(f.path.relative_to(root)) for f in files) == [
        "usr/share/man/man1/ls.1.gz",
        "usr/share/man/man2/creat.2.gz",
        "usr/share/man/man2/open.2.gz",
    ], "symlinks and translated pages are not read"
    assert {f.group for f in files} == {
        "manpages-fixture:ls.1.gz",
        "manpages-fixture:creat.2.gz",
        "manpages-fixture:open.2.gz",
    }
    # one page per class: train takes a page, test the other would need a second page
    with pytest.raises(NotEnoughExamplesError, match="at most 3 per group"):
        load_text_task_raw(_man_spec(SplitSizes(1, 0, 1)), tmp_path / "cache", root)
    splits = load_text_task_raw(_man_spec(SplitSizes(0, 0, 2)), tmp_path / "cache", root)
    texts = _decode_rows(splits["test"])
    assert len(texts) == 4 and any(t.startswith("List information") for t in texts)
    assert not any("Auflisten" in t for t in texts)


def test_excluded_man_pages_are_reported(tmp_path: Path) -> None:
    _man_tree(tmp_path, excluded=True)
    with pytest.raises(TaskSourceMissingError, match=r"path-exclude.*manpages-fixture"):
        locate_sources(_man_spec(SplitSizes(1, 0, 1)), tmp_path)
    with pytest.raises(TaskSourceMissingError, match="apt-get install -y manpages-fixture"):
        locate_sources(_man_spec(SplitSizes(1, 0, 1)), tmp_path / "no-dpkg")
