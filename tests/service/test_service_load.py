"""Concurrency: 200 mixed requests with no failure and bounded memory; Redis killed in the
middle of a burst (no failure) and restarted (hits resume by themselves)."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import psutil
import pytest
from harness import RedisProcess
from svc_support import TASK, TINY_GPT2, TINY_VIT, metric_value

REQUESTS = 200
CONCURRENCY = 32
RSS_GROWTH_LIMIT = 150 << 20
REDIS_BACK_TIMEOUT = 10.0
HUNG_REDIS_LIMIT_SECONDS = 20.0
SHED, SHED_RETRIES = 503, 20


def mixed_bodies(n: int, salt: int) -> list[dict]:
    """``n`` requests over a few dozen distinct keys: ViT / GPT-2, formats, dtypes, tasks."""
    variants = []
    for depth, dtype, task in itertools.product((1, 2, 3), ("float32", "bfloat16"), (None, TASK)):
        variants.append({"arch": {**TINY_VIT, "depth": depth}, "dtype": dtype, "task": task})
        vit = {**TINY_VIT, "depth": depth, "num_classes": 2 + salt}
        variants.append({"arch": vit, "format": "hf", "dtype": dtype})
        gpt2 = {**TINY_GPT2, "n_layer": depth, "n_positions": 8 + salt}
        variants.append({"arch": gpt2, "format": "hf", "dtype": dtype})
    return [variants[i % len(variants)] for i in range(n)]


async def burst(url: str, bodies: list[dict], during=None) -> list[httpx.Response]:
    """Sends ``bodies`` from ``CONCURRENCY`` clients that behave as TALClient does: a 503 (the
    miss queue full, shed at once) is retried after its ``Retry-After``."""
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(body: dict) -> httpx.Response:
            async with limit:
                for _ in range(SHED_RETRIES):
                    response = await client.post("/v1/initialize", json=body)
                    if response.status_code != SHED:
                        break
                    await asyncio.sleep(float(response.headers["retry-after"]))
                return response

        tasks = [asyncio.create_task(one(body)) for body in bodies]
        if during is not None:
            await during()
        return await asyncio.gather(*tasks)


def check(responses: list[httpx.Response]) -> None:
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * len(responses), {s: statuses.count(s) for s in set(statuses)}
    for response in responses:
        assert int(response.headers["content-length"]) == len(response.content)


def test_200_mixed_concurrent_requests_memory_bounded(cluster) -> None:
    process = psutil.Process(cluster.a.pid)
    check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS, salt=1000))))
    rss_after_first = process.memory_info().rss
    check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS, salt=2000))))
    check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS, salt=1000))))
    growth = process.memory_info().rss - rss_after_first
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.usefixtures("cluster")
def test_redis_killed_mid_burst_then_restarted(cluster, a: httpx.Client) -> None:
    redis: RedisProcess = cluster.redis
    errors_before = metric_value(a, "tal_cache_errors_total", tier="redis")

    async def kill_soon() -> None:
        await asyncio.sleep(0.3)
        redis.kill()

    try:
        check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS, salt=3000), kill_soon)))
        # Redis is down: misses and hits still succeed
        check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS // 4, salt=4000))))
        assert metric_value(a, "tal_cache_errors_total", tier="redis") > errors_before
    finally:
        redis.start()  # same port, empty
    classes = 40  # a fresh key per try: the spec's class count
    deadline = time.monotonic() + REDIS_BACK_TIMEOUT
    while True:  # the tier comes back by itself once the retry interval has passed
        body = {"arch": {**TINY_VIT, "depth": 8, "num_classes": classes}}
        first = a.post("/v1/initialize", json=body)
        assert first.status_code == 200
        with httpx.Client(
            base_url=cluster.b.url, headers={"X-API-Key": "user-key-123"}, timeout=60
        ) as b:
            again = b.post("/v1/initialize", json=body)
        if again.headers.get("x-cache-tier") == "redis":
            break
        assert time.monotonic() < deadline, "the Redis tier did not come back"
        classes += 1
        time.sleep(0.3)
    assert again.content == first.content


def test_hung_redis_costs_a_bounded_delay(cluster) -> None:
    """SIGSTOPped Redis: requests still succeed; each waits at most one command deadline."""
    redis: RedisProcess = cluster.redis
    redis.pause()
    try:
        start = time.monotonic()
        check(asyncio.run(burst(cluster.a.url, mixed_bodies(REQUESTS // 4, salt=5000))))
        assert time.monotonic() - start < HUNG_REDIS_LIMIT_SECONDS
    finally:
        redis.resume()
