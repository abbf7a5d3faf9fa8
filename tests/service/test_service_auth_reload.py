"""API keys and checkpoint reloads (good, corrupt, missing) on server B."""

from __future__ import annotations

import io as pyio
import threading
import time

import httpx
import numpy as np
from svc_support import ADMIN_KEY, MODEL, TINY_VIT, USER_KEY


def test_api_keys(cluster) -> None:
    url = cluster.b.url
    body = {"arch": TINY_VIT}
    assert httpx.post(f"{url}/v1/initialize", json=body).status_code == 401
    wrong = httpx.post(f"{url}/v1/initialize", json=body, headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 403
    bearer = {"Authorization": f"Bearer {USER_KEY}"}
    assert httpx.post(f"{url}/v1/initialize", json=body, headers=bearer).status_code == 200
    admin = {"X-API-Key": ADMIN_KEY}
    assert httpx.get(f"{url}/v1/tasks", headers=admin).status_code == 200
    assert httpx.get(f"{url}/v1/tasks").status_code == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 200


def test_reload_needs_admin_key(cluster) -> None:
    url = f"{cluster.b.url}/v1/models/reload"
    body = {"name": MODEL, "version": "1"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"X-API-Key": USER_KEY}).status_code == 403


def _npz() -> bytes:
    buffer = pyio.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(
        buffer, images=rng.integers(0, 255, (16, 28, 28), dtype=np.uint8), labels=np.arange(16) % 4
    )
    return buffer.getvalue()


def test_reload_good_corrupt_missing(cluster) -> None:
    admin = httpx.Client(base_url=cluster.b.url, headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:  # requests keep flowing during the reload: no downtime
        with httpx.Client(base_url=cluster.b.url, headers={"X-API-Key": USER_KEY}) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/initialize", json={"arch": TINY_VIT}).status_code)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.3)
        ok = admin.post("/v1/models/reload", json={"name": MODEL, "version": "latest"})
        time.sleep(0.3)
        stop.set()
        thread.join()
        assert ok.status_code == 200, ok.text
        assert statuses and set(statuses) == {200}, statuses
        assert ok.json()["model_version"] == f"{MODEL}/2"
        served = admin.post("/v1/initialize", json={"arch": TINY_VIT})
        assert served.headers["x-tal-model-version"] == f"{MODEL}/2"
        # version 2 has no ancestry model: images cannot be embedded
        upload = admin.post(
            "/v1/tasks",
            data={"name": "imgs"},
            files={"file": ("x.npz", _npz(), "application/octet-stream")},
        )
        assert upload.status_code == 409
        assert "ancestry" in upload.json()["detail"]

        corrupt = admin.post("/v1/models/reload", json={"name": MODEL, "version": "0-corrupt"})
        assert corrupt.status_code == 409
        assert "corrupt" in corrupt.json()["detail"]
        assert f"still serving {MODEL}/2" in corrupt.json()["detail"]
        missing = admin.post("/v1/models/reload", json={"name": MODEL, "version": "9"})
        assert missing.status_code == 404
        still = admin.post("/v1/initialize", json={"arch": TINY_VIT})
        assert still.status_code == 200
        assert still.headers["x-tal-model-version"] == f"{MODEL}/2"
        assert admin.get("/readyz").status_code == 200
    finally:
        back = admin.post("/v1/models/reload", json={"name": MODEL, "version": "1"})
        admin.close()
    assert back.status_code == 200
    assert back.json()["model_version"] == f"{MODEL}/1"
