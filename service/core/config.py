"""Service settings: environment variables with the prefix ``TAL_``, or a ``.env``-style file.

The file is named by ``TAL_SETTINGS_FILE`` (``tal serve --config FILE`` sets it); environment
variables win over the file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.identity import parse_key_entry
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES

SETTINGS_FILE_ENV = "TAL_SETTINGS_FILE"
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

DEFAULT_MAX_PARAMS = 2_000_000_000
DEFAULT_MAX_BODY_BYTES = 1 * MIB
DEFAULT_MAX_UPLOAD_BYTES = 64 * MIB
DEFAULT_MAX_UPLOAD_UNPACKED_BYTES = 512 * MIB
DEFAULT_MAX_TASK_IMAGES = 4_096
DEFAULT_MAX_LOCAL_TASK_SUPPORTS = 64  # registered tasks whose images one process keeps
# a few seconds of a 2-core CPU (docs/service.md); a GPU worker can take far more
DEFAULT_MAX_HEAD_FIT_GFLOP = 250.0
DEFAULT_INFLIGHT_BUDGET_BYTES = 8 * GIB
DEFAULT_BUDGET_WAIT_SECONDS = 10.0
DEFAULT_RETRY_AFTER_SECONDS = 2
DEFAULT_MEMORY_CACHE_BYTES = 1 * GIB
DEFAULT_REDIS_MAX_VALUE_BYTES = 16 * MIB  # measured break-even, docs/service.md
DEFAULT_REDIS_TTL_SECONDS = 24 * 3600
DEFAULT_REDIS_SOCKET_TIMEOUT = 1.0
DEFAULT_REDIS_CONNECT_TIMEOUT = 0.25
DEFAULT_REDIS_RETRY_SECONDS = 2.0
DEFAULT_REDIS_POOL_SIZE = 16
DEFAULT_LOG_INTERVAL_SECONDS = 30.0
DEFAULT_MAX_QUEUED_MISSES = 8  # misses waiting for a slot; one more gets 503 + Retry-After at once
DEFAULT_MAX_CONCURRENT_PREDICTIONS = 1
# a registration with 300 support images is ~1.2 MB in Redis: 100 per owner stay near 120 MB
DEFAULT_MAX_TASKS_PER_OWNER = 100
DEFAULT_DRAIN_GRACE_SECONDS = 30.0
MAX_TASK_TTL_SECONDS = 2**31 - 1  # Redis takes milliseconds; the Lua scripts compute in doubles


def _split_keys(value: object) -> object:
    """``"a,b"`` -> ``["a", "b"]``; lists pass through; empty entries are dropped."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. Sizes are bytes, durations seconds."""

    model_config = SettingsConfigDict(env_prefix="TAL_", extra="ignore", env_file_encoding="utf-8")

    model_store: Path | None = Field(
        None, description="model store folder (default: $TAL_MODEL_STORE or ./model_store)"
    )
    model_name: str = Field("tal-default", description="checkpoint name in the store")
    model_version: str = Field("latest", description="checkpoint version, or 'latest'")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present")

    redis_url: str | None = Field(None, description="e.g. redis://redis:6379/0; unset = no Redis")
    redis_prefix: str = Field("tal", description="prefix of every Redis key")
    redis_max_value_bytes: int = Field(
        DEFAULT_REDIS_MAX_VALUE_BYTES, ge=0, description="blobs above this skip Redis"
    )
    redis_ttl_seconds: int = Field(DEFAULT_REDIS_TTL_SECONDS, ge=1)
    redis_socket_timeout: float = Field(DEFAULT_REDIS_SOCKET_TIMEOUT, gt=0)
    redis_connect_timeout: float = Field(DEFAULT_REDIS_CONNECT_TIMEOUT, gt=0)
    redis_retry_seconds: float = Field(
        DEFAULT_REDIS_RETRY_SECONDS, ge=0, description="after an error, skip Redis this long"
    )
    redis_pool_size: int = Field(DEFAULT_REDIS_POOL_SIZE, ge=1)

    memory_cache_bytes: int = Field(DEFAULT_MEMORY_CACHE_BYTES, ge=0, description="LRU capacity")

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated, each 'key' or 'name:key' (the name is the owner of the "
        "tasks it registers); empty = no authentication",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated, as api_keys; for /v1/models/reload and to replace or "
        "delete any owner's task",
    )

    max_params: int = Field(DEFAULT_MAX_PARAMS, ge=1, description="largest spec served (413)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, description="JSON body limit")
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, description=".npz upload limit")
    max_upload_unpacked_bytes: int = Field(
        DEFAULT_MAX_UPLOAD_UNPACKED_BYTES, ge=1, description="limit on an .npz's unpacked arrays"
    )
    max_task_images: int = Field(
        DEFAULT_MAX_TASK_IMAGES, ge=1, description="images read from an .npz upload at most"
    )
    task_support_images: int = Field(
        TASK_EMBEDDING_EXAMPLES,
        ge=1,
        description="images a registered task keeps, balanced over classes: they make its "
        "embedding and its discriminant heads",
    )
    max_head_fit_gflop: float = Field(
        DEFAULT_MAX_HEAD_FIT_GFLOP,
        ge=0,
        description="largest forward pass over a task's images (GFLOP, tal.heads.support."
        "head_fit_gflop) a head is fitted for; above it 'auto' keeps the predicted head",
    )
    max_local_task_supports: int = Field(
        DEFAULT_MAX_LOCAL_TASK_SUPPORTS,
        ge=1,
        description="registered tasks whose images this process keeps in memory (the least "
        "recently used are dropped; with Redis every replica can fetch them again)",
    )
    inflight_budget_bytes: int = Field(
        DEFAULT_INFLIGHT_BUDGET_BYTES, ge=1, description="estimated bytes of concurrent misses"
    )
    budget_wait_seconds: float = Field(
        DEFAULT_BUDGET_WAIT_SECONDS, ge=0, description="wait for budget before answering 503"
    )
    retry_after_seconds: int = Field(DEFAULT_RETRY_AFTER_SECONDS, ge=1)
    max_concurrent_predictions: int = Field(DEFAULT_MAX_CONCURRENT_PREDICTIONS, ge=1)
    max_queued_misses: int = Field(
        DEFAULT_MAX_QUEUED_MISSES,
        ge=0,
        description="misses waiting for a prediction slot at most; one more is answered 503 "
        "at once, with Retry-After estimated from the queue ahead and recent prediction times",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads per worker; default: the usable cores (affinity and "
        "cgroup CPU quota) divided by the workers",
    )
    workers: int = Field(1, ge=1, description="worker processes sharing the cores (tal serve)")
    log_interval_seconds: float = Field(
        DEFAULT_LOG_INTERVAL_SECONDS, ge=0, description="at most one log line per error kind"
    )

    max_tasks_per_owner: int = Field(
        DEFAULT_MAX_TASKS_PER_OWNER,
        ge=0,
        description="registered tasks one owner (API key) may hold at once; past it POST "
        "/v1/tasks answers 409 (0 = no limit)",
    )
    task_ttl_seconds: int = Field(
        0,
        ge=0,
        le=MAX_TASK_TTL_SECONDS,
        description="lifetime of a registration that names no ttl_seconds (0 = none)",
    )
    max_task_ttl_seconds: int = Field(
        0,
        ge=0,
        le=MAX_TASK_TTL_SECONDS,
        description="largest ttl_seconds a registration may ask for (0 = no bound); when set, "
        "every registration expires and task_ttl_seconds must be 1 to this",
    )
    drain_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="after SIGTERM, keep the listener open this long with /readyz at 503 (for "
        "load balancers that follow readiness), then stop accepting",
    )
    drain_grace_seconds: float = Field(
        DEFAULT_DRAIN_GRACE_SECONDS,
        ge=0,
        description="after the listener closes, let requests in flight finish this long, "
        "then cancel them and exit",
    )

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        return _split_keys(value)

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _check_key_names(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_key_entry(entry)  # a reserved or malformed name raises ValueError
        return value

    @model_validator(mode="after")
    def _check_task_ttl(self) -> Settings:
        bound = self.max_task_ttl_seconds
        if bound and not 1 <= self.task_ttl_seconds <= bound:
            raise ValueError(
                f"task_ttl_seconds ({self.task_ttl_seconds}) must be between 1 and "
                f"max_task_ttl_seconds ({bound}) when max_task_ttl_seconds is set: set "
                "TAL_TASK_TTL_SECONDS too"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.admin_keys)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (and the file named by ``TAL_SETTINGS_FILE``)."""
    return Settings(_env_file=os.environ.get(SETTINGS_FILE_ENV))  # type: ignore[call-arg]
