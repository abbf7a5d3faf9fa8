"""Reading safetensors blobs: a validated header, then zero-copy tensor views.

Every check happens on the header before any tensor is made, and is bounded by the bytes at
hand: a header length above ``MAX_HEADER_BYTES`` or past the end of the buffer is refused
before anything is allocated. Errors are :class:`~tal.blobs.layout.BlobFormatError` (a
``ValueError``) saying what is wrong.

Tensors are views of the caller's buffer when it is writable (a ``bytearray``, a writable
``memoryview`` or NumPy array, a ``uint8`` tensor): they keep it alive and share its memory.
A read-only buffer (``bytes``) is copied once into a fresh buffer first, since torch has no
read-only tensors. Aliases recorded under ``ALIASES_KEY`` are restored as the same tensor.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import torch

from tal.blobs.layout import (
    ALIASES_KEY,
    DTYPES_BY_CODE,
    HEADER_LENGTH_BYTES,
    HEADER_LENGTH_FORMAT,
    MAX_HEADER_BYTES,
    METADATA_KEY,
    BlobFormatError,
    Entry,
    Layout,
    Placement,
    check_little_endian,
    payload_view,
)
from tal.blobs.memory import empty_bytes

# Anything with the buffer protocol (bytes, bytearray, memoryview, mmap, a NumPy array) or a
# flat uint8 CPU tensor.
BytesLike = Any
ENTRY_FIELDS = ("dtype", "shape", "data_offsets")
JSON_OBJECT_START = b"{"


def _byte_view(data: BytesLike) -> memoryview:
    """``data`` as a flat memoryview of bytes (no copy)."""
    if isinstance(data, torch.Tensor):
        data = data.numpy()  # CPU only; the caller checked dtype and layout
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise BlobFormatError(f"a blob is a bytes-like object, not {type(data).__name__}") from exc
    if not view.c_contiguous:
        raise BlobFormatError("a blob must be one contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _check_byte_tensor(data: BytesLike) -> None:
    if isinstance(data, torch.Tensor) and (
        data.dtype != torch.uint8
        or data.dim() != 1
        or data.device.type != "cpu"
        or not data.is_contiguous()
    ):
        raise BlobFormatError(
            f"a blob tensor is a contiguous 1-D CPU uint8 tensor, not {data.dtype} "
            f"{tuple(data.shape)} on {data.device}"
        )


def _header_length(view: memoryview, max_header_bytes: int) -> int:
    size = view.nbytes
    if size < HEADER_LENGTH_BYTES:
        raise BlobFormatError(
            f"truncated blob: {size} bytes; a safetensors blob starts with an "
            f"{HEADER_LENGTH_BYTES}-byte header length"
        )
    (length,) = struct.unpack(HEADER_LENGTH_FORMAT, view[:HEADER_LENGTH_BYTES])
    if length > max_header_bytes:
        raise BlobFormatError(
            f"header length {length:,} is over the limit of {max_header_bytes:,} bytes "
            "(a corrupt blob, or not safetensors)"
        )
    if HEADER_LENGTH_BYTES + length > size:
        raise BlobFormatError(
            f"header length {length:,} runs past the end of the {size:,}-byte blob (truncated?)"
        )
    return length


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BlobFormatError(f"the header names {key!r} twice")
        result[key] = value
    return result


def _header_json(raw: bytes) -> dict[str, Any]:
    if not raw.startswith(JSON_OBJECT_START):
        raise BlobFormatError("the header is not a JSON object (it must start with '{')")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise BlobFormatError(f"the header is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise BlobFormatError(f"the header is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BlobFormatError("the header's JSON is nested too deeply") from exc
    if not isinstance(header, dict):
        raise BlobFormatError("the header is not a JSON object")
    return header


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _placement(name: str, info: Any) -> Placement:
    if not isinstance(info, dict) or any(field not in info for field in ENTRY_FIELDS):
        raise BlobFormatError(f"tensor {name!r}: expected an object with {', '.join(ENTRY_FIELDS)}")
    code, shape, offsets = (info[field] for field in ENTRY_FIELDS)
    if code not in DTYPES_BY_CODE:
        raise BlobFormatError(
            f"tensor {name!r}: unknown dtype {code!r} (known: {', '.join(DTYPES_BY_CODE)})"
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise BlobFormatError(f"tensor {name!r}: shape {shape!r} is not a list of integers >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise BlobFormatError(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end]")
    begin, end = offsets
    entry = Entry(name, DTYPES_BY_CODE[code], tuple(shape))
    if end - begin != entry.nbytes:
        raise BlobFormatError(
            f"tensor {name!r}: shape {shape} of {code} needs {entry.nbytes:,} bytes, "
            f"but data_offsets {offsets} hold {end - begin:,}"
        )
    return Placement(entry, begin, end)


def _check_coverage(placements: list[Placement], payload_bytes: int) -> None:
    """Offsets must tile ``[0, payload_bytes)``: no hole, no overlap, nothing past the end."""
    position = 0
    for p in sorted(placements, key=lambda p: (p.begin, p.end)):
        if p.end > payload_bytes:
            raise BlobFormatError(
                f"tensor {p.entry.name!r} ends at payload byte {p.end:,}, past the payload's "
                f"{payload_bytes:,} bytes (truncated?)"
            )
        if p.begin < position:
            raise BlobFormatError(
                f"tensor {p.entry.name!r} at payload bytes [{p.begin:,}, {p.end:,}) overlaps "
                f"the tensor before it, which ends at {position:,}"
            )
        if p.begin > position:
            raise BlobFormatError(
                f"a hole in the payload: bytes [{position:,}, {p.begin:,}) belong to no tensor"
            )
        position = p.end
    if position != payload_bytes:
        raise BlobFormatError(
            f"the payload has {payload_bytes - position:,} bytes after its last tensor "
            f"(tensors cover {position:,} of {payload_bytes:,})"
        )


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get(METADATA_KEY) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BlobFormatError(f"{METADATA_KEY} must map strings to strings")
    return metadata


def _aliases(metadata: dict[str, str], stored: set[str]) -> dict[str, str]:
    if ALIASES_KEY not in metadata:
        return {}
    try:
        aliases = json.loads(metadata[ALIASES_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BlobFormatError(f"metadata {ALIASES_KEY} is not JSON: {exc}") from exc
    if not isinstance(aliases, dict):
        raise BlobFormatError(f"metadata {ALIASES_KEY} must be a JSON object {{alias: name}}")
    for alias, target in aliases.items():
        if not isinstance(target, str) or target not in stored:
            raise BlobFormatError(f"alias {alias!r} points to {target!r}, which is not stored")
        if alias in stored:
            raise BlobFormatError(f"alias {alias!r} is also a stored tensor name")
    return aliases


def parse_layout(data: BytesLike, max_header_bytes: int = MAX_HEADER_BYTES) -> Layout:
    """The validated :class:`Layout` of a blob held in any bytes-like object (only the header
    is read; placements in payload order)."""
    _check_byte_tensor(data)
    view = _byte_view(data)
    length = _header_length(view, max_header_bytes)
    payload_start = HEADER_LENGTH_BYTES + length
    raw = bytes(view[HEADER_LENGTH_BYTES:payload_start])
    header = _header_json(raw)
    metadata = _metadata(header)
    placements = [_placement(name, info) for name, info in header.items() if name != METADATA_KEY]
    _check_coverage(placements, view.nbytes - payload_start)
    placements.sort(key=lambda p: (p.begin, p.end))
    aliases = _aliases(metadata, {p.entry.name for p in placements})
    prefix = bytes(view[:HEADER_LENGTH_BYTES]) + raw
    return Layout(prefix, tuple(placements), metadata, aliases)


def read_metadata(data: BytesLike) -> dict[str, str]:
    """The ``__metadata__`` of a blob, reading only its header (the header is validated)."""
    _check_byte_tensor(data)
    view = _byte_view(data)
    length = _header_length(view, MAX_HEADER_BYTES)
    return _metadata(_header_json(bytes(view[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])))


def _writable_buffer(data: BytesLike) -> torch.Tensor:
    """A flat ``uint8`` tensor sharing ``data``'s memory, or a copy of read-only data."""
    if isinstance(data, torch.Tensor):
        return data
    view = _byte_view(data)
    if not view.readonly:
        return torch.frombuffer(view, dtype=torch.uint8)
    buffer = empty_bytes(view.nbytes)
    buffer.numpy()[:] = np.frombuffer(view, dtype=np.uint8)
    return buffer


def read_state_dict(data: BytesLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a blob; aliases restored as the same tensor object.

    Tensors are views of ``data`` when it is writable (no copy); read-only ``data`` is copied
    once. A tensor whose bytes are not aligned for its dtype (possible in files from other
    writers) is copied on its own.
    """
    check_little_endian()
    layout = parse_layout(data)
    buffer = _writable_buffer(data)
    tensors: dict[str, torch.Tensor] = {}
    for p in layout.placements:
        start = layout.payload_start + p.begin
        view = payload_view(buffer, start, p.entry)
        if view is None:  # misaligned: an aligned copy of this tensor only
            view = payload_view(buffer[start : start + p.entry.nbytes].clone(), 0, p.entry)
        tensors[p.entry.name] = view
    for alias, target in layout.aliases.items():
        tensors[alias] = tensors[target]
    return tensors, layout.metadata
