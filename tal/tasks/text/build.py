"""Build a text task of the suite from its Debian source files, and cache it on disk.

A built task is every split's token ids, lengths and labels, saved as one .npz whose name
carries a fingerprint of everything that determines it: the spec (not its description), the
builder version, GPT-2's tokenizer files and library version, and the bytes of every source
file read. So a changed package version builds anew, and an unchanged one loads in
milliseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import load_npz_arrays, save_npz_atomic
from ..data import SPLITS
from .fortunes import locate_fortunes, read_fortunes
from .man_pages import locate_man_pages, read_man_pages
from .sources import SourceFile, SourceText
from .spec import SourceKind, TextTaskSpec
from .splits import balanced_splits
from .tokenizer import END_OF_TEXT_ID, gpt2_tokenizer, tokenizer_fingerprint
from .wordnet import locate_wordnet, read_wordnet

BUILDER_VERSION = 1
"""Bump when parsing, splitting or tokenising changes the data; invalidates caches."""
CACHE_KEY_CHARS = 16
"""Hex digits of the fingerprint used in a cache file name."""
TOKEN_DTYPE = np.uint16
"""On-disk dtype of token ids (GPT-2's 50,257 ids fit)."""
ARRAY_KEYS = ("input_ids", "lengths", "labels")

Locator = Callable[[Path, Sequence[Sequence[str]], Sequence[str]], list[SourceFile]]
Reader = Callable[[Sequence[SourceFile], Sequence[Sequence[str]]], list[SourceText]]


@dataclass(frozen=True)
class TextSourceReader:
    """How one kind of source finds its files and reads labelled texts from them."""

    locate: Locator
    read: Reader


SOURCE_READERS: dict[SourceKind, TextSourceReader] = {
    "fortunes": TextSourceReader(locate_fortunes, read_fortunes),
    "wordnet": TextSourceReader(locate_wordnet, read_wordnet),
    "man_pages": TextSourceReader(locate_man_pages, read_man_pages),
}


@dataclass(frozen=True)
class TextSplitArrays:
    """One split as stored: ``input_ids`` uint16 ``(N, L)`` padded with 50256, ``lengths`` and
    ``labels`` int64 ``(N,)``."""

    input_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray


def encode_padded(texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise ``texts`` with GPT-2's BPE, truncate to ``max_tokens`` and pad with 50256.

    Returns ``input_ids`` int64 ``(N, max_tokens)`` and ``lengths`` int64 ``(N,)``.
    """
    encoded = [e.ids[:max_tokens] for e in gpt2_tokenizer().encode_batch(list(texts))]
    return pad_token_rows(encoded, max_tokens)


def pad_token_rows(rows: Sequence[Sequence[int]], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of at most ``max_tokens`` ids -> int64 ``(N, max_tokens)`` padded with 50256, and
    their int64 lengths ``(N,)``."""
    ids = np.full((len(rows), max_tokens), END_OF_TEXT_ID, dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return ids, lengths


def _encode_ids(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in gpt2_tokenizer().encode_batch(texts)]


def locate_sources(spec: TextTaskSpec, root: Path) -> list[SourceFile]:
    """The files ``spec`` reads under ``root``; ``TaskSourceMissingError`` if any is missing."""
    members = [c.members for c in spec.classes]
    return SOURCE_READERS[spec.source].locate(root, members, spec.apt_packages)


def build_fingerprint(spec: TextTaskSpec, root: Path, files: Sequence[SourceFile]) -> str:
    """sha256 over all that determines the built arrays (see the module docstring)."""
    digest = hashlib.sha256()
    payload = {
        "builder_version": BUILDER_VERSION,
        "spec": {k: v for k, v in dataclasses.asdict(spec).items() if k != "description"},
        "tokenizer": tokenizer_fingerprint(),
    }
    digest.update(json.dumps(payload, sort_keys=True, default=str).encode())
    for file in files:
        relative = file.path.relative_to(root) if file.path.is_relative_to(root) else file.path
        content = hashlib.sha256(file.path.read_bytes()).hexdigest()
        entry = [str(relative), file.label, file.group, content]
        digest.update(json.dumps(entry).encode())
    return digest.hexdigest()


def generate_text_task(
    spec: TextTaskSpec, root: Path, files: Sequence[SourceFile]
) -> dict[str, TextSplitArrays]:
    """Read, de-duplicate, split and tokenise a task (no cache)."""
    members = [c.members for c in spec.classes]
    examples = SOURCE_READERS[spec.source].read(files, members)
    chosen = balanced_splits(
        examples,
        spec.class_names,
        spec.per_class,
        spec.seed,
        _encode_ids,
        spec.max_tokens,
        spec.max_per_group,
    )
    splits: dict[str, TextSplitArrays] = {}
    for split in SPLITS:
        ids, lengths = pad_token_rows([e.ids for e in chosen[split]], spec.max_tokens)
        labels = np.array([e.label for e in chosen[split]], dtype=np.int64)
        splits[split] = TextSplitArrays(ids.astype(TOKEN_DTYPE), lengths, labels)
    return splits


def cache_path(spec: TextTaskSpec, cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / f"{spec.name}-{fingerprint[:CACHE_KEY_CHARS]}.npz"


def load_text_task_raw(
    spec: TextTaskSpec, cache_dir: Path, root: Path
) -> dict[str, TextSplitArrays]:
    """All splits of a text task, from the cache when present, else built and cached.

    Raises ``TaskSourceMissingError`` (naming the apt packages) when source files are missing.
    """
    files = locate_sources(spec, root)
    path = cache_path(spec, cache_dir, build_fingerprint(spec, root, files))
    cached = load_npz_arrays(path)
    if cached is not None and all(f"{s}_{k}" in cached for s in SPLITS for k in ARRAY_KEYS):
        return {s: TextSplitArrays(*(cached[f"{s}_{k}"] for k in ARRAY_KEYS)) for s in SPLITS}
    splits = generate_text_task(spec, root, files)
    arrays = {
        f"{split}_{key}": getattr(data, key) for split, data in splits.items() for key in ARRAY_KEYS
    }
    save_npz_atomic(path, arrays)
    return splits
