"""Planning a layout before the tensors exist, and writing into the blob's buffer in place."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.torch
import torch

from tal.blobs.layout import (
    ALIASES_KEY,
    HEADER_ALIGNMENT,
    HEADER_LENGTH_BYTES,
    BlobFormatError,
    Entry,
    aligned_order,
    plan_layout,
)
from tal.hypernet.arena import OutputPool

CPU = torch.device("cpu")
MIB = 2**20
ENTRIES = [
    Entry("blocks.0.weight", torch.float32, (4, 3)),
    Entry("blocks.0.bias", torch.float32, (4,)),
    Entry("scale", torch.float32, ()),
    Entry("empty", torch.float32, (0, 7)),
]


def header_of(blob: bytes) -> dict:
    (length,) = struct.unpack("<Q", blob[:HEADER_LENGTH_BYTES])
    return json.loads(blob[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])


def test_offsets_follow_the_given_order_and_the_payload_is_aligned():
    layout = plan_layout(ENTRIES, {"b": "2", "a": "1"})
    assert [(p.begin, p.end) for p in layout.placements] == [(0, 48), (48, 64), (64, 68), (68, 68)]
    assert layout.payload_start % HEADER_ALIGNMENT == 0
    assert layout.total_bytes == layout.payload_start + 68
    header = header_of(layout.header)
    assert list(header) == ["__metadata__", *(e.name for e in ENTRIES)]
    assert header["__metadata__"] == {"a": "1", "b": "2", "format": "pt"}
    assert list(header["__metadata__"]) == ["a", "b", "format"]  # sorted
    assert header["scale"] == {"dtype": "F32", "shape": [], "data_offsets": [64, 68]}
    assert layout.header[len(json.dumps(header, separators=(",", ":"))) + 8 :].strip(b" ") == b""


def test_the_header_is_deterministic_whatever_the_metadata_order():
    first = plan_layout(ENTRIES, {"x": "1", "y": "é", "z": "3"}).header
    second = plan_layout(ENTRIES, {"z": "3", "y": "é", "x": "1"}).header
    assert first == second


def test_views_write_the_blob_in_place_and_safetensors_reads_it():
    layout = plan_layout(ENTRIES, {"k": "v"})
    blob = layout.allocate()
    expected = {
        "blocks.0.weight": torch.arange(12.0).view(4, 3),
        "blocks.0.bias": torch.full((4,), -1.5),
        "scale": torch.tensor(2.0),
        "empty": torch.zeros(0, 7),
    }
    for name, value in expected.items():
        view = blob.view(name)
        assert view.shape == value.shape and view.dtype == torch.float32
        view.copy_(value)  # in place: no other buffer
    data = bytes(blob.memoryview())
    loaded = safetensors.torch.load(data)
    for name, value in expected.items():
        assert torch.equal(loaded[name], value)
    assert header_of(data)["__metadata__"] == {"format": "pt", "k": "v"}


def test_the_payload_is_one_flat_arena_in_layout_order():
    """What the decoder's ``_OutputWriter`` needs: element offsets into one typed buffer."""
    blob = plan_layout(ENTRIES).allocate()
    arena = blob.payload_as(torch.float32)
    assert arena.shape == (17,)
    arena.copy_(torch.arange(17.0))
    assert torch.equal(blob.view("blocks.0.weight").flatten(), torch.arange(12.0))
    assert torch.equal(blob.view("blocks.0.bias"), torch.arange(12.0, 16.0))
    assert blob.view("scale").item() == 16.0


def test_memoryview_is_read_only_and_shares_the_buffer():
    blob = plan_layout(ENTRIES).allocate()
    view = blob.memoryview()
    assert view.readonly and view.nbytes == blob.nbytes == len(view)
    assert np.frombuffer(view, dtype=np.uint8).ctypes.data == blob.buffer.data_ptr()
    blob.view("scale").fill_(3.0)
    start = blob.layout.payload_start + 64
    assert struct.unpack("<f", view[start : start + 4])[0] == 3.0


def test_write_casts_once_into_the_payload_and_refuses_wrong_shapes():
    entries = [Entry("w", torch.bfloat16, (5, 2))]
    blob = plan_layout(entries).allocate()
    source = torch.randn(2, 5).T  # float32, not contiguous
    blob.write({"w": source})
    assert torch.equal(blob.view("w"), source.to(torch.bfloat16))
    with pytest.raises(BlobFormatError, match=r"shape \(2, 5\); the layout planned \(5, 2\)"):
        blob.write({"w": torch.zeros(2, 5)})
    with pytest.raises(BlobFormatError, match="no tensor given for 'w'"):
        blob.write({})


def test_aliases_are_stored_once_and_recorded():
    entries = [Entry("transformer.wte.weight", torch.float32, (6, 4))]
    layout = plan_layout(
        entries, {ALIASES_KEY: "stale"}, {"lm_head.weight": "transformer.wte.weight"}
    )
    assert layout.names == ["transformer.wte.weight"]
    assert json.loads(layout.metadata[ALIASES_KEY]) == {"lm_head.weight": "transformer.wte.weight"}
    blob = layout.allocate()
    views = blob.tensors()
    assert views["lm_head.weight"] is views["transformer.wte.weight"]
    assert ALIASES_KEY not in plan_layout(entries, {ALIASES_KEY: "stale"}).metadata


def test_aligned_order_puts_larger_items_first_and_keeps_the_order_otherwise():
    entries = [
        Entry("a", torch.float16, (3,)),
        Entry("b", torch.float32, (1,)),
        Entry("c", torch.bool, (1,)),
        Entry("d", torch.float32, (2,)),
        Entry("e", torch.int64, (1,)),
    ]
    assert [e.name for e in aligned_order(entries)] == ["e", "b", "d", "a", "c"]
    with pytest.raises(BlobFormatError, match=r"'b' \(F32\) would start at payload byte 6"):
        plan_layout(entries)
    plan_layout(aligned_order(entries))


@pytest.mark.parametrize(
    ("entries", "metadata", "aliases", "message"),
    [
        ([Entry("a", torch.float32, ()), Entry("a", torch.float32, ())], None, None, "twice"),
        ([Entry("__metadata__", torch.float32, ())], None, None, "reserved"),
        ([Entry("a", torch.complex128, ())], None, None, "safetensors cannot store"),
        ([Entry("a", torch.float32, (-1,))], None, None, "integers >= 0"),
        ([Entry("a", torch.float32, ())], {"k": 1}, None, "strings to strings"),
        ([Entry("a", torch.float32, ())], None, {"b": "missing"}, "not stored"),
        ([Entry("a", torch.float32, ())], None, {"a": "a"}, "also a stored tensor"),
        ([Entry("\ud800", torch.float32, ())], None, None, "valid Unicode"),
    ],
)
def test_plans_that_cannot_be_written_are_refused(entries, metadata, aliases, message):
    with pytest.raises(BlobFormatError, match=message):
        plan_layout(entries, metadata, aliases)


def test_a_pooled_buffer_holds_a_blob_and_is_not_reused_while_its_memoryview_lives():
    pool = OutputPool(max_bytes=16 * MIB)
    layout = plan_layout(ENTRIES)
    blob = layout.allocate(pool.empty(layout.total_bytes, torch.uint8, CPU))
    address = blob.buffer.data_ptr()
    view = blob.memoryview()
    del blob
    assert pool.empty(layout.total_bytes, torch.uint8, CPU).data_ptr() != address
    del view
    assert pool.empty(layout.total_bytes, torch.uint8, CPU).data_ptr() == address


def test_a_buffer_of_the_wrong_size_or_type_is_refused():
    layout = plan_layout(ENTRIES)
    with pytest.raises(BlobFormatError, match="contiguous 1-D CPU uint8 tensor"):
        layout.allocate(torch.empty(layout.total_bytes + 1, dtype=torch.uint8))
    with pytest.raises(BlobFormatError, match="contiguous 1-D CPU uint8 tensor"):
        layout.allocate(torch.empty(layout.total_bytes // 4, dtype=torch.float32))
