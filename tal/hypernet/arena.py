"""Reuse of prediction output buffers on the CPU.

A prediction writes all its outputs into one fresh buffer (``_OutputWriter``; a blob's, for
``tal.predict.predict_blob``). Faulting in a fresh buffer from the OS costs about a third of a
ViT-S prediction on our 2-core machines (``bench/predict.py`` prints cold and warm figures);
fresh buffers come from ``tal.blobs.memory.empty_bytes`` (huge pages). The pool keeps buffers
whose outputs are no longer referenced anywhere (PyTorch's storage use count: the same test the
CUDA-graph trees use to recycle their outputs) and hands them out again, much as the CUDA
caching allocator does on the GPU, where the pool is not used. A buffer still referenced, by a
returned tensor or any view of it, is never reused.

The pool holds at most ``max_bytes`` of idle buffers (``TAL_OUTPUT_POOL_MB``, default
``DEFAULT_POOL_MB``; 0 turns it off). Thread-safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tal.blobs.memory import empty_bytes

POOL_ENV = "TAL_OUTPUT_POOL_MB"
DEFAULT_POOL_MB = 1024
MAX_WASTE_RATIO = 2  # a pooled buffer is reused for requests of at least 1/2 its size
_BYTES_PER_MB = 2**20


def _storage_use_count(tensor: torch.Tensor) -> int | None:
    """References to ``tensor``'s storage from live tensors, or None where PyTorch has no way
    to tell (then nothing is reused)."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return None
    storage = tensor.untyped_storage()  # a new Python handle: one reference of its own
    return int(counter(storage._cdata)) - 1


class OutputPool:
    """Flat CPU byte buffers handed out before, most recently used last; the idle ones (no
    live view) are reused."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffers: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def empty(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat ``(numel,)`` tensor of ``dtype`` with undefined contents: a view of an idle
        pooled buffer when one fits, else a new allocation that the pool adopts."""
        wanted = numel * dtype.itemsize
        if device.type != "cpu":
            return torch.empty(numel, dtype=dtype, device=device)
        if self.max_bytes <= 0 or wanted > self.max_bytes:
            return empty_bytes(wanted).view(dtype)
        with self._lock:
            idle = [b for b in self._buffers if _storage_use_count(b) == 1]
            fitting = [b for b in idle if wanted <= b.nbytes <= MAX_WASTE_RATIO * wanted]
            if fitting:
                buffer = min(fitting, key=lambda b: b.nbytes)
                self._forget(buffer)
            else:
                buffer = empty_bytes(wanted)
                self._trim(idle, room=buffer.nbytes)
            if _storage_use_count(buffer) is not None:
                self._buffers.append(buffer)
            return buffer[:wanted].view(dtype)

    def _trim(self, idle: list[torch.Tensor], room: int) -> None:
        """Drops the least recently used idle buffers until ``room`` more bytes fit the budget
        (buffers in use are the callers' memory and do not count)."""
        held = sum(b.nbytes for b in idle)
        for old in idle:
            if held + room <= self.max_bytes:
                break
            self._forget(old)
            held -= old.nbytes

    def _forget(self, buffer: torch.Tensor) -> None:
        self._buffers = [b for b in self._buffers if b is not buffer]

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()

    @contextmanager
    def budget(self, max_bytes: int) -> Iterator[None]:
        """Runs the block with another budget (0: every request gets fresh memory)."""
        previous, self.max_bytes = self.max_bytes, max_bytes
        try:
            yield
        finally:
            self.max_bytes = previous


def _pool_bytes_from_env() -> int:
    raw = os.environ.get(POOL_ENV, str(DEFAULT_POOL_MB))
    try:
        megabytes = float(raw)
    except ValueError as error:
        message = f"{POOL_ENV} must be a number of MiB (0 turns the pool off), not {raw!r}"
        raise ValueError(message) from error
    return int(megabytes * _BYTES_PER_MB)


OUTPUT_POOL = OutputPool(_pool_bytes_from_env())
