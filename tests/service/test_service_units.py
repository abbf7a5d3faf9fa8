"""The cache, single flight, budget and key pieces on their own (no server)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import torch

from service.cache.keys import BlobKey, blob_etag, task_hash
from service.cache.memory import CacheEntry, MemoryLRU
from service.cache.singleflight import SingleFlight
from service.core.budget import BudgetExhausted, InflightBudget, estimate_bytes
from service.core.config import Settings
from service.core.logging import RateLimitedLog
from service.core.security import key_matches, presented_key
from service.task_registry import SupportRef


def entry(size: int, tag: str = '"x"') -> CacheEntry:
    return CacheEntry(tag, b"\0" * size)


def test_memory_lru_is_bounded_in_bytes() -> None:
    lru = MemoryLRU(capacity=100)
    lru.put("a", entry(40))
    lru.put("b", entry(40))
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("c", entry(40))  # evicts b
    assert lru.get("b") is None and lru.get("a") is not None and lru.get("c") is not None
    assert lru.size == 80
    assert not lru.put("big", entry(60))  # above half the capacity: not kept
    assert lru.get("big") is None and lru.etag("big") == '"x"'  # but its ETag is


def test_keys() -> None:
    base = BlobKey("m/1", "spec", task_hash(None), "timm", "float32", "predicted")
    same = BlobKey("m/1", "spec", "none", "timm", "float32", "predicted")
    assert base.digest() == same.digest()
    assert base.digest() != replace(base, model_version="m/2").digest()
    assert base.digest() != replace(base, dtype="float16").digest()
    assert base.digest() != replace(base, head="discriminant:abc").digest()
    assert task_hash(torch.ones(4)) != task_hash(torch.zeros(4))
    etag = blob_etag(base.digest(), "0.1.0+abc|cpu")
    assert etag.startswith('W/"') and len(etag) == len('W/""') + 32
    assert etag == blob_etag(base.digest(), "0.1.0+abc|cpu")
    assert etag != blob_etag(base.digest(), "0.1.0+abc|cuda")  # another device rounds differently
    other = replace(base, model_version="m/2").digest()
    assert etag != blob_etag(other, "0.1.0+abc|cpu")


def test_single_flight_computes_once_and_shares_failures() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 7

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def run() -> None:
        flight: SingleFlight[int] = SingleFlight()
        results = await asyncio.gather(*(flight.run("k", compute) for _ in range(10)))
        assert [value for value, _ in results] == [7] * 10
        assert sum(shared for _, shared in results) == 9
        assert calls == 1 and len(flight) == 0
        outcomes = await asyncio.gather(
            *(flight.run("f", failing) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, ValueError) for o in outcomes)
        assert len(flight) == 0

    asyncio.run(run())


def test_budget_waits_then_refuses() -> None:
    async def run() -> None:
        budget = InflightBudget(capacity=100, wait_seconds=0.05)
        async with budget.reserve(80):
            with pytest.raises(BudgetExhausted):
                async with budget.reserve(30):
                    pass
            async with budget.reserve(20):
                assert budget.used == 100
        assert budget.used == 0
        async with budget.reserve(10**9):  # larger than everything: runs alone
            assert budget.used == 100

    asyncio.run(run())
    assert estimate_bytes(1000, "float16") == 1000 * 2 * 1.5
    # fitting a head predicts in float32 and builds one more float32 model
    assert estimate_bytes(1000, "float16", fit_head=True) == 1000 * (4 * 1.5 + 4 + 2)


def test_support_reference_round_trips() -> None:
    ref = SupportRef("0123abcd", classes=24, examples=300)
    assert SupportRef.decode(ref.encode()) == ref
    assert SupportRef.decode(b"junk") is None
    assert SupportRef.decode(b"\xff:1:2") is None


def test_keys_and_settings_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAL_API_KEYS", "a, b,,c")
    monkeypatch.setenv("TAL_MAX_PARAMS", "123")
    settings = Settings()
    assert settings.api_keys == ["a", "b", "c"] and settings.max_params == 123
    assert settings.auth_enabled
    assert key_matches("b", settings.api_keys) and not key_matches("d", settings.api_keys)
    assert presented_key("Bearer tok", None) == "tok"
    assert presented_key(None, "k") == "k" and presented_key("Basic x", None) is None


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(interval=60)
    assert log.warning("redis", "down")
    assert not log.warning("redis", "down")
    assert log.warning("other", "x")


def test_settings_file_and_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "service.env"
    settings_file.write_text("TAL_MODEL_NAME=from-file\nTAL_MAX_PARAMS=5\n")
    monkeypatch.setenv("TAL_MAX_PARAMS", "7")  # the environment wins over the file
    settings = Settings(_env_file=settings_file)  # type: ignore[call-arg]
    assert settings.model_name == "from-file" and settings.max_params == 7


def test_miss_queue_is_bounded_and_estimates_the_retry() -> None:
    from service.core.admission import MissQueue, QueueFull

    async def run() -> None:
        queue = MissQueue(capacity=2, concurrency=1, min_retry_after=1)
        queue._recent.extend([3.0, 3.0])  # recent predictions took 3 s each
        release = asyncio.Event()
        entered: list[int] = []

        async def miss(number: int) -> None:
            async with queue.slot():
                entered.append(number)
                await release.wait()

        tasks = [asyncio.create_task(miss(n)) for n in range(3)]  # 1 running, 2 waiting
        await asyncio.sleep(0.01)
        assert (queue.running, queue.waiting) == (1, 2) and entered == [0]
        with pytest.raises(QueueFull) as full:  # refused at once, not after a wait
            async with queue.slot():
                pass
        assert full.value.retry_after == 9  # 3 misses ahead x 3 s on one slot
        release.set()
        await asyncio.gather(*tasks)
        assert entered == [0, 1, 2] and (queue.running, queue.waiting) == (0, 0)
        async with queue.slot():  # room again
            pass

    asyncio.run(run())
