"""Safetensors I/O for predicted weights: bytes or files, metadata, tied-weight aliases.

Tied tensors (a GPT-2 ``lm_head.weight`` that *is* ``transformer.wte.weight``) are written once,
following the Hugging Face convention; the alias is recorded in the metadata and restored by
:func:`load_state_dict`, so the loaded dict matches the model's ``state_dict()`` with
``strict=True``. ``safetensors.torch.load_model`` also handles such files.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import safetensors.torch
import torch

ALIASES_KEY = "tal.aliases"
HEADER_LENGTH_BYTES = 8


def _split_aliases(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in tensors.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor
    return unique, aliases


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialises tensors (aliases written once) with string metadata; same input, same bytes.

    ``format: pt`` is added so ``transformers``' ``from_pretrained`` accepts the file.
    """
    unique, aliases = _split_aliases(tensors)
    meta = {"format": "pt", **(metadata or {})}
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    blob = safetensors.torch.save({k: v.contiguous() for k, v in unique.items()}, metadata=meta)
    return _sort_metadata(blob)


def _sort_metadata(blob: bytes) -> bytes:
    """safetensors writes ``__metadata__`` from a hash map in arbitrary order; sort it in place.

    Only the order of the metadata keys changes, so the header keeps its length and the tensor
    offsets stay valid.
    """
    (length,) = struct.unpack("<Q", blob[:HEADER_LENGTH_BYTES])
    end = HEADER_LENGTH_BYTES + length
    header = json.loads(blob[HEADER_LENGTH_BYTES:end])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > length:  # formatting differs from the writer's: keep its bytes
        return blob
    # one copy of the tensor data (slicing bytes and then concatenating would make two)
    return b"".join((blob[:HEADER_LENGTH_BYTES], text.ljust(length), memoryview(blob)[end:]))


def write_atomic(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file in the same folder, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_file(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Atomically writes a safetensors file."""
    write_atomic(path, to_bytes(tensors, metadata))


def read_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (without reading the tensors)."""
    (length,) = struct.unpack("<Q", blob[:HEADER_LENGTH_BYTES])
    header = json.loads(blob[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])
    return header.get("__metadata__", {})


def load_state_dict(source: str | Path | bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Loads a file or blob written by :func:`to_bytes`; aliases are restored."""
    blob = source if isinstance(source, bytes) else Path(source).read_bytes()
    tensors = safetensors.torch.load(blob)
    metadata = read_metadata(blob)
    for alias, target in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[target]
    return tensors, metadata
