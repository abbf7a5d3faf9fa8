"""The Open Inference Protocol (v2) health and metadata paths mean what ours mean."""

from __future__ import annotations

import httpx
from svc_support import MODEL, USER_KEY


def test_health_paths_match_ours(a: httpx.Client, cluster) -> None:
    assert a.get("/v2/health/live").json() == {"live": True}
    ready = a.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    with httpx.Client(base_url=cluster.unready.url, timeout=30) as unready:
        assert unready.get("/v2/health/live").status_code == 200
        not_ready = unready.get("/v2/health/ready")
        assert not_ready.status_code == unready.get("/readyz").status_code == 503
        assert not_ready.json() == {"ready": False} and "retry-after" in not_ready.headers


def test_server_and_model_metadata(a: httpx.Client) -> None:
    server = a.get("/v2").json()
    assert server["name"] == "tal-initialization-service" and server["version"]
    assert server["extensions"] == []
    model = a.get(f"/v2/models/{MODEL}").json()
    assert model["name"] == MODEL and "1" in model["versions"]
    assert model["versions"] == a.get("/v1/models").json()["available"][MODEL]
    assert {i["name"] for i in model["inputs"]} == {"arch", "task", "format", "dtype", "head"}
    assert model["outputs"] == [{"name": "weights", "datatype": "BYTES", "shape": [1]}]
    version = a.get(f"/v2/models/{MODEL}/versions/1").json()
    assert version["versions"] == ["1"]
    missing = a.get("/v2/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert a.get(f"/v2/models/{MODEL}/versions/99").status_code == 404


def test_model_ready_names_the_serving_version(a: httpx.Client, cluster) -> None:
    assert a.get(f"/v2/models/{MODEL}/ready").json() == {"ready": True}
    assert a.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200
    other = a.get(f"/v2/models/{MODEL}/versions/2/ready")  # in the store, not the one serving
    assert (other.status_code, other.json()) == (400, {"ready": False})
    assert a.get("/v2/models/nope/ready").status_code == 404
    # model metadata and readiness need a key where keys are configured; health does not
    with httpx.Client(base_url=cluster.b.url, timeout=30) as anonymous:
        assert anonymous.get(f"/v2/models/{MODEL}").status_code == 401
        assert anonymous.get("/v2/health/ready").status_code == 200
    with httpx.Client(base_url=cluster.b.url, timeout=30, headers={"X-API-Key": USER_KEY}) as b:
        assert b.get(f"/v2/models/{MODEL}/ready").status_code == 200
