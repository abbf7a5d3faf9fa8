"""Paragraphs of man pages, labelled by manual section, read from named Debian packages.

Only pages that dpkg lists for the given packages are read (``/var/lib/dpkg/info/PKG.list``),
so the data depend on those packages' versions, not on whatever else is installed. Aliases
(symbolic links and ``.so`` pages) are skipped. The roff source is turned into plain-text
paragraphs by a small renderer (no groff): prose only; code blocks (``.nf``/``.EX``), tables
and the NAME, SYNOPSIS, SEE ALSO and credits sections are left out, and the section numbers of
cross-references (``open(2)`` -> ``open``) are removed, since they would name the label.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import TaskSourceMissingError
from .sources import SourceFile, SourceText, normalise_text, under_root

DPKG_INFO_DIR = Path("/var/lib/dpkg/info")
MAN_PAGE_PATH = re.compile(r"^/usr/share/man/man(?P<section>[1-9])/[^/]+$")
"""Pages of the untranslated manual; ``section`` is the label's source."""
ALIAS_REQUEST = ".so "
MIN_PARAGRAPH_WORDS = 8
"""Shorter paragraphs (headings, one-line notes such as 'POSIX.1-2008.') are dropped."""
SKIPPED_SECTIONS = frozenset(
    {
        "NAME",
        "SYNOPSIS",
        "LIBRARY",
        "SEE ALSO",
        "COLOPHON",
        "AUTHOR",
        "AUTHORS",
        "COPYRIGHT",
        "REPORTING BUGS",
        "AVAILABILITY",
    }
)

# Requests that end a paragraph (their arguments are not text).
BREAK_REQUESTS = frozenset(
    {"PP", "LP", "P", "IP", "TP", "TQ", "HP", "RS", "RE", "sp", "SS", "in", "ti", "PD", "bp"}
)
# Font macros: the arguments are text, joined with spaces (first set) or without (second).
SPACED_FONT_MACROS = frozenset({"B", "I", "SM", "SB"})
ALTERNATING_FONT_MACROS = frozenset({"BR", "BI", "IB", "IR", "RB", "RI"})
# Blocks whose lines are not prose: start request -> end request.
SKIPPED_BLOCKS = {"nf": "fi", "EX": "EE", "TS": "TE", "EQ": "EN", "de": ".", "ig": ".", "PS": "PE"}
LINK_END_MACROS = frozenset({"UE", "ME"})
"""End of a link (``.UR url``/``.MT address`` ... ``.UE``): its arguments are trailing text;
the address itself is dropped."""
MAN_REFERENCE_MACRO = "MR"

NAMED_CHARACTERS = {
    "em": "\u2014",
    "en": "\u2013",
    "hy": "-",
    "mi": "-",
    "aq": "'",
    "dq": '"',
    "lq": "\u201c",
    "rq": "\u201d",
    "oq": "\u2018",
    "cq": "\u2019",
    "bu": "\u2022",
    "co": "\u00a9",
    "rg": "\u00ae",
    "tm": "\u2122",
    "ti": "~",
    "ha": "^",
    "rs": "\\",
    "sl": "/",
    "ba": "|",
    "at": "@",
    "sh": "#",
    "Do": "$",
    "pl": "+",
    "eq": "=",
    "mu": "\u00d7",
    "di": "\u00f7",
    "+-": "\u00b1",
    "<=": "\u2264",
    ">=": "\u2265",
    "!=": "\u2260",
    "->": "\u2192",
    "<-": "\u2190",
    "de": "\u00b0",
    "dg": "\u2020",
    "Fo": "\u00ab",
    "Fc": "\u00bb",
    "lB": "[",
    "rB": "]",
    "lC": "{",
    "rC": "}",
    "la": "\u27e8",
    "ra": "\u27e9",
}
SIMPLE_ESCAPES = {
    "-": "-",
    "e": "\\",
    "\\": "\\",
    " ": " ",
    "~": " ",
    "0": " ",
    "'": "'",
    "`": "`",
    ".": ".",
}
"""Single-character escapes that print something; every other one prints nothing."""

_ESCAPE = re.compile(
    r"""\\(?:
        [fF](?:\[[^\]]*\]|\(..|.)                 # font change
      | s(?:[+-]?\d|\[[^\]]*\]|[+-]?\(\d\d)        # size change
      | [*gkmnY][+-]?(?:\[[^\]]*\]|\(..|.)         # strings, registers, colours
      | [hvwlLDXZobHSxNCRA]'[^']*'                 # escapes with a quoted argument
      | \((?P<named2>..)                           # \(em
      | \[(?P<named>[^\]]*)\]                      # \[em]
      | (?P<simple>.)
    )""",
    re.VERBOSE,
)
_COMMENT = re.compile(r'\\["#].*$')
_CROSS_REFERENCE = re.compile(r"\b([A-Za-z_][\w.:+\-]*)\(\d[A-Za-z+]*\)")


def unescape(text: str) -> str:
    """Plain text of a roff text fragment: comments dropped, escapes resolved or removed."""

    def replace(match: re.Match[str]) -> str:
        named = match.group("named2") or match.group("named")
        if named is not None:
            return NAMED_CHARACTERS.get(named, "")
        simple = match.group("simple")
        return SIMPLE_ESCAPES.get(simple, "") if simple is not None else ""

    return _ESCAPE.sub(replace, _COMMENT.sub("", text))


def split_arguments(text: str) -> list[str]:
    """A request's arguments: blank-separated, double quotes group (``""`` is a quote)."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n:
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            args.append("".join(chars))
        else:
            start = i
            while i < n and text[i] not in " \t":
                i += 1
            args.append(text[start:i])
    return args


def roff_paragraphs(source: str) -> list[tuple[str, str]]:
    """``(section heading, paragraph text)`` for every prose paragraph of a man page.

    Paragraphs of ``SKIPPED_SECTIONS`` and those under ``MIN_PARAGRAPH_WORDS`` words are left
    out; cross-reference section numbers are removed.
    """
    paragraphs: list[tuple[str, str]] = []
    heading = ""
    current: list[str] = []
    block_end: str | None = None

    def flush() -> None:
        text = _CROSS_REFERENCE.sub(r"\1", normalise_text(" ".join(current)))
        current.clear()
        if heading not in SKIPPED_SECTIONS and len(text.split()) >= MIN_PARAGRAPH_WORDS:
            paragraphs.append((heading, text))

    lines = source.replace("\\\n", "").split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if block_end is not None:
            if line.startswith(("." + block_end, "'" + block_end)) or (
                block_end == "." and line.strip() == ".."
            ):
                block_end = None
            continue
        if not line.startswith((".", "'")):
            if line.strip():
                current.append(unescape(line))
            else:
                flush()
            continue
        request, _, rest = line[1:].strip().partition(" ")
        if not request or request.startswith(('\\"', "\\#")):
            continue
        args = [unescape(arg) for arg in split_arguments(rest)]
        if request == "SH":
            flush()
            if not args and index < len(lines):
                args, index = [unescape(lines[index])], index + 1
            heading = " ".join(args).strip().upper()
        elif request in BREAK_REQUESTS:
            flush()
        elif request in SKIPPED_BLOCKS:
            block_end = SKIPPED_BLOCKS[request]
        elif request in SPACED_FONT_MACROS:
            current.append(" ".join(args))
        elif request in ALTERNATING_FONT_MACROS:
            current.append("".join(args))
        elif request == MAN_REFERENCE_MACRO and args:
            current.append(args[0] + "".join(args[2:]))
        elif request in LINK_END_MACROS:
            current.append("".join(args))
        elif request == "br":
            current.append(" ")
    flush()
    return paragraphs


def read_man_source(path: Path) -> str:
    """The roff text of a man page file (gzip-compressed or not)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def dpkg_list_files(root: Path, package: str) -> list[Path]:
    """dpkg's file lists of ``package`` (``PKG.list`` or, multi-arch, ``PKG:ARCH.list``)."""
    directory = under_root(root, DPKG_INFO_DIR)
    candidates = (directory / f"{package}.list", *directory.glob(f"{package}:*.list"))
    return sorted(path for path in candidates if path.is_file())


def package_man_pages(root: Path, package: str) -> list[tuple[int, Path]]:
    """``(section, path)`` of every man page file ``package`` installs, aliases excluded.

    Raises ``TaskSourceMissingError`` if dpkg does not know the package, or if it lists man
    pages none of which are on disk (``path-exclude`` in /etc/dpkg/dpkg.cfg.d drops them).
    """
    lists = dpkg_list_files(root, package)
    if not lists:
        raise TaskSourceMissingError(
            f"Debian package {package} (its dpkg file list)",
            [str(under_root(root, DPKG_INFO_DIR))],
            [package],
        )
    listed: list[tuple[int, str]] = []
    for list_file in lists:
        for entry in list_file.read_text(encoding="utf-8", errors="replace").split("\n"):
            match = MAN_PAGE_PATH.match(entry.strip())
            if match:
                listed.append((int(match.group("section")), entry.strip()))
    pages: list[tuple[int, Path]] = []
    present = 0
    for section, entry in sorted(set(listed)):
        path = under_root(root, entry)
        if path.is_symlink() or not path.is_file():
            present += path.is_symlink()
            continue
        present += 1
        pages.append((section, path))
    if listed and not present:
        raise TaskSourceMissingError(
            f"the man pages of {package} ({len(listed)} listed by dpkg, none on disk; a "
            "dpkg path-exclude rule may drop /usr/share/man)",
            [str(under_root(root, "/usr/share/man"))],
            [package],
        )
    return pages


def locate_man_pages(
    root: Path, classes: Sequence[Sequence[str]], apt_packages: Sequence[str]
) -> list[SourceFile]:
    """Every man page file of ``apt_packages`` whose section is in ``classes[i]`` (section
    numbers as strings), labelled ``i`` and grouped by page (aliases included: ``read``
    skips them)."""
    label_of = {int(section): label for label, members in enumerate(classes) for section in members}
    return [
        SourceFile(path, label_of[section], f"{package}:{path.name}")
        for package in apt_packages
        for section, path in package_man_pages(root, package)
        if section in label_of
    ]


def read_man_pages(
    files: Sequence[SourceFile], classes: Sequence[Sequence[str]]
) -> list[SourceText]:
    """The prose paragraphs of every located page that is not a ``.so`` alias."""
    del classes  # each file carries its label
    examples: list[SourceText] = []
    for file in files:
        source = read_man_source(file.path)
        if source.lstrip().startswith(ALIAS_REQUEST):
            continue
        examples.extend(
            SourceText(text, file.label, file.group) for _, text in roff_paragraphs(source)
        )
    return examples
