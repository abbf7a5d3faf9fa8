"""Fresh blob buffers: huge-page mappings that live as long as their tensors."""

from __future__ import annotations

import gc
import io as stdlib_io
import mmap

import numpy as np
import torch

from tal.blobs import io
from tal.blobs.memory import HUGE_PAGE_BYTES, empty_bytes

PAGE_BYTES = mmap.PAGESIZE


def test_a_large_buffer_is_a_page_aligned_mapping_that_outlives_its_maker():
    size = 3 * HUGE_PAGE_BYTES + 5
    buffer = empty_bytes(size)
    assert buffer.dtype == torch.uint8 and buffer.shape == (size,)
    assert buffer.data_ptr() % PAGE_BYTES == 0  # a mapping, not the heap
    gc.collect()
    buffer[-1] = 7
    buffer[:HUGE_PAGE_BYTES].fill_(1)
    view = buffer[HUGE_PAGE_BYTES:]
    del buffer
    gc.collect()
    assert view[-1].item() == 7  # a view keeps the mapping alive


def test_a_small_buffer_and_readinto_work_as_plain_memory():
    small = empty_bytes(100)
    assert small.shape == (100,)
    data = np.random.default_rng(0).integers(0, 256, HUGE_PAGE_BYTES + 3, dtype=np.uint8)
    buffer = empty_bytes(data.size)
    assert stdlib_io.BytesIO(data.tobytes()).readinto(memoryview(buffer.numpy())) == data.size
    assert np.array_equal(buffer.numpy(), data)


def test_a_large_blob_packs_into_a_mapping_and_reads_back():
    tensors = {"w": torch.randn(HUGE_PAGE_BYTES // 4 + 9), "b": torch.arange(3)}
    blob = io.pack(tensors, {"k": "v"})
    assert blob.buffer.data_ptr() % PAGE_BYTES == 0
    loaded, metadata = io.load_state_dict(bytearray(blob.memoryview()))
    assert metadata == {"format": "pt", "k": "v"}
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
