"""Everything a running worker holds, built once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from service.cache.memory import MemoryLRU
from service.cache.redis_tier import RedisTier
from service.cache.tiered import TieredCache
from service.checkpoints import ModelManager
from service.core.config import Settings
from service.core.draining import Drain
from service.core.logging import RateLimitedLog
from service.predictor import Predictor
from service.task_registry import TaskRegistry


@dataclass
class ServiceState:
    settings: Settings
    models: ModelManager
    tasks: TaskRegistry
    cache: TieredCache
    predictor: Predictor
    redis: RedisTier | None
    log: RateLimitedLog
    drain: Drain

    @classmethod
    def build(cls, settings: Settings) -> ServiceState:
        log = RateLimitedLog(settings.log_interval_seconds)
        redis = None
        if settings.redis_url:
            redis = RedisTier(
                settings.redis_url,
                settings.redis_prefix,
                settings.redis_ttl_seconds,
                settings.redis_max_value_bytes,
                settings.redis_socket_timeout,
                settings.redis_connect_timeout,
                settings.redis_retry_seconds,
                settings.redis_pool_size,
                log,
            )
        cache = TieredCache(MemoryLRU(settings.memory_cache_bytes), redis)
        return cls(
            settings=settings,
            models=ModelManager(settings),
            tasks=TaskRegistry(
                settings.model_name,
                redis,
                settings.max_local_task_supports,
                max_tasks_per_owner=settings.max_tasks_per_owner,
                private_names=settings.auth_enabled,
            ),
            cache=cache,
            predictor=Predictor(settings, cache, log),
            redis=redis,
            log=log,
            drain=Drain(settings.drain_delay_seconds, settings.drain_grace_seconds),
        )

    async def close(self) -> None:
        await self.cache.drain()
        if self.redis is not None:
            await self.redis.close()
