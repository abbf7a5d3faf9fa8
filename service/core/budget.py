"""The in-flight memory budget: estimated bytes of the predictions running at once."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.core.metrics import INFLIGHT_BYTES

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Peak memory of one miss, in output sizes: the prediction is written straight into the blob
# that is cached and sent; the decoder's temporaries add at most half of it (bench/service.py
# measures the peak of a miss against the blob).
PEAK_OUTPUT_MULTIPLE = 1.5


FITTING_DTYPE = "float32"  # a head is fitted to float32 weights, cast to the dtype after


def estimate_bytes(num_params: int, dtype: str, fit_head: bool = False) -> int:
    """Bytes a miss of ``num_params`` parameters in ``dtype`` may hold at its peak; fitting a
    head predicts in float32, builds the model once more (a float32 copy) and then casts into
    the blob (one more output in ``dtype``)."""
    if not fit_head:
        return math.ceil(num_params * DTYPE_BYTES[dtype] * PEAK_OUTPUT_MULTIPLE)
    float32 = DTYPE_BYTES[FITTING_DTYPE]
    per_param = float32 * PEAK_OUTPUT_MULTIPLE + float32 + DTYPE_BYTES[dtype]
    return math.ceil(num_params * per_param)


class BudgetExhausted(Exception):
    """No room in the budget within the wait time."""


class InflightBudget:
    """A byte semaphore. A request larger than the whole budget runs alone."""

    def __init__(self, capacity: int, wait_seconds: float) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        """Holds ``nbytes`` for the block; raises BudgetExhausted after ``wait_seconds``."""
        nbytes = min(nbytes, self.capacity)
        async with self._changed:
            try:
                if self.used + nbytes > self.capacity:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.used + nbytes <= self.capacity),
                        self.wait_seconds,
                    )
            except TimeoutError as exc:
                raise BudgetExhausted from exc
            self.used += nbytes
            INFLIGHT_BYTES.inc(nbytes)
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                INFLIGHT_BYTES.dec(nbytes)
                self._changed.notify_all()
