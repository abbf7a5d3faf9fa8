"""Registered tasks belong to their key's owner: two replicas with keys sharing one Redis.

Real redis-server, real uvicorn workers, real HTTP; the old Redis layout is written with
redis-py as an older version wrote it.
"""

from __future__ import annotations

import io as pyio
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import redis
from harness import RedisProcess, ServiceProcess
from svc_support import MODEL, TASK, TINY_VIT, make_store

from service.core.identity import hashed_owner

TASK_DIM = 192
LIMIT = 3
MAX_TTL = 3600
SHORT_TTL = 2
EXPIRY_SLACK = 0.6
ALICE, BOB, DAVE, ERIN, BARE, OPS = (
    "alice-secret-1",
    "bob-secret-2",
    "dave-secret-4",
    "erin-secret-5",
    "bare-secret-3",
    "ops-secret-9",
)
KEYS = f"alice:{ALICE},bob:{BOB},dave:{DAVE},erin:{ERIN},{BARE}"


@dataclass
class Replicas:
    redis: RedisProcess
    one: ServiceProcess
    two: ServiceProcess


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("owners")
    store = make_store(folder / "store")
    redis_process = RedisProcess(folder / "redis").start()
    settings = {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_MODEL_VERSION": "1",
        "TAL_TORCH_THREADS": "1",
        "TAL_REDIS_URL": redis_process.url,
        "TAL_API_KEYS": KEYS,
        "TAL_ADMIN_KEYS": f"ops:{OPS}",
        "TAL_MAX_TASKS_PER_OWNER": str(LIMIT),
        "TAL_MAX_TASK_TTL_SECONDS": str(MAX_TTL),
        "TAL_TASK_TTL_SECONDS": str(MAX_TTL),
        "HF_HUB_OFFLINE": "1",
    }
    one, two = ServiceProcess(folder, settings), ServiceProcess(folder, settings)
    try:
        for server in (one, two):
            server.start()
        for server in (one, two):
            server.wait_ready()
        yield Replicas(redis_process, one, two)
    finally:
        for server in (one, two):
            server.stop()
        redis_process.stop()


def client(server: ServiceProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": key})


def vector(seed: float) -> list[float]:
    return [math.sin(seed + i) for i in range(TASK_DIM)]


def register(http: httpx.Client, name: str, seed: float = 0.0, **extra: object) -> httpx.Response:
    return http.post("/v1/tasks", json={"name": name, "embedding": vector(seed), **extra})


def listed(http: httpx.Client) -> dict[str, dict]:
    return {row["name"]: row for row in http.get("/v1/tasks").json()["tasks"]}


def use(http: httpx.Client, name: str) -> httpx.Response:
    return http.post("/v1/initialize", json={"arch": TINY_VIT, "task": name})


def test_owners_are_key_names_and_lists_are_per_owner(replicas: Replicas) -> None:
    with (
        client(replicas.one, ALICE) as alice,
        client(replicas.two, BOB) as bob,
        client(replicas.two, BARE) as bare,
        client(replicas.one, OPS) as ops,
    ):
        created = register(alice, "alice-1")
        assert created.status_code == 201, created.text
        assert created.json()["owner"] == "alice" and created.json()["shared"] is True
        assert created.json()["expires_at"] is not None  # the server's default TTL
        assert register(bare, "bare-1").json()["owner"] == hashed_owner(BARE)
        mine = listed(alice)
        assert mine["alice-1"]["owner"] == "alice" and mine[TASK]["source"] == "checkpoint"
        assert mine["alice-1"]["created_at"] and mine["alice-1"]["expires_at"]
        assert "bare-1" not in mine
        assert "alice-1" not in listed(bob) and TASK in listed(bob)
        everyone = listed(ops)
        assert everyone["alice-1"]["owner"] == "alice"
        assert everyone["bare-1"]["owner"] == hashed_owner(BARE)
        # A task is used by name from any key and replica, as before.
        assert use(bob, "alice-1").status_code == 200
        # An unknown task's error does not name other owners' tasks.
        unknown = use(bob, "nope")
        assert unknown.status_code == 404 and "alice-1" not in unknown.text
    stored = everything_in(redis.Redis.from_url(replicas.redis.url))
    assert b"alice" in stored
    for secret in (ALICE, BARE, OPS):
        assert secret.encode() not in stored  # the keys themselves are stored nowhere


def everything_in(store: redis.Redis) -> bytes:
    """Every key name, hash field and value and sorted-set member in Redis, concatenated."""
    parts = []
    for key in store.keys("*"):
        parts.append(key)
        kind = store.type(key)
        if kind == b"hash":
            for field, value in store.hgetall(key).items():
                parts += [field, value]
        elif kind == b"zset":
            parts += store.zrange(key, 0, -1)
    return b"|".join(parts)


def test_other_keys_cannot_replace_or_delete(replicas: Replicas) -> None:
    with client(replicas.one, ALICE) as alice, client(replicas.two, BOB) as bob:
        assert register(alice, "alice-2", seed=1.0).status_code == 201
        before = listed(alice)["alice-2"]["hash"]
        for replica in (replicas.one, replicas.two):
            with client(replica, BOB) as other:
                replaced = register(other, "alice-2", seed=2.0)
                assert replaced.status_code == 403, replaced.text
                assert "another owner" in replaced.json()["detail"]
                deleted = other.delete("/v1/tasks/alice-2")
                assert deleted.status_code == 403 and "admin key" in deleted.json()["detail"]
        assert listed(alice)["alice-2"]["hash"] == before
        assert use(bob, "alice-2").status_code == 200
        assert alice.delete("/v1/tasks/alice-2").status_code == 204


def test_admin_replaces_and_deletes_any_task(replicas: Replicas) -> None:
    with client(replicas.one, ALICE) as alice, client(replicas.two, OPS) as ops:
        assert register(alice, "alice-3", seed=3.0).status_code == 201
        replaced = register(ops, "alice-3", seed=4.0)
        assert replaced.status_code == 201, replaced.text
        assert replaced.json()["owner"] == "alice"  # a replacement keeps the owner
        assert listed(alice)["alice-3"]["hash"] == replaced.json()["hash"]
        assert ops.delete("/v1/tasks/alice-3").status_code == 204
        assert "alice-3" not in listed(alice) and "alice-3" not in listed(ops)


def test_delete_is_seen_by_the_other_replica(replicas: Replicas) -> None:
    with client(replicas.one, ALICE) as on_one, client(replicas.two, ALICE) as on_two:
        assert register(on_one, "alice-4", seed=5.0).status_code == 201
        assert use(on_two, "alice-4").status_code == 200  # replica two now holds a copy
        assert on_one.delete("/v1/tasks/alice-4").status_code == 204
        gone = use(on_two, "alice-4")
        assert gone.status_code == 404, gone.text
        assert on_two.delete("/v1/tasks/alice-4").status_code == 404
        checkpoint = on_two.delete(f"/v1/tasks/{TASK}")
        assert checkpoint.status_code == 409 and "checkpoint" in checkpoint.json()["detail"]
        assert on_two.delete("/v1/tasks/bad%20name").status_code == 422
    with httpx.Client(base_url=replicas.one.url) as anonymous:
        assert anonymous.delete("/v1/tasks/alice-4").status_code == 401


def test_limit_per_owner_holds_across_replicas(replicas: Replicas) -> None:
    with client(replicas.one, BOB) as one, client(replicas.two, BOB) as two:
        for i, http in enumerate((one, two, one)):
            assert register(http, f"bob-{i}", seed=i).status_code == 201
        refused = register(two, "bob-3")
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "task_limit"
        assert f"holds {LIMIT}" in body["detail"] and "DELETE /v1/tasks/" in body["detail"]
        assert register(two, "bob-0", seed=9.0).status_code == 201  # replacing is not adding
        assert one.delete("/v1/tasks/bob-1").status_code == 204
        assert register(two, "bob-3").status_code == 201
    # Concurrent registrations of new names, spread over both replicas: exactly LIMIT win.
    clients = [client(replica, DAVE) for replica in (replicas.one, replicas.two)]
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda i: register(clients[i % 2], f"dave-{i}").status_code, range(8))
            )
    finally:
        for http in clients:
            http.close()
    assert sorted(statuses) == [201] * LIMIT + [409] * (8 - LIMIT)


def npz_upload(name: str, ttl: str) -> dict:
    buffer = pyio.BytesIO()
    rng = np.random.default_rng(2)
    np.savez(buffer, images=rng.integers(0, 255, (12, 28, 28), np.uint8), labels=np.arange(12) % 3)
    return {
        "data": {"name": name, "ttl_seconds": ttl},
        "files": {"file": ("t.npz", buffer.getvalue(), "application/octet-stream")},
    }


def test_ttl_expires_on_every_replica_and_frees_the_limit(replicas: Replicas) -> None:
    with client(replicas.one, ERIN) as one, client(replicas.two, ERIN) as two:
        for bad in (0, MAX_TTL + 1):
            refused = register(one, "erin-bad", ttl_seconds=bad)
            assert refused.status_code == 422 and str(MAX_TTL) in refused.json()["detail"]
        assert one.post("/v1/tasks", **npz_upload("erin-bad", "soon")).status_code == 422
        uploaded = one.post("/v1/tasks", **npz_upload("erin-img", str(SHORT_TTL)))
        assert uploaded.status_code == 201, uploaded.text
        start = time.monotonic()
        for i in range(LIMIT - 1):
            assert register(two, f"erin-{i}", ttl_seconds=SHORT_TTL).status_code == 201
        assert register(one, "erin-late").status_code == 409  # at the limit
        assert use(two, "erin-img").status_code == 200  # replica two holds a copy
        assert use(one, "erin-0").status_code == 200
        time.sleep(max(0.0, SHORT_TTL + EXPIRY_SLACK - (time.monotonic() - start)))
        for http in (one, two):
            for name in ("erin-img", "erin-0", "erin-1"):
                assert use(http, name).status_code == 404
            assert not {"erin-img", "erin-0", "erin-1"} & set(listed(http))
        assert register(one, "erin-late").status_code == 201  # expired tasks do not count
    store = redis.Redis.from_url(replicas.redis.url)
    assert not store.exists(f"tal:task.v2:{MODEL}:erin-img")  # images went with the task


def test_tasks_of_the_old_layout_move_over(replicas: Replicas) -> None:
    store = redis.Redis.from_url(replicas.redis.url)
    embedding = np.asarray(vector(7.0), np.float32).tobytes()
    store.hset(f"tal:tasks:{MODEL}", "old-task", embedding)
    with client(replicas.two, ALICE) as alice, client(replicas.one, OPS) as ops:
        assert use(alice, "old-task").status_code == 200
        row = listed(ops)["old-task"]
        assert row["owner"] == "legacy" and row["expires_at"] is None
        assert alice.delete("/v1/tasks/old-task").status_code == 403
        assert ops.delete("/v1/tasks/old-task").status_code == 204
    assert not store.exists(f"tal:tasks:{MODEL}")
