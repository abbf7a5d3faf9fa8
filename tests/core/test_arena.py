"""The output buffer pool: reuses only buffers nothing references, within its budget."""

import torch

from tal.arch.specs import ViTSpec
from tal.hypernet.arena import OutputPool
from tal.hypernet.model import TALHypernet

CPU = torch.device("cpu")
MIB = 2**20


def _address(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def test_an_idle_buffer_is_reused_and_a_referenced_one_never_is():
    pool = OutputPool(max_bytes=16 * MIB)
    first = pool.empty(1000, torch.float32, CPU)
    first.fill_(7.0)
    second = pool.empty(1000, torch.float32, CPU)
    assert _address(second) != _address(first)  # first is still alive
    assert torch.all(first == 7.0)
    address = _address(first)
    del first
    third = pool.empty(900, torch.float32, CPU)  # fits the idle buffer
    assert _address(third) == address and third.shape == (900,)


def test_a_view_of_an_output_keeps_its_buffer_from_reuse():
    pool = OutputPool(max_bytes=16 * MIB)
    buffer = pool.empty(1000, torch.float32, CPU)
    row = buffer.view(10, 100)[3]
    row.fill_(1.0)
    address = _address(buffer)
    del buffer
    again = pool.empty(1000, torch.float32, CPU)
    assert _address(again) != address
    assert torch.all(row == 1.0)


def test_budget_and_size_rules():
    pool = OutputPool(max_bytes=4 * MIB)
    pool.empty(2 * MIB, torch.float32, CPU)  # 8 MiB: over the budget, never pooled
    assert not pool._buffers
    small = pool.empty(1000, torch.float32, CPU)
    address = _address(small)
    del small
    # a much smaller request does not pin a larger idle buffer
    assert _address(pool.empty(10, torch.float32, CPU)) != address
    off = OutputPool(max_bytes=0)
    kept = off.empty(1000, torch.float32, CPU)
    address = _address(kept)
    del kept
    assert not off._buffers


def test_idle_buffers_beyond_the_budget_are_dropped():
    pool = OutputPool(max_bytes=3 * MIB)
    for _ in range(5):  # each request finds the previous buffer too small
        pool.empty(MIB // 4, torch.float32, CPU)
        pool.empty(MIB // 2 - 1000, torch.float32, CPU)
    held = sum(b.nbytes for b in pool._buffers)
    assert held <= 3 * MIB


@torch.no_grad()
def test_predictions_through_a_reused_buffer_are_identical_and_independent():
    hypernet = TALHypernet().eval()
    spec = ViTSpec(depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8, num_classes=5)
    task = torch.randn(hypernet.config.encoder.task_dim)
    first = {k: v.clone() for k, v in hypernet(spec).items()}
    kept = hypernet(spec, task)
    snapshot = {k: v.clone() for k, v in kept.items()}
    for _ in range(3):  # reuses the first call's buffer, never the one still held
        again = hypernet(spec)
        assert all(torch.equal(again[k], first[k]) for k in first)
        del again
    assert all(torch.equal(kept[k], snapshot[k]) for k in kept)
