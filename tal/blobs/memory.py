"""Fresh byte buffers that fill fast: huge pages for blob-sized memory.

Writing into freshly allocated memory is bound by page faults, one per 4 KiB page: on our
2-core machines a fresh 346 MB buffer (ViT-B/16 in fp32) took about 0.6 s to fill with 4 KiB
pages and under 0.1 s with 2 MiB huge pages (``experiments/blob_transfer.py``). PyTorch uses
huge pages only when ``THP_MEM_ALLOC_ENABLE=1`` was set before it was imported (``tal`` and
the service set it; a client's host program may not), so :func:`empty_bytes` asks the kernel
directly: a private anonymous mapping advised ``MADV_HUGEPAGE``, which also works under the
kernel's default ``madvise`` huge-page mode.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from contextlib import suppress

import torch

HUGE_PAGE_BYTES = 2 << 20  # x86-64 and arm64 (4 KiB base pages)
_HUGE_PAGE_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only


def empty_bytes(size: int) -> torch.Tensor:
    """A flat ``uint8`` CPU tensor of ``size`` bytes with undefined contents.

    From ``HUGE_PAGE_BYTES`` up, where the platform has ``MADV_HUGEPAGE``, its memory is a
    private anonymous mapping advised to use huge pages (the tensor keeps the mapping alive;
    it is unmapped with the last view); otherwise ``torch.empty``.
    """
    if size < HUGE_PAGE_BYTES or _HUGE_PAGE_ADVICE is None:
        return torch.empty(size, dtype=torch.uint8)
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with suppress(OSError):  # a kernel without huge pages: plain pages still work
        mapping.madvise(_HUGE_PAGE_ADVICE)
    return torch.frombuffer(mapping, dtype=torch.uint8)


def read_into_new_buffer(readinto: Callable[[memoryview], int | None], size: int) -> torch.Tensor:
    """``size`` bytes from a ``readinto``-style source (a file, an HTTP body) in one fresh
    buffer from :func:`empty_bytes`, read straight into it.

    Raises:
        EOFError: the source ended first (the message says after how many bytes).
    """
    buffer = empty_bytes(size)
    view = memoryview(buffer.numpy())
    done = 0
    while done < size:
        count = readinto(view[done:])
        if not count:
            raise EOFError(f"it ended after {done} of {size} bytes")
        done += count
    return buffer
