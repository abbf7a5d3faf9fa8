"""The shared Redis tier. It fails open: any error counts, logs (rate-limited) and reads as a
miss, and Redis is skipped for ``retry_seconds`` before being tried again, so a dead or slow
Redis costs at most one timeout per interval and the tier comes back by itself.

Layout (``<p>`` = prefix): ``<p>:blob.v2:<key>`` = ETag (``ETAG_BYTES`` ASCII) + blob, only
for blobs up to ``max_value_bytes``; ``<p>:etag.v2:<key>`` = ETag (every blob, tiny);
``<p>:tasks:<model name>`` = hash of task name -> float32 embedding bytes;
``<p>:support-ref:<model name>`` = task name -> the reference of the labelled images it was
registered with (tiny) and ``<p>:support:<model name>`` = task name -> those images (a
safetensors blob of a few MB, read only to fit a head), written with the embedding in one
transaction.
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

    async def _run(self, operation: str, call: Awaitable[T]) -> tuple[bool, T | None]:
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
        ok, value = await self._run("get", self.client.get(self._key(BLOB_KIND, key)))
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
        ok, value = await self._run("get", self.client.get(self._key(ETAG_KIND, key)))
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
            await self._run("set", pipe.execute())

    async def delete(self, key: str) -> None:
        await self._run(
            "delete", self.client.unlink(self._key(BLOB_KIND, key), self._key(ETAG_KIND, key))
        )

    async def get_tasks(self, model_name: str) -> dict[str, bytes] | None:
        """All registered tasks of ``model_name``; None when Redis cannot answer."""
        if not self.available:
            return None
        ok, value = await self._run("get", self.client.hgetall(self._key(TASKS_KIND, model_name)))
        if not ok:
            return None
        return {k.decode(): bytes(v) for k, v in (value or {}).items()}

    async def get_task(self, model_name: str, task: str) -> tuple[bytes | None, bytes | None]:
        """``(embedding, support reference)`` of a registered task, read together (either None
        when absent); ``(None, None)`` when Redis cannot answer."""
        if not self.available:
            return None, None
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(self._key(TASKS_KIND, model_name), task)
            pipe.hget(self._key(SUPPORT_REF_KIND, model_name), task)
            ok, values = await self._run("get", pipe.execute())
        if not ok or not values:
            return None, None
        embedding, reference = values
        return (bytes(embedding) if embedding else None), (bytes(reference) if reference else None)

    async def get_support(self, model_name: str, task: str) -> bytes | None:
        """The support blob of a registered task (a few MB at most); None when absent."""
        if not self.available:
            return None
        ok, value = await self._run(
            "get", self.client.hget(self._key(SUPPORT_KIND, model_name), task)
        )
        return bytes(value) if ok and value else None

    async def put_task(
        self,
        model_name: str,
        task: str,
        embedding: bytes,
        support: tuple[bytes, bytes] | None = None,
    ) -> bool:
        """Stores a task's embedding and its ``(reference, blob)`` support in one transaction;
        without support, removes any the task had, so no replica fits a head to old images."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(TASKS_KIND, model_name), task, embedding)
            if support is None:
                pipe.hdel(self._key(SUPPORT_REF_KIND, model_name), task)
                pipe.hdel(self._key(SUPPORT_KIND, model_name), task)
            else:
                reference, blob = support
                pipe.hset(self._key(SUPPORT_REF_KIND, model_name), task, reference)
                pipe.hset(self._key(SUPPORT_KIND, model_name), task, blob)
            ok, _ = await self._run("set", pipe.execute())
        return ok

    async def ping(self) -> bool:
        ok, _ = await self._run("get", self.client.ping())
        return ok

    async def close(self) -> None:
        await self.client.aclose()
