"""Admission of cache misses: a bounded queue in front of the prediction slots.

A burst of distinct misses must not turn into a line that every later miss waits at for tens of
seconds: at most ``capacity`` misses wait for a slot, and one more is refused at once with the
time a retry should wait (``Retry-After``), estimated from the queue ahead of it and the recent
prediction times. Hits, 304s, probes and ``/metrics`` never enter it: they are answered on the
event loop without waiting for a prediction.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.core.metrics import QUEUED_MISSES

RECENT_PREDICTIONS = 32  # prediction times kept for the retry estimate


class QueueFull(Exception):
    """The miss queue is full; ``retry_after`` seconds is when a slot is likely free."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"{waiting} misses already wait for a prediction slot")
        self.waiting = waiting
        self.retry_after = retry_after


class MissQueue:
    """``concurrency`` prediction slots and at most ``capacity`` misses waiting for one."""

    def __init__(self, capacity: int, concurrency: int, min_retry_after: int) -> None:
        self.capacity = capacity
        self.concurrency = concurrency
        self.min_retry_after = min_retry_after
        self.waiting = 0
        self.running = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._recent: deque[float] = deque(maxlen=RECENT_PREDICTIONS)

    def retry_after(self) -> int:
        """Seconds until the misses ahead are likely done: all waiting and running ones at the
        median recent prediction time, shared by the slots (at least ``min_retry_after``)."""
        typical = statistics.median(self._recent) if self._recent else 0.0
        ahead = self.waiting + self.running
        return max(self.min_retry_after, math.ceil(ahead * typical / self.concurrency))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A prediction slot, after waiting in the queue; raises QueueFull when it is full."""
        if self.waiting >= self.capacity:
            raise QueueFull(self.waiting, self.retry_after())
        self.waiting += 1
        QUEUED_MISSES.inc()
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            QUEUED_MISSES.dec()
        self.running += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._recent.append(time.perf_counter() - start)
            self.running -= 1
            self._slots.release()
