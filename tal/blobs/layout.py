"""The safetensors layout, planned before any tensor exists.

A blob is::

    [N: 8 bytes, little-endian u64] [header: N bytes of JSON, space-padded] [payload]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (byte
offsets into the payload, which they cover exactly, without holes or overlaps) and holds
``__metadata__`` (``{str: str}``). ``N`` is padded so the payload starts at a multiple of
``HEADER_ALIGNMENT`` bytes, as ``safetensors`` itself pads.

:func:`plan_layout` computes all of that from an ordered sequence of :class:`Entry` (name,
dtype, shape) and string metadata. Entries are laid out in the order given, so the caller
decides it (the decoder's group order, for instance). The header is deterministic: compact
JSON, ``__metadata__`` first with its keys sorted, then the entries in payload order.

:meth:`Layout.allocate` returns a :class:`Blob`: one flat ``torch.uint8`` buffer of
``total_bytes`` with the header already written, whose payload regions are handed out as typed
tensor views for in-place writes.

Why a torch ``uint8`` tensor and not a ``bytearray`` or ``bytes``:

* the decoder's outputs can be views of it (``buffer[a:b].view(dtype).view(shape)``), and the
  prediction output pool (:mod:`tal.hypernet.arena`) already hands out such buffers for reuse;
* fresh memory comes from :func:`tal.blobs.memory.empty_bytes` (huge pages; ``bytearray(n)``
  would zero-fill 4 KiB pages: on our machines page faults cost more than the copy itself);
* :meth:`Blob.memoryview` exposes it without a copy (through NumPy), read-only, which is what
  an HTTP response, the in-process cache and redis-py take; the memoryview keeps the buffer
  alive, and while it lives the output pool does not reuse the buffer.

Aliases (a tied GPT-2 ``lm_head.weight`` that *is* ``transformer.wte.weight``) are stored once,
under their target, and recorded in the metadata under ``ALIASES_KEY`` as a JSON object
``{alias: target}``; ``format: pt`` is set because ``transformers``' ``from_pretrained``
requires it. All tensors are little-endian, like the format.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tal.blobs.memory import empty_bytes

HEADER_LENGTH_BYTES = 8  # the little-endian u64 before the JSON header
HEADER_LENGTH_FORMAT = "<Q"
HEADER_ALIGNMENT = 8  # the payload starts at a multiple of this many bytes
HEADER_PADDING = b" "
METADATA_KEY = "__metadata__"
FORMAT_KEY = "format"
FORMAT_PT = "pt"  # transformers' from_pretrained refuses safetensors files without it
ALIASES_KEY = "tal.aliases"
# safetensors refuses headers above 100 MB (its MAX_HEADER_SIZE); so do we, writing and reading.
MAX_HEADER_BYTES = 100_000_000
JSON_SEPARATORS = (",", ":")

# Every dtype torch and safetensors share, by the header's code (safetensors.torch's table).
DTYPES_BY_CODE: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
}
CODES_BY_DTYPE: dict[torch.dtype, str] = {dtype: code for code, dtype in DTYPES_BY_CODE.items()}


class BlobFormatError(ValueError):
    """A layout that cannot be written, or bytes that are not a valid safetensors blob."""


def check_little_endian() -> None:
    if sys.byteorder != "little":
        raise BlobFormatError("safetensors payloads are little-endian; this host is big-endian")


@dataclass(frozen=True)
class Entry:
    """One stored tensor: its name, dtype and shape (``()`` for a scalar)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def code(self) -> str:
        """The header's dtype code (``"F32"``, ...)."""
        return CODES_BY_DTYPE[self.dtype]


@dataclass(frozen=True)
class Placement:
    """Where an entry's bytes lie: ``[begin, end)`` relative to the payload's start."""

    entry: Entry
    begin: int
    end: int


@dataclass(frozen=True)
class Layout:
    """A planned (or parsed) blob: its first ``payload_start`` bytes, the entries' places in
    payload order, the metadata as written (``format`` and aliases included) and the aliases
    ``{alias: stored name}``."""

    header: bytes  # the 8-byte length, the JSON and its padding
    placements: tuple[Placement, ...]
    metadata: dict[str, str]
    aliases: dict[str, str]

    @property
    def payload_start(self) -> int:
        return len(self.header)

    @property
    def payload_bytes(self) -> int:
        return max((p.end for p in self.placements), default=0)

    @property
    def total_bytes(self) -> int:
        return self.payload_start + self.payload_bytes

    @property
    def names(self) -> list[str]:
        """Stored names in payload order (aliases not included)."""
        return [p.entry.name for p in self.placements]

    def placement(self, name: str) -> Placement:
        """The placement of a stored name or of an alias (its target's)."""
        target = self.aliases.get(name, name)
        for placement in self.placements:
            if placement.entry.name == target:
                return placement
        raise KeyError(f"no tensor named {name!r} in this layout")

    def allocate(self, buffer: torch.Tensor | None = None) -> Blob:
        """A :class:`Blob` over ``buffer`` (a flat CPU ``uint8`` tensor of ``total_bytes``, e.g.
        from the output pool) or over fresh memory (``empty_bytes``), with the header written."""
        return Blob(self, buffer)


def aligned_order(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` with larger items first, in their given order otherwise (a stable sort).

    Laid out in this order every tensor starts at a multiple of its item size, which
    :func:`plan_layout` requires (``safetensors.torch.save`` orders the same way). Entries of
    one dtype, such as a prediction's, keep their order.
    """
    return sorted(entries, key=lambda entry: -entry.dtype.itemsize)


def plan_layout(
    entries: Iterable[Entry],
    metadata: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Layout:
    """Plans a blob: header bytes, each entry's payload offsets (in the given order), sizes.

    Args:
        entries: the stored tensors, in payload order. Each must start at a multiple of its
            item size: put larger items first (:func:`aligned_order`) when dtypes are mixed.
        metadata: string metadata; ``format: pt`` is added unless given. A stale
            ``ALIASES_KEY`` is dropped: the aliases are recorded from ``aliases`` only.
        aliases: ``{alias: stored name}`` for names that share a stored tensor.

    Raises:
        BlobFormatError (a ValueError): duplicate or reserved names, unknown dtypes, negative
        dimensions, misaligned entries, non-string metadata, aliases to unknown names, or a
        header over ``MAX_HEADER_BYTES``.
    """
    check_little_endian()
    meta = _planned_metadata(metadata, aliases or {})
    placements: list[Placement] = []
    seen: set[str] = set()
    offset = 0
    for entry in entries:
        _check_entry(entry, seen)
        if offset % entry.dtype.itemsize:
            raise BlobFormatError(
                f"tensor {entry.name!r} ({entry.code}) would start at payload byte {offset}, "
                f"not a multiple of its item size {entry.dtype.itemsize}: put larger items "
                "first (tal.blobs.layout.aligned_order)"
            )
        seen.add(entry.name)
        placements.append(Placement(entry, offset, offset + entry.nbytes))
        offset += entry.nbytes
    _check_aliases(aliases or {}, seen)
    header = _header_bytes(placements, meta)
    return Layout(header, tuple(placements), meta, dict(aliases or {}))


def _planned_metadata(
    metadata: Mapping[str, str] | None, aliases: Mapping[str, str]
) -> dict[str, str]:
    meta = {FORMAT_KEY: FORMAT_PT, **(metadata or {})}
    meta.pop(ALIASES_KEY, None)
    if aliases:
        meta[ALIASES_KEY] = json.dumps(dict(aliases), sort_keys=True)
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BlobFormatError(
                f"metadata must map strings to strings; got {key!r}: {value!r} "
                f"({type(key).__name__}: {type(value).__name__})"
            )
    return dict(sorted(meta.items()))


def _check_entry(entry: Entry, seen: set[str]) -> None:
    if not isinstance(entry.name, str):
        raise BlobFormatError(f"tensor names must be strings, got {entry.name!r}")
    if entry.name == METADATA_KEY:
        raise BlobFormatError(f"{METADATA_KEY!r} is reserved for the metadata, not a tensor name")
    if entry.name in seen:
        raise BlobFormatError(f"tensor name {entry.name!r} appears twice")
    if entry.dtype not in CODES_BY_DTYPE:
        raise BlobFormatError(
            f"tensor {entry.name!r} has dtype {entry.dtype}, which safetensors cannot store "
            f"(known: {', '.join(str(d) for d in CODES_BY_DTYPE)})"
        )
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in entry.shape):
        raise BlobFormatError(
            f"tensor {entry.name!r} has shape {entry.shape}: dimensions must be integers >= 0"
        )


def _check_aliases(aliases: Mapping[str, str], stored: set[str]) -> None:
    for alias, target in aliases.items():
        if target not in stored:
            raise BlobFormatError(f"alias {alias!r} points to {target!r}, which is not stored")
        if alias in stored or alias == METADATA_KEY:
            raise BlobFormatError(f"alias {alias!r} is also a stored tensor name (or reserved)")


def _header_bytes(placements: Sequence[Placement], metadata: Mapping[str, str]) -> bytes:
    """The length prefix, the JSON header and its space padding."""
    header: dict[str, object] = {METADATA_KEY: dict(metadata)}
    for p in placements:
        header[p.entry.name] = {
            "dtype": p.entry.code,
            "shape": list(p.entry.shape),
            "data_offsets": [p.begin, p.end],
        }
    try:
        text = json.dumps(header, separators=JSON_SEPARATORS, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise BlobFormatError(f"names and metadata must be valid Unicode text: {exc}") from exc
    padded = -(-(HEADER_LENGTH_BYTES + len(text)) // HEADER_ALIGNMENT) * HEADER_ALIGNMENT
    length = padded - HEADER_LENGTH_BYTES
    if length > MAX_HEADER_BYTES:
        raise BlobFormatError(
            f"the header would take {length:,} bytes, over safetensors' limit of "
            f"{MAX_HEADER_BYTES:,}: store fewer tensors or less metadata"
        )
    return struct.pack(HEADER_LENGTH_FORMAT, length) + text.ljust(length, HEADER_PADDING)


def payload_view(buffer: torch.Tensor, start: int, entry: Entry) -> torch.Tensor | None:
    """``entry``'s tensor as a view of ``buffer[start : start + entry.nbytes]`` (a flat
    ``uint8`` tensor), or None when the bytes are not aligned for the dtype (read them with a
    copy). Zero-size entries get an empty tensor of their own."""
    if entry.numel == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    size = entry.dtype.itemsize
    region = buffer[start : start + entry.nbytes]
    if region.storage_offset() % size or region.data_ptr() % size:
        return None
    return region.view(entry.dtype).view(entry.shape)


class Blob:
    """A layout and its buffer: ``buffer`` is a flat ``uint8`` CPU tensor ``(total_bytes,)``
    whose first ``layout.payload_start`` bytes are the header.

    Write every entry (:meth:`view` + in-place ops, or :meth:`write`) before the blob is sent:
    payload bytes start undefined (a pooled buffer holds an older blob's bytes).
    """

    def __init__(self, layout: Layout, buffer: torch.Tensor | None = None) -> None:
        check_little_endian()
        if buffer is None:
            buffer = empty_bytes(layout.total_bytes)
        if (
            buffer.dtype != torch.uint8
            or buffer.dim() != 1
            or buffer.numel() != layout.total_bytes
            or buffer.device.type != "cpu"
            or not buffer.is_contiguous()
        ):
            raise BlobFormatError(
                f"a blob buffer is a contiguous 1-D CPU uint8 tensor of {layout.total_bytes} "
                f"bytes; got {buffer.dtype} {tuple(buffer.shape)} on {buffer.device}"
            )
        self.layout = layout
        self.buffer = buffer
        header = torch.frombuffer(bytearray(layout.header), dtype=torch.uint8)
        buffer[: layout.payload_start].copy_(header)

    @property
    def nbytes(self) -> int:
        return self.layout.total_bytes

    def view(self, name: str) -> torch.Tensor:
        """The tensor named ``name`` (or an alias), a view of its payload region."""
        placement = self.layout.placement(name)
        start = self.layout.payload_start + placement.begin
        view = payload_view(self.buffer, start, placement.entry)
        assert view is not None, "planned layouts are aligned"
        return view

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every stored tensor as a view, in payload order, then the aliases."""
        views = {name: self.view(name) for name in self.layout.names}
        for alias, target in self.layout.aliases.items():
            views[alias] = views[target]
        return views

    def payload_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The whole payload as one flat ``(payload_bytes / itemsize,)`` tensor of ``dtype``.

        With every entry of ``dtype``, laid out in the decoder's group order, this is exactly
        the flat arena the decoder writes by element offsets: no copy after prediction.
        """
        start, size = self.layout.payload_start, self.layout.payload_bytes
        if size % dtype.itemsize:
            raise BlobFormatError(f"a payload of {size} bytes is not a whole number of {dtype}")
        return self.buffer[start : start + size].view(dtype)

    def write(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copies each stored entry from ``tensors`` (any device, dtype or strides: cast on the
        way) into its region, once."""
        for name in self.layout.names:
            if name not in tensors:
                raise BlobFormatError(f"no tensor given for {name!r}")
            source, target = tensors[name], self.view(name)
            if tuple(source.shape) != tuple(target.shape):
                raise BlobFormatError(
                    f"tensor {name!r} has shape {tuple(source.shape)}; "
                    f"the layout planned {tuple(target.shape)}"
                )
            target.copy_(source)

    def memoryview(self) -> memoryview:
        """The whole blob, read-only and without a copy (keeps the buffer alive)."""
        return memoryview(self.buffer.numpy()).toreadonly()
