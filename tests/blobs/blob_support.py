"""Random tensor sets (hypothesis) and hand-made blobs for the tests of ``tal.blobs``."""

from __future__ import annotations

import json
import struct

import torch
from hypothesis import strategies as st

from tal.blobs.layout import ALIASES_KEY, HEADER_ALIGNMENT, HEADER_LENGTH_BYTES, METADATA_KEY

# The dtypes torch and safetensors share that every safetensors reader handles.
SHARED_DTYPES = (
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
MAX_DIMS = 4
MAX_DIM_SIZE = 5
MAX_TENSORS = 8
INT_BOUND = 2**62  # torch.randint draws int64 below this
FLOAT_SCALE = 100.0

# Any text but lone surrogates (not encodable as UTF-8, so no JSON header can hold them).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
NAMES = TEXT.filter(lambda name: name != METADATA_KEY)
SHAPES = st.lists(st.integers(0, MAX_DIM_SIZE), max_size=MAX_DIMS).map(tuple)


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seeded tensor of any dtype, covering its range (no NaNs, so torch.equal compares)."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=generator, dtype=torch.float64) * FLOAT_SCALE
        return values.to(dtype)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -INT_BOUND), min(info.max, INT_BOUND)
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64).to(dtype)


@st.composite
def tensor_sets(draw: st.DrawFn, names: st.SearchStrategy[str] = NAMES) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` with every shared dtype, scalars and zero-size dimensions."""
    chosen = draw(st.lists(names, max_size=MAX_TENSORS, unique=True))
    return {
        name: random_tensor(
            draw(st.sampled_from(SHARED_DTYPES)), draw(SHAPES), draw(st.integers(0, 2**31))
        )
        for name in chosen
    }


# The aliases key is the writer's own: it records the aliases it finds (none here).
METADATA = st.dictionaries(TEXT.filter(lambda key: key != ALIASES_KEY), TEXT, max_size=4)


def raw_blob(header: dict | bytes, payload: bytes) -> bytearray:
    """A blob from a header (a dict, or raw header text) and payload bytes as they are (no
    checks), padded like safetensors."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-(HEADER_LENGTH_BYTES + len(text)) % HEADER_ALIGNMENT)
    return bytearray(struct.pack("<Q", len(text)) + text + payload)


def f32_entry(begin: int, count: int) -> dict:
    """A header entry of ``count`` float32 values at payload byte ``begin``."""
    return {"dtype": "F32", "shape": [count], "data_offsets": [begin, begin + 4 * count]}


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(sorted(actual)) == list(sorted(expected))
    for name, tensor in expected.items():
        got = actual[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, name
        assert torch.equal(got, tensor), name
