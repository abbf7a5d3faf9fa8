"""Users' labelled text files (JSONL, CSV, TSV): loading, and every refusal of a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tal.tasks import TextDataError, TextTaskData, load_text_file
from tal.tasks.text import user_data
from tal.tasks.text.tokenizer import END_OF_TEXT_ID


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_jsonl_with_string_labels(tmp_path: Path) -> None:
    file = _jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"text": "Hello world", "label": "positive", "id": 1},
            {"text": "awful, just awful", "label": "negative"},
            {"text": "fine", "label": "neutral"},
            {"text": "Hello world again", "label": "positive"},
        ],
    )
    data = load_text_file(file, max_tokens=8)
    assert isinstance(data, TextTaskData)
    assert data.class_names == ("negative", "neutral", "positive")
    assert data.labels.tolist() == [2, 0, 1, 2]
    assert data.input_ids.shape == (4, 8) and data.input_ids.dtype == torch.int64
    assert data.input_ids[0, :2].tolist() == [15496, 995]
    assert data.lengths[0] == 2
    assert (data.input_ids[0, 2:] == END_OF_TEXT_ID).all()
    assert data.name == "reviews" and data.num_classes == 3
    assert load_text_file(file, limit=2).labels.tolist() == [2, 0]


def test_csv_with_quotes_bom_and_numeric_labels(tmp_path: Path) -> None:
    file = tmp_path / "data.csv"
    file.write_bytes(
        '\ufefflabel,text\n10,"a text, with a comma\nand a line break"\n9,plain\n10,x\n'.encode()
    )
    data = load_text_file(file, max_tokens=4)
    assert data.class_names == ("9", "10"), "integer labels sort numerically"
    assert data.labels.tolist() == [1, 0, 1]
    assert data.lengths[0] == 4, "long texts are truncated to max_tokens"


def test_tsv_and_integer_jsonl_labels(tmp_path: Path) -> None:
    tsv = tmp_path / "data.tsv"
    tsv.write_text("text\tlabel\nbonjour\tfr\nhello\ten\n", encoding="utf-8")
    assert load_text_file(tsv).class_names == ("en", "fr")
    ints = _jsonl(tmp_path / "ints.jsonl", [{"text": "a", "label": 2}, {"text": "b", "label": 0}])
    data = load_text_file(ints)
    assert data.class_names == ("0", "2") and data.labels.tolist() == [1, 0]


def _refused(path: Path, match: str) -> None:
    with pytest.raises(TextDataError, match=match):
        load_text_file(path)


def test_refuses_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    _refused(tmp_path / "empty.jsonl", "holds no example")
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    _refused(tmp_path / "blank.jsonl", "holds no example")
    (tmp_path / "header.csv").write_text("text,label\n")
    _refused(tmp_path / "header.csv", "holds no example")
    (tmp_path / "empty.csv").write_bytes(b"")
    _refused(tmp_path / "empty.csv", "holds no example")


def test_refuses_a_single_class(tmp_path: Path) -> None:
    file = _jsonl(tmp_path / "one.jsonl", [{"text": t, "label": "spam"} for t in "abc"])
    _refused(file, "every example has the label 'spam'.*at least 2 classes")


def test_refuses_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "latin1.csv"
    file.write_bytes("text,label\ncaf\u00e9,a\nthe,b\n".encode("latin-1"))
    _refused(file, r"not UTF-8 text: byte 0xe9 at offset 14 \(line 2\).*save the file as UTF-8")


def test_refuses_missing_fields_and_columns(tmp_path: Path) -> None:
    file = _jsonl(
        tmp_path / "f.jsonl", [{"text": "a", "label": "x"}, {"sentence": "b", "label": "y"}]
    )
    _refused(file, r"line 2 lacks field\(s\) 'text'; it has 'sentence', 'label'")
    csv_file = tmp_path / "f.csv"
    csv_file.write_text("sentence,label\na,x\n")
    _refused(csv_file, r"header row lacks column\(s\) 'text'; it has 'sentence', 'label'")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\na,x\nb,c,y\n")
    _refused(ragged, "row 3 has 3 cells but the header has 2 columns")


def test_refuses_empty_texts_and_labels(tmp_path: Path) -> None:
    file = _jsonl(tmp_path / "e.jsonl", [{"text": "a", "label": "x"}, {"text": "  ", "label": "y"}])
    _refused(file, "line 2: the text is empty")
    csv_file = tmp_path / "e.csv"
    csv_file.write_text("text,label\na,x\nb,\n")
    _refused(csv_file, "row 3: the label is empty")


def test_refuses_malformed_records(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b",\n')
    _refused(tmp_path / "bad.jsonl", "line 2 is not valid JSON")
    _refused(_jsonl(tmp_path / "list.jsonl", [["a", "x"]]), "line 1 must be a JSON object")
    _refused(
        _jsonl(tmp_path / "bool.jsonl", [{"text": "a", "label": True}]),
        "'label' must be a string or an integer, got true",
    )
    _refused(_jsonl(tmp_path / "num.jsonl", [{"text": 3, "label": "x"}]), "'text' must be a string")
    mixed = _jsonl(
        tmp_path / "mixed.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "1"}]
    )
    _refused(mixed, "labels mix integers and strings")
    (tmp_path / "data.txt").write_text("text,label\na,b\n")
    _refused(tmp_path / "data.txt", r"unknown file type '.txt'; use one of .csv, .jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_file(tmp_path / "absent.jsonl")


def test_refuses_oversize_files_rows_and_texts(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as handle:  # sparse: the size check comes before any read
        handle.truncate(user_data.MAX_TEXT_FILE_BYTES + 1)
    _refused(big, "MiB; the limit is 64 MiB")

    many = tmp_path / "many.csv"
    many.write_text("text,label\n" + "t,a\nu,b\n" * (user_data.MAX_TEXT_ROWS // 2) + "v,a\n")
    _refused(many, f"more than {user_data.MAX_TEXT_ROWS} examples")

    long_text = "word " * (user_data.MAX_TEXT_CHARS // 5) + "x"
    file = _jsonl(
        tmp_path / "long.jsonl", [{"text": "a", "label": "x"}, {"text": long_text, "label": "y"}]
    )
    _refused(file, f"line 2: the text has {len(long_text)} characters, over the limit")
