"""Task registration (vector and .npz images), shared between replicas through Redis."""

from __future__ import annotations

import io as pyio
import json
import math
import time
import zipfile

import httpx
import numpy as np
from svc_support import ADMIN_KEY, TASK, TINY_VIT

from tal.blobs import io

TASK_DIM = 192
REDIS_WRITE_GRACE = 0.3


def npz_bytes(n: int = 24, size: int = 28) -> bytes:
    buffer = pyio.BytesIO()
    rng = np.random.default_rng(1)
    np.savez(
        buffer,
        images=rng.integers(0, 255, (n, size, size), dtype=np.uint8),
        labels=np.arange(n) % 3,
    )
    return buffer.getvalue()


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    files = {"file": ("task.npz", data, "application/octet-stream")}
    return client.post("/v1/tasks", data={"name": name}, files=files)


def test_list_tasks(a: httpx.Client) -> None:
    body = a.get("/v1/tasks").json()
    assert body["task_dim"] == TASK_DIM
    assert {"name": TASK, "source": "checkpoint"}.items() <= body["tasks"][0].items() or any(
        row["name"] == TASK and row["source"] == "checkpoint" for row in body["tasks"]
    )


def test_register_vector_seen_by_other_replica(a: httpx.Client, b: httpx.Client) -> None:
    vector = [math.sin(i) for i in range(TASK_DIM)]
    created = a.post("/v1/tasks", json={"name": "vec-task", "embedding": vector})
    assert created.status_code == 201, created.text
    assert created.json()["shared"] is True
    # B has keys: a user key lists its own tasks only, the admin key every owner's
    admin = {"X-API-Key": ADMIN_KEY}
    rows = {row["name"]: row for row in b.get("/v1/tasks", headers=admin).json()["tasks"]}
    assert rows["vec-task"]["owner"] == "anonymous"  # A has no keys
    assert "vec-task" not in {row["name"] for row in b.get("/v1/tasks").json()["tasks"]}
    on_b = b.post("/v1/initialize", json={"arch": TINY_VIT, "task": "vec-task"})
    assert on_b.status_code == 200, on_b.text
    assert json.loads(io.read_metadata(on_b.content)["tal.task"]) == "vec-task"
    on_a = a.post("/v1/initialize", json={"arch": TINY_VIT, "task": "vec-task"})
    assert on_a.content == on_b.content


def test_reregistering_invalidates_cache(a: httpx.Client, b: httpx.Client) -> None:
    body = {"arch": {**TINY_VIT, "depth": 7}, "task": "re-task"}
    assert a.post("/v1/tasks", json={"name": "re-task", "embedding": [0.5] * TASK_DIM}).is_success
    first = a.post("/v1/initialize", json=body)
    assert a.post("/v1/initialize", json=body).headers["x-cache"] == "hit"
    assert a.post("/v1/tasks", json={"name": "re-task", "embedding": [-0.5] * TASK_DIM}).is_success
    second = b.post("/v1/initialize", json=body)  # the other replica sees the new embedding
    time.sleep(REDIS_WRITE_GRACE)  # the Redis write runs after the response
    third = a.post("/v1/initialize", json=body)
    # An untrained checkpoint's task modulation starts at zero, so the bytes may be equal; the
    # cache key (embedding hash) must change: B computes, A finds B's blob in Redis, not memory.
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "miss"
    assert third.headers["x-cache-tier"] == "redis"
    assert third.content == second.content


def test_register_from_npz_images(a: httpx.Client) -> None:
    created = upload(a, "img-task", npz_bytes())
    assert created.status_code == 201, created.text
    response = a.post("/v1/initialize", json={"arch": TINY_VIT, "task": "img-task"})
    assert response.status_code == 200


def test_bad_registrations(a: httpx.Client) -> None:
    short = a.post("/v1/tasks", json={"name": "short", "embedding": [1.0] * 3})
    assert short.status_code == 422
    assert str(TASK_DIM) in short.json()["detail"]
    nan = a.post(
        "/v1/tasks",
        content=b'{"name": "nan", "embedding": [NaN' + b", 1.0" * (TASK_DIM - 1) + b"]}",
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422
    assert a.post("/v1/tasks", json={"name": "../x", "embedding": [1.0]}).status_code == 422
    clash = a.post("/v1/tasks", json={"name": TASK, "embedding": [1.0] * TASK_DIM})
    assert clash.status_code == 409
    assert upload(a, "junk", b"not a zip").status_code == 422
    missing_labels = pyio.BytesIO()
    np.savez(missing_labels, images=np.zeros((4, 8, 8), np.uint8))
    response = upload(a, "nolabels", missing_labels.getvalue())
    assert response.status_code == 422
    assert "labels" in response.json()["detail"]
    no_name = a.post("/v1/tasks", files={"file": ("t.npz", npz_bytes(), "x/y")})
    assert no_name.status_code == 422


def test_zip_bomb_and_big_upload(a: httpx.Client) -> None:
    bomb = pyio.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", b"\0" * (600 << 20))
    assert len(bomb.getvalue()) < 2_000_000
    assert upload(a, "bomb", bomb.getvalue()).status_code == 413
    assert upload(a, "big", b"\0" * 3_000_000).status_code == 413


def test_without_keys_everyone_replaces_and_deletes(a: httpx.Client) -> None:
    first = a.post("/v1/tasks", json={"name": "anon-task", "embedding": [0.25] * TASK_DIM})
    assert first.status_code == 201 and first.json()["owner"] == "anonymous"
    assert first.json()["expires_at"] is None  # no TTL by default
    again = a.post("/v1/tasks", json={"name": "anon-task", "embedding": [0.5] * TASK_DIM})
    assert again.status_code == 201
    row = next(r for r in a.get("/v1/tasks").json()["tasks"] if r["name"] == "anon-task")
    assert row["owner"] == "anonymous" and row["hash"] == again.json()["hash"]
    assert a.delete("/v1/tasks/anon-task").status_code == 204
    assert a.post("/v1/initialize", json={"arch": TINY_VIT, "task": "anon-task"}).status_code == 404
    assert a.delete(f"/v1/tasks/{TASK}").status_code == 409
