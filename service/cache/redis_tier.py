"""The shared Redis tier. It fails open: any error counts, logs (rate-limited) and reads as a
miss, and Redis is skipped for ``retry_seconds`` before being tried again, so a dead or slow
Redis costs at most one timeout per interval and the tier comes back by itself.

Layout (``<p>`` = prefix): ``<p>:blob.v2:<key>`` = ETag (``ETAG_BYTES`` ASCII) + blob, only
for blobs up to ``max_value_bytes``; ``<p>:etag.v2:<key>`` = ETag (every blob, tiny).
Registered tasks have their own layout (``service.task_store``), which runs its commands through
:meth:`RedisTier.run`; ``TASKS_KIND``, ``SUPPORT_REF_KIND`` and ``SUPPORT_KIND`` name the hashes
of the layout before it, which the task store migrates from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.cache.memory import CacheEntry
from service.core.logging import RateLimitedLog
from service.core.metrics import CACHE_ERRORS, CACHE_REQUESTS

TIER = "redis"
ETAG_BYTES = 36  # 'W/"' + 32 hex + '"'
# blob and ETag keys name their layout, so entries of an older one (34-byte strong ETags) are
# never read
BLOB_KIND, ETAG_KIND = "blob.v2", "etag.v2"
TASKS_KIND, SUPPORT_REF_KIND, SUPPORT_KIND = "tasks", "support-ref", "support"
DEADLINE_FACTOR = 2  # hard deadline per command, in socket timeouts
T = TypeVar("T")


class RedisTier:
    """Async Redis access with timeouts, a connection pool and fail-open behaviour."""

    def __init__(
        self,
        url: str,
        prefix: str,
        ttl_seconds: int,
        max_value_bytes: int,
        socket_timeout: float,
        connect_timeout: float,
        retry_seconds: float,
        pool_size: int,
        log: RateLimitedLog,
    ) -> None:
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.max_value_bytes = max_value_bytes
        self.retry_seconds = retry_seconds
        self.deadline = DEADLINE_FACTOR * max(socket_timeout, connect_timeout)
        self.log = log
        self._down_until = 0.0
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=0,
        )
        self.client = aioredis.Redis(connection_pool=pool, retry_on_timeout=False)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def run(self, operation: str, call: Awaitable[T]) -> tuple[bool, T | None]:
        """Runs one command; ``(False, None)`` on any failure (counted and logged)."""
        try:
            return True, await asyncio.wait_for(call, self.deadline)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.retry_seconds
            CACHE_ERRORS.labels(TIER, operation).inc()
            self.log.warning(
                f"redis-{operation}",
                f"redis {operation} failed ({type(exc).__name__}: {exc}); "
                f"serving without the Redis tier for {self.retry_seconds:g} s",
            )
            return False, None

    async def get(self, key: str) -> CacheEntry | None:
        if not self.available:
            CACHE_REQUESTS.labels(TIER, "error").inc()
            return None
        ok, value = await self.run("get", self.client.get(self._key(BLOB_KIND, key)))
        if not ok:
            CACHE_REQUESTS.labels(TIER, "error").inc()
            return None
        if not value or len(value) < ETAG_BYTES:
            CACHE_REQUESTS.labels(TIER, "miss").inc()
            return None
        CACHE_REQUESTS.labels(TIER, "hit").inc()
        data = memoryview(value)  # the blob is sent from Redis's bytes, not a copy of them
        return CacheEntry(bytes(data[:ETAG_BYTES]).decode("ascii"), data[ETAG_BYTES:])

    async def etag(self, key: str) -> str | None:
        if not self.available:
            return None
        ok, value = await self.run("get", self.client.get(self._key(ETAG_KIND, key)))
        return value.decode("ascii") if ok and value else None

    async def put(self, key: str, entry: CacheEntry) -> None:
        """Stores the ETag always and the blob when it is at most ``max_value_bytes``."""
        if not self.available:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self._key(ETAG_KIND, key), entry.etag.encode("ascii"), ex=self.ttl)
            if len(entry.blob) <= self.max_value_bytes:
                value = b"".join((entry.etag.encode("ascii").ljust(ETAG_BYTES), entry.blob))
                pipe.set(self._key(BLOB_KIND, key), value, ex=self.ttl)
            await self.run("set", pipe.execute())

    async def delete(self, key: str) -> None:
        await self.run(
            "delete", self.client.unlink(self._key(BLOB_KIND, key), self._key(ETAG_KIND, key))
        )

    async def ping(self) -> bool:
        ok, _ = await self.run("get", self.client.ping())
        return ok

    async def close(self) -> None:
        await self.client.aclose()
