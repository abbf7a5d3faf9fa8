"""The reader: zero-copy views, and a ValueError that says what is wrong for every bad blob."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from blob_support import assert_same_tensors, f32_entry, raw_blob, tensor_sets
from hypothesis import given, settings
from hypothesis import strategies as st

from tal.blobs.io import to_bytes
from tal.blobs.layout import MAX_HEADER_BYTES, BlobFormatError
from tal.blobs.reader import parse_layout, read_metadata, read_state_dict

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)
GOOD = raw_blob({"a": f32_entry(0, 4), "b": f32_entry(16, 2)}, bytes(24))
SMALL_ALLOCATION_BYTES = 1 << 20


def test_views_share_a_writable_buffer_and_bytes_are_copied_once():
    tensors = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(3, dtype=torch.int16)}
    data = to_bytes(tensors)
    shared = bytearray(data)
    loaded, _ = read_state_dict(shared)
    base = np.frombuffer(shared, dtype=np.uint8).ctypes.data
    assert base <= loaded["w"].data_ptr() < base + len(shared)
    loaded["w"][0, 0] = 42.0  # writes through to the caller's buffer
    assert read_state_dict(shared)[0]["w"][0, 0] == 42.0
    copied, _ = read_state_dict(data)
    copied["w"].zero_()  # a private copy: the bytes object is untouched
    assert read_state_dict(data)[0]["w"][0, 0] == 0.0 and torch.equal(
        read_state_dict(data)[0]["w"], tensors["w"]
    )


def test_a_uint8_tensor_and_a_numpy_array_are_read_in_place():
    data = to_bytes({"x": torch.arange(4, dtype=torch.int32)})
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    loaded, _ = read_state_dict(buffer)
    assert loaded["x"].untyped_storage().data_ptr() == buffer.data_ptr()
    array = np.frombuffer(bytearray(data), dtype=np.uint8)
    assert torch.equal(read_state_dict(array)[0]["x"], torch.arange(4, dtype=torch.int32))


@PROPERTY_SETTINGS
@given(tensors=tensor_sets(), metadata=st.dictionaries(st.text(), st.text(), max_size=3))
def test_our_reader_reads_safetensors_own_output(tensors, metadata):
    metadata = {k.encode("utf-8", "replace").decode(): v.encode("utf-8", "replace").decode()
                for k, v in metadata.items()}  # fmt: skip
    data = safetensors.torch.save(tensors, metadata=metadata or None)
    loaded, read = read_state_dict(bytearray(data))
    assert_same_tensors(loaded, tensors)
    assert read == metadata
    assert read_metadata(data) == metadata


def test_a_misaligned_tensor_from_another_writer_is_copied_on_its_own():
    header = {"h": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
              "f": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}  # fmt: skip
    payload = torch.tensor([1.5], dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    payload += struct.pack("<f", -2.25)
    loaded, _ = read_state_dict(raw_blob(header, payload))
    assert loaded["f"].item() == -2.25 and loaded["h"].item() == 1.5
    assert loaded["f"].data_ptr() % 4 == 0


def _with_length(length: int) -> bytearray:
    blob = bytearray(GOOD)
    blob[:8] = struct.pack("<Q", length)
    return blob


CORRUPT = {
    "too short for a length": (GOOD[:5], "truncated blob: 5 bytes"),
    "cut inside the header": (GOOD[:20], "runs past the end"),
    "cut inside the payload": (GOOD[:-1], "past the payload's 23 bytes"),
    "huge header length": (_with_length(2**64 - 1), "over the limit"),
    "header length past the end": (_with_length(len(GOOD)), "runs past the end"),
    "header length over the limit": (_with_length(MAX_HEADER_BYTES + 1), "over the limit"),
    "overlapping offsets": (
        raw_blob({"a": f32_entry(0, 4), "b": f32_entry(8, 4)}, bytes(24)),
        "overlaps the tensor before it",
    ),
    "hole": (raw_blob({"a": f32_entry(0, 4), "b": f32_entry(20, 1)}, bytes(24)), "a hole"),
    "trailing bytes": (raw_blob({"a": f32_entry(0, 4)}, bytes(20)), "4 bytes after its last"),
    "unknown dtype": (
        raw_blob({"a": {"dtype": "F17", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
        "unknown dtype 'F17'",
    ),
    "shape and size disagree": (
        raw_blob({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, bytes(16)),
        "needs 20 bytes",
    ),
    "negative dimension": (
        raw_blob({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, bytes(16)),
        "not a list of integers",
    ),
    "offsets not a pair": (
        raw_blob({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16]}}, bytes(16)),
        "not \\[begin, end\\]",
    ),
    "missing field": (raw_blob({"a": {"dtype": "F32", "shape": [4]}}, bytes(16)), "expected"),
    "not JSON": (raw_blob(b"{nope}", b""), "not valid JSON"),
    "not UTF-8": (raw_blob(b'{"\xff":1}', b""), "not UTF-8"),
    "not an object": (raw_blob(b"[1,2,3]", b""), "not a JSON object"),
    "deeply nested": (
        bytearray(struct.pack("<Q", 200_000) + b"{" + b'"a":' + b"[" * 199_995),
        "nested too deeply",
    ),
    "duplicate name": (
        raw_blob(b'{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"a":1}', bytes(1)),
        "names 'a' twice",
    ),
    "metadata not strings": (
        raw_blob({"__metadata__": {"k": 1}, "a": f32_entry(0, 1)}, bytes(4)),
        "must map strings to strings",
    ),
    "alias to nothing": (
        raw_blob({"__metadata__": {"tal.aliases": '{"b": "c"}'}, "a": f32_entry(0, 1)}, bytes(4)),
        "points to 'c'",
    ),
    "aliases not JSON": (
        raw_blob({"__metadata__": {"tal.aliases": "{"}, "a": f32_entry(0, 1)}, bytes(4)),
        "tal.aliases is not JSON",
    ),
    "huge shape": (
        raw_blob({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 2**82]}}, b""),
        "past the payload",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_every_corrupt_blob_is_a_value_error_that_says_what_is_wrong(case):
    data, message = CORRUPT[case]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=message):
            read_state_dict(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SMALL_ALLOCATION_BYTES + len(data)  # nothing sized from the claims


def test_the_header_limit_is_the_callers_to_lower():
    with pytest.raises(BlobFormatError, match="over the limit of 16 bytes"):
        parse_layout(GOOD, max_header_bytes=16)


@settings(max_examples=300, deadline=None)
@given(
    tensors=tensor_sets(),
    mutation=st.sampled_from(["truncate", "flip", "length"]),
    position=st.integers(0, 2**16),
    value=st.integers(0, 255),
    length=st.integers(0, 2**64 - 1),
)
def test_mangled_blobs_raise_value_error_or_read_as_safetensors_reads_them(
    tensors, mutation, position, value, length
):
    data = bytearray(to_bytes(tensors, {"note": "ü"}))
    if mutation == "truncate":
        data = data[: position % len(data)]
    elif mutation == "flip":
        data[position % len(data)] = value
    else:
        data[:8] = struct.pack("<Q", length)
    try:
        ours, _ = read_state_dict(bytearray(data))
    except ValueError:
        return
    theirs = safetensors.torch.load(bytes(data))  # what we accept, safetensors accepts too
    ours = {name: ours[name] for name in theirs}  # ours also restores aliases
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert ours[name].view(-1).view(torch.uint8).tolist() == (
            tensor.view(-1).view(torch.uint8).tolist()
        )
