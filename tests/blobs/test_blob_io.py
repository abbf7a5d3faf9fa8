"""``tal.blobs.io`` against safetensors' own readers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from blob_support import METADATA, assert_same_tensors, random_tensor, tensor_sets
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tal.blobs import io
from tal.blobs.layout import ALIASES_KEY, DTYPES_BY_CODE

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)
EXTRA_DTYPES = [d for d in DTYPES_BY_CODE.values() if d not in {
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool}]  # fmt: skip


def expected_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {"format": "pt", **metadata}


class Buffers(nn.Module):
    """A module whose state dict is the given tensors' shapes and dtypes, all zeros."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, torch.zeros_like(tensor))


@PROPERTY_SETTINGS
@given(tensors=tensor_sets(), metadata=METADATA)
def test_safetensors_load_reads_exactly_what_we_wrote(tensors, metadata):
    data = io.to_bytes(tensors, metadata)
    assert_same_tensors(safetensors.torch.load(data), tensors)
    assert io.read_metadata(data) == expected_metadata(metadata)
    loaded, read = io.load_state_dict(data)
    assert_same_tensors(loaded, tensors)
    assert read == expected_metadata(metadata)


@PROPERTY_SETTINGS
@given(tensors=tensor_sets(), metadata=METADATA)
def test_safe_open_reads_a_written_file(tensors, metadata):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blob.safetensors"
        io.save_file(tensors, path, metadata)
        with safetensors.safe_open(path, framework="pt") as handle:
            assert handle.metadata() == expected_metadata(metadata)
            assert_same_tensors({k: handle.get_tensor(k) for k in handle.keys()}, tensors)  # noqa: SIM118
        loaded, read = io.load_state_dict(path)
        assert_same_tensors(loaded, tensors)
        assert read == expected_metadata(metadata)
        assert path.read_bytes() == io.to_bytes(tensors, metadata)


@PROPERTY_SETTINGS
@given(
    tensors=tensor_sets(names=st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True).map("w_".__add__))
)
def test_load_model_fills_a_module_strictly(tensors):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "module.safetensors"
        io.save_file(tensors, path)
        module = Buffers(tensors)
        missing, unexpected = safetensors.torch.load_model(module, path, strict=True)
        assert not missing and not unexpected
        assert_same_tensors(dict(module.state_dict()), tensors)


@PROPERTY_SETTINGS
@given(tensors=tensor_sets(), metadata=METADATA)
def test_same_input_same_bytes_from_every_writer(tensors, metadata):
    data = io.to_bytes(tensors, metadata)
    assert io.to_bytes(dict(tensors), dict(reversed(metadata.items()))) == data
    assert bytes(io.pack(tensors, metadata).memoryview()) == data


@pytest.mark.parametrize("dtype", EXTRA_DTYPES, ids=str)
def test_the_other_safetensors_dtypes_round_trip_byte_for_byte(dtype):
    raw = random_tensor(torch.uint8, (3, 2 * dtype.itemsize), seed=7)
    tensor = raw.view(dtype)
    data = io.to_bytes({"x": tensor, "y": torch.ones(1)})
    for loaded in (safetensors.torch.load(data)["x"], io.load_state_dict(data)[0]["x"]):
        assert loaded.dtype == dtype and torch.equal(loaded.view(torch.uint8), raw)


def test_nan_and_infinity_keep_their_bits():
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        tensor = special.to(dtype)
        loaded = io.load_state_dict(io.to_bytes({"x": tensor}))[0]["x"]
        assert torch.equal(loaded.view(torch.uint8), tensor.view(torch.uint8))


def test_pack_casts_once_into_the_payload():
    tensors = {"w": torch.randn(4, 3), "b": torch.randn(4)}
    blob = io.pack(tensors, {"tal.dtype": "bfloat16"}, dtype=torch.bfloat16)
    loaded, metadata = io.load_state_dict(bytes(blob.memoryview()))
    assert metadata["tal.dtype"] == "bfloat16"
    for name, tensor in tensors.items():
        assert loaded[name].dtype == torch.bfloat16
        assert torch.equal(loaded[name], tensor.to(torch.bfloat16))


def test_a_transposed_view_of_the_same_memory_is_not_an_alias():
    square = torch.randn(3, 3)
    tensors = {"w": square, "w_t": square.T}
    loaded, metadata = io.load_state_dict(io.to_bytes(tensors))
    assert ALIASES_KEY not in metadata
    assert torch.equal(loaded["w_t"], square.T) and torch.equal(loaded["w"], square)


def test_write_atomic_takes_a_memoryview_and_leaves_no_temporary_file(tmp_path):
    blob = io.pack({"x": torch.arange(5.0)}, {"k": "v"})
    path = tmp_path / "sub" / "x.safetensors"
    io.write_atomic(path, blob.memoryview())
    assert path.read_bytes() == bytes(blob.memoryview())
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]


def test_to_bytes_returns_a_real_independent_bytes_object():
    tensors = {"x": torch.arange(8.0)}
    first, second = io.to_bytes(tensors), io.to_bytes(tensors)
    assert type(first) is bytes and first == second and first is not second
    assert hash(first) == hash(second)
    tensors["x"].zero_()  # the blob holds a copy
    assert io.load_state_dict(first)[0]["x"][3] == 3.0
