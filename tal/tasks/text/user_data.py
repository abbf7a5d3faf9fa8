"""The user's own labelled text: a JSONL or CSV file of ``{text, label}`` -> ``TextTaskData``.

JSONL (``.jsonl``/``.ndjson``): one JSON object per line, e.g.
``{"text": "great film", "label": "positive"}``; blank lines are skipped. CSV (``.csv``, or
``.tsv`` tab-separated): a header row naming the columns, then one row per example. Labels
may be strings or integers; the classes are the distinct labels in sorted order (numeric
order when every label is an integer) and their names are kept. Every refusal is a
``TextDataError`` (a ``ValueError``) that says what to fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .build import encode_padded
from .data import TEXT_MAX_TOKENS, TextTaskData

MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024
"""Largest accepted file (64 MiB)."""
MAX_TEXT_ROWS = 200_000
"""Most examples in one file."""
MAX_TEXT_CHARS = 20_000
"""Longest accepted text, in characters (a text is truncated to ``max_tokens`` tokens, so
longer ones are almost surely a broken file, e.g. a missing closing quote in a CSV)."""
MIN_CLASSES = 2
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
TEXT_FIELD = "text"
LABEL_FIELD = "label"
PathLike = str | os.PathLike[str]


class TextDataError(ValueError):
    """A user's text file cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class _Row:
    text: str
    label: str | int
    where: str
    """``line N`` (JSONL) or ``row N`` (CSV), for messages."""


def _decode(file: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TextDataError(
            f"{file} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}) cannot be decoded; save the file as UTF-8"
        ) from None


def _jsonl_rows(file: Path, text: str, text_field: str, label_field: str) -> Iterator[_Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextDataError(f"{file} {where} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise TextDataError(
                f"{file} {where} must be a JSON object like "
                f'{{"{text_field}": "...", "{label_field}": "..."}}, got {type(record).__name__}'
            )
        missing = [f for f in (text_field, label_field) if f not in record]
        if missing:
            raise TextDataError(
                f"{file} {where} lacks field(s) {', '.join(repr(f) for f in missing)}; it has "
                f"{', '.join(repr(k) for k in record) or 'no fields'}"
            )
        value, label = record[text_field], record[label_field]
        if not isinstance(value, str):
            raise TextDataError(
                f"{file} {where}: {text_field!r} must be a string, got {type(value).__name__}"
            )
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise TextDataError(
                f"{file} {where}: {label_field!r} must be a string or an integer, got "
                f"{json.dumps(label)}"
            )
        yield _Row(value, label, where)


def _csv_rows(
    file: Path, text: str, delimiter: str, text_field: str, label_field: str
) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        missing = [f for f in (text_field, label_field) if f not in columns]
        if missing:
            raise TextDataError(
                f"{file}: the header row lacks column(s) {', '.join(repr(f) for f in missing)}; "
                f"it has {', '.join(repr(c) for c in columns)} (the first row must name the "
                "columns)"
            )
        text_index, label_index = columns.index(text_field), columns.index(label_field)
        for cells in reader:
            where = f"row {reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(columns):
                raise TextDataError(
                    f"{file} {where} has {len(cells)} cells but the header has {len(columns)} "
                    "columns (quote texts that contain the delimiter)"
                )
            yield _Row(cells[text_index], cells[label_index].strip(), where)
    except csv.Error as exc:
        raise TextDataError(f"{file} line {reader.line_num}: malformed CSV ({exc})") from None


def _class_order(labels: list[str | int]) -> list[str | int]:
    distinct = set(labels)
    if any(isinstance(label, int) for label in distinct):
        if not all(isinstance(label, int) for label in distinct):
            raise TextDataError("labels mix integers and strings; use one kind for every example")
        return sorted(distinct)
    if all(str(label).lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=lambda label: int(label))
    return sorted(distinct, key=str)


def load_text_file(
    path: PathLike,
    max_tokens: int = TEXT_MAX_TOKENS,
    limit: int | None = None,
    text_field: str = TEXT_FIELD,
    label_field: str = LABEL_FIELD,
) -> TextTaskData:
    """Load labelled texts from a JSONL or CSV file and tokenise them with GPT-2's BPE.

    Args:
        path: a ``.jsonl``/``.ndjson``, ``.csv`` or ``.tsv`` file, UTF-8 encoded.
        max_tokens: tokens kept per text (longer texts are truncated); the padded length.
        limit: keep only the first ``limit`` examples.
        text_field, label_field: the names of the text and label fields or columns.

    Returns:
        ``TextTaskData`` with ``input_ids`` int64 ``(N, max_tokens)`` padded with 50256,
        ``lengths`` and ``labels`` int64 ``(N,)``, and the sorted label names as
        ``class_names``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TextDataError: an unknown suffix, a file over ``MAX_TEXT_FILE_BYTES`` or with more than
            ``MAX_TEXT_ROWS`` examples, bytes that are not UTF-8, malformed rows, missing fields
            or columns, an empty text or label, a text over ``MAX_TEXT_CHARS`` characters, no
            example, or fewer than two classes.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"text file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix not in JSONL_SUFFIXES and suffix not in CSV_DELIMITERS:
        known = ", ".join(sorted(JSONL_SUFFIXES | set(CSV_DELIMITERS)))
        raise TextDataError(f"{file}: unknown file type {suffix or '(none)'!r}; use one of {known}")
    size = file.stat().st_size
    if size > MAX_TEXT_FILE_BYTES:
        raise TextDataError(
            f"{file} is {size / 2**20:.1f} MiB; the limit is {MAX_TEXT_FILE_BYTES // 2**20} MiB "
            "(split the file or keep fewer examples)"
        )
    text = _decode(file, file.read_bytes())
    if suffix in JSONL_SUFFIXES:
        rows_iter = _jsonl_rows(file, text, text_field, label_field)
    else:
        rows_iter = _csv_rows(file, text, CSV_DELIMITERS[suffix], text_field, label_field)
    rows: list[_Row] = []
    for row in rows_iter:
        if len(rows) == MAX_TEXT_ROWS:
            raise TextDataError(
                f"{file} has more than {MAX_TEXT_ROWS} examples; keep at most {MAX_TEXT_ROWS}"
            )
        if not row.text.strip():
            raise TextDataError(f"{file} {row.where}: the text is empty; remove the row")
        if len(row.text) > MAX_TEXT_CHARS:
            raise TextDataError(
                f"{file} {row.where}: the text has {len(row.text)} characters, over the limit "
                f"of {MAX_TEXT_CHARS}; shorten it (only the first {max_tokens} tokens are used)"
            )
        if isinstance(row.label, str) and not row.label.strip():
            raise TextDataError(f"{file} {row.where}: the label is empty")
        rows.append(row)
    if not rows:
        raise TextDataError(
            f"{file} holds no example; expected {text_field!r} and {label_field!r} per row"
        )
    classes = _class_order([row.label for row in rows])
    if len(classes) < MIN_CLASSES:
        raise TextDataError(
            f"{file}: every example has the label {classes[0]!r}; a classification task needs "
            f"at least {MIN_CLASSES} classes"
        )
    if limit is not None:
        rows = rows[:limit]
    index = {label: i for i, label in enumerate(classes)}
    input_ids, lengths = encode_padded([row.text for row in rows], max_tokens)
    return TextTaskData(
        input_ids=torch.from_numpy(input_ids),
        lengths=torch.from_numpy(lengths),
        labels=torch.tensor([index[row.label] for row in rows], dtype=torch.int64),
        num_classes=len(classes),
        class_names=tuple(str(label) for label in classes),
        name=file.stem,
    )
