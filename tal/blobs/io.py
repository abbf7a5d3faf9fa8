"""Safetensors I/O on :mod:`tal.blobs.layout`: :func:`pack` tensors into a blob, blobs to bytes
and files, files and blobs back to tensors.

Tied tensors (a GPT-2 ``lm_head.weight`` that *is* ``transformer.wte.weight``) are written once,
following the Hugging Face convention; the alias is recorded in the metadata and restored by
:func:`load_state_dict`, so the loaded dict matches the model's ``state_dict()`` with
``strict=True``. ``safetensors.torch.load_model`` also handles such files.

Copies: :func:`pack` copies each stored tensor once, straight into the blob (cast there when a
dtype is given); :func:`save_file` writes that buffer without making bytes of it;
:func:`to_bytes` copies it once more into ``bytes``; :func:`load_state_dict` reads a file into
one buffer and returns views of it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tal.blobs.layout import (
    ALIASES_KEY,
    Blob,
    BlobFormatError,
    Entry,
    Layout,
    aligned_order,
    plan_layout,
)
from tal.blobs.memory import read_into_new_buffer
from tal.blobs.reader import BytesLike, read_state_dict
from tal.blobs.reader import read_metadata as _read_metadata

__all__ = [
    "ALIASES_KEY",
    "load_state_dict",
    "pack",
    "read_metadata",
    "save_file",
    "to_bytes",
    "write_atomic",
]


def _split_aliases(
    tensors: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Stored tensors and ``{alias: stored name}``: a name is an alias when its tensor is the
    same memory viewed the same way (pointer, shape, strides, dtype, device) as an earlier
    one's."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in tensors.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype, tensor.device)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor
    return unique, aliases


def _plan(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None,
    dtype: torch.dtype | None,
) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The layout of the stored tensors (aliases split off) and those tensors."""
    unique, aliases = _split_aliases(tensors)
    entries = [Entry(name, dtype or t.dtype, tuple(t.shape)) for name, t in unique.items()]
    return plan_layout(aligned_order(entries), metadata, aliases), unique


def pack(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Blob:
    """A :class:`Blob` holding ``tensors`` (aliases written once) and ``metadata``.

    Each stored tensor is copied once into the blob's buffer, from any device, cast to
    ``dtype`` on the way when given. Tensors are laid out in the given order, larger items
    first when dtypes are mixed. Send or cache ``blob.memoryview()``.
    """
    layout, unique = _plan(tensors, metadata, dtype)
    blob = layout.allocate()
    blob.write(unique)
    return blob


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialises tensors (aliases written once) with string metadata; same input, same bytes.

    ``format: pt`` is added so ``transformers``' ``from_pretrained`` accepts the file. For small
    blobs (checkpoint parts, task supports): predictions go through :func:`pack` or the
    decoder's in-place blob, which make no ``bytes`` copy.
    """
    return bytes(pack(tensors, metadata).memoryview())


def write_atomic(path: str | Path, data: BytesLike) -> None:
    """Writes ``data`` (any bytes-like object, e.g. ``blob.memoryview()``) to a temporary file in
    the same folder, then renames it over ``path``."""
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
    """Atomically writes a safetensors file (from the blob's buffer, without a bytes copy)."""
    write_atomic(path, pack(tensors, metadata).memoryview())


def read_metadata(blob: BytesLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (without reading the tensors)."""
    return _read_metadata(blob)


def read_file(path: Path) -> torch.Tensor:
    """The file's bytes in one fresh ``uint8`` tensor, read straight into it."""
    with path.open("rb", buffering=0) as handle:
        try:
            return read_into_new_buffer(handle.readinto, os.fstat(handle.fileno()).st_size)
        except EOFError as exc:
            raise BlobFormatError(f"{path} shrank while it was read: {exc}") from exc


def load_state_dict(
    source: str | Path | BytesLike,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Loads a file or blob written by :func:`to_bytes`; aliases are restored.

    A file is read into one buffer and the tensors are views of it; a writable bytes-like blob
    (``bytearray``, writable memoryview, ``uint8`` tensor) is shared, not copied; ``bytes`` are
    copied once.
    """
    if isinstance(source, str | Path):
        return read_state_dict(read_file(Path(source)))
    return read_state_dict(source)
