"""Memory tier in front of the Redis tier."""

from __future__ import annotations

import asyncio

from service.cache.memory import CacheEntry, MemoryLRU
from service.cache.redis_tier import RedisTier
from service.core.metrics import CACHE_REQUESTS

MEMORY = "memory"


class TieredCache:
    """Look-ups try memory, then Redis (a Redis hit is copied into memory); stores go to both."""

    def __init__(self, memory: MemoryLRU, redis: RedisTier | None) -> None:
        self.memory = memory
        self.redis = redis
        self._writes: set[asyncio.Task] = set()

    async def get(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """``(entry, tier)`` with tier ``"memory"`` / ``"redis"``, or ``(None, None)``."""
        entry = self.memory.get(key)
        CACHE_REQUESTS.labels(MEMORY, "hit" if entry else "miss").inc()
        if entry is not None:
            return entry, MEMORY
        if self.redis is None:
            return None, None
        entry = await self.redis.get(key)
        if entry is None:
            return None, None
        self.memory.put(key, entry)
        return entry, "redis"

    async def etag(self, key: str) -> str | None:
        """The ETag of ``key`` if any tier knows it (no blob transfer)."""
        etag = self.memory.etag(key)
        if etag is None and self.redis is not None:
            etag = await self.redis.etag(key)
        return etag

    def put(self, key: str, entry: CacheEntry) -> None:
        """Stores in memory now and in Redis in the background (the response does not wait)."""
        self.memory.put(key, entry)
        if self.redis is not None:
            task = asyncio.get_running_loop().create_task(self.redis.put(key, entry))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Waits for background Redis writes (shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
