"""Session fixtures: a private redis-server, a temporary model store and real uvicorn workers.

Servers (all started together, so their start-up overlaps):

* ``server_a``: Redis, no authentication.
* ``server_b``: the same Redis (a second replica), API and admin keys, four prediction slots
  and a tiny in-flight budget with no waiting (so concurrent misses get 503).
* ``server_c``: no Redis, small limits (schemathesis target; head fits up to 0.1 GFLOP).
* ``server_unready``: configured with a checkpoint that does not exist (never ready).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import RedisProcess, ServiceProcess
from svc_support import (
    ADMIN_KEY,
    MAX_HEAD_FIT_GFLOP_C,
    MAX_PARAMS_A,
    MAX_PARAMS_C,
    MODEL,
    USER_KEY,
    make_store,
)


@dataclass
class Cluster:
    redis: RedisProcess
    a: ServiceProcess
    b: ServiceProcess
    c: ServiceProcess
    unready: ServiceProcess
    store: Path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("service")
    store = make_store(folder / "store")
    redis = RedisProcess(folder / "redis").start()
    common = {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_MODEL_VERSION": "1",
        "TAL_TORCH_THREADS": "1",
        "TAL_REDIS_RETRY_SECONDS": "0.3",
        "TAL_REDIS_SOCKET_TIMEOUT": "0.3",
        "TAL_LOG_INTERVAL_SECONDS": "5",
        "HF_HUB_OFFLINE": "1",
    }
    a = ServiceProcess(
        folder,
        {
            **common,
            "TAL_REDIS_URL": redis.url,
            "TAL_MAX_PARAMS": str(MAX_PARAMS_A),
            "TAL_MAX_BODY_BYTES": "65536",
            "TAL_MAX_UPLOAD_BYTES": "2000000",
            "TAL_MEMORY_CACHE_BYTES": str(256 << 20),
        },
    )
    b = ServiceProcess(
        folder,
        {
            **common,
            "TAL_REDIS_URL": redis.url,
            "TAL_API_KEYS": USER_KEY,
            "TAL_ADMIN_KEYS": ADMIN_KEY,
            "TAL_MAX_PARAMS": str(MAX_PARAMS_A),
            "TAL_INFLIGHT_BUDGET_BYTES": "1",
            "TAL_BUDGET_WAIT_SECONDS": "0",
            "TAL_MAX_CONCURRENT_PREDICTIONS": "4",  # so that concurrent misses meet the budget
        },
    )
    c = ServiceProcess(
        folder,
        {
            **common,
            "TAL_MAX_PARAMS": str(MAX_PARAMS_C),
            "TAL_MAX_HEAD_FIT_GFLOP": str(MAX_HEAD_FIT_GFLOP_C),
            "TAL_MAX_BODY_BYTES": "16384",
            "TAL_MAX_UPLOAD_BYTES": "65536",
            "TAL_MEMORY_CACHE_BYTES": str(32 << 20),
        },
    )
    unready = ServiceProcess(folder, {**common, "TAL_MODEL_NAME": "no-such-model"})
    servers = (a, b, c, unready)
    try:
        for server in servers:
            server.start()
        for server in (a, b, c):
            server.wait_ready()
        unready.wait_listening()
        yield Cluster(redis, a, b, c, unready, store)
    finally:
        for server in servers:
            server.stop()
        redis.stop()


@pytest.fixture(scope="session")
def a(cluster: Cluster):
    with httpx.Client(base_url=cluster.a.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def b(cluster: Cluster):
    with httpx.Client(
        base_url=cluster.b.url, timeout=60, headers={"X-API-Key": USER_KEY}
    ) as client:
        yield client


@pytest.fixture(scope="session")
def c(cluster: Cluster):
    with httpx.Client(base_url=cluster.c.url, timeout=60) as client:
        yield client
