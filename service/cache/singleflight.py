"""Single flight: concurrent calls for the same key share one computation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``await flight.run(key, compute)``: the first caller computes, the others wait for it.

    A failure reaches every waiter; the key is free again afterwards. A waiter that is
    cancelled (client gone) does not cancel the shared computation.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[T]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Returns ``(value, shared)``; ``shared`` is True for callers that waited."""
        future = self._running.get(key)
        if future is not None:
            return await asyncio.shield(future), True
        future = asyncio.get_running_loop().create_future()
        self._running[key] = future
        task = asyncio.ensure_future(self._complete(key, future, compute))
        return await asyncio.shield(task), False

    async def _complete(
        self, key: str, future: asyncio.Future[T], compute: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(value)
            return value
        finally:
            self._running.pop(key, None)

    def __len__(self) -> int:
        return len(self._running)
