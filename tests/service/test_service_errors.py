"""Bad input and overload: clear 4xx/503 answers, never a 5xx for what a client sends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from svc_support import MAX_PARAMS_A, TASK, TINY_GPT2, TINY_VIT


def post(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/initialize", json=body)


@pytest.mark.parametrize(
    ("arch", "field"),
    [
        ({**TINY_VIT, "num_heads": 5}, "num_heads"),
        ({**TINY_VIT, "img_size": 30}, "img_size"),
        ({**TINY_VIT, "depth": 0}, "depth"),
        ({**TINY_VIT, "bogus": 1}, "bogus"),
        ({"depth": 2}, "family"),
        ({"model_type": "bert"}, "model_type"),
        ("resnet50", "resnet50"),
        ("not_a_model", "not_a_model"),
        ({"model_type": "gpt2", "n_embd": "wide"}, "n_embd"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(a: httpx.Client, arch: object, field: str) -> None:
    response = post(a, arch=arch)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert field in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "arch"),
        ({"arch": TINY_VIT, "dtype": "float64"}, "dtype"),
        ({"arch": TINY_VIT, "format": "onnx"}, "format"),
        ({"arch": TINY_VIT, "seed": 3}, "seed is retired"),
        ({"arch": TINY_VIT, "extra": 1}, "extra"),
        ({"arch": 12}, "arch"),
        ({"arch": TINY_GPT2, "format": "timm"}, "format 'hf'"),
    ],
)
def test_invalid_body_is_422(a: httpx.Client, body: dict, field: str) -> None:
    response = a.post("/v1/initialize", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_malformed_json_is_4xx(a: httpx.Client) -> None:
    response = a.post(
        "/v1/initialize", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_unknown_task_is_404_listing_known(a: httpx.Client) -> None:
    response = post(a, arch=TINY_VIT, task="nope")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    assert f"known tasks: {TASK}" in response.json()["detail"]


def test_spec_above_parameter_limit_is_413(a: httpx.Client) -> None:
    huge = {"family": "vit", "depth": 128, "embed_dim": 16384, "num_heads": 128}
    response = post(a, arch=huge)
    assert response.status_code == 413
    assert f"{MAX_PARAMS_A:,}" in response.json()["detail"]
    assert post(a, arch="vit_base_patch16_224").status_code == 413  # 86.6 M > 40 M


def test_oversized_body_is_413(a: httpx.Client) -> None:
    big = {"arch": TINY_VIT, "task": "x" * 100_000}
    assert a.post("/v1/initialize", json=big).status_code == 413

    def chunks():  # no Content-Length: the cap is enforced while reading
        for _ in range(100):
            yield b" " * 1024

    response = a.post(
        "/v1/initialize", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_not_ready_is_503_with_retry_after(cluster) -> None:
    with httpx.Client(base_url=cluster.unready.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "no-such-model" in ready.json()["detail"]
        assert int(ready.headers["retry-after"]) >= 1
        response = client.post("/v1/initialize", json={"arch": TINY_VIT})
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert client.get("/healthz").status_code == 200


def test_budget_full_is_503_with_retry_after(b: httpx.Client) -> None:
    """Server B's budget admits one miss at a time and does not wait: concurrent misses of
    different specs get 503 + Retry-After; nothing else fails."""
    specs = [{**TINY_VIT, "embed_dim": 384, "num_heads": 6, "depth": 4 + i} for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda s: b.post("/v1/initialize", json={"arch": s}), specs))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}
    assert 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert "budget" in busy.json()["detail"]
    assert int(busy.headers["retry-after"]) >= 1


def test_names_cannot_leave_the_store(cluster) -> None:
    with httpx.Client(
        base_url=cluster.b.url, headers={"X-API-Key": "admin-key-456"}, timeout=60
    ) as admin:
        for name, version in (("../etc", "latest"), ("tal-test", "../../x"), (".hidden", "1")):
            response = admin.post("/v1/models/reload", json={"name": name, "version": version})
            assert response.status_code == 422, response.text


def test_unknown_route_and_method(a: httpx.Client) -> None:
    assert a.get("/v1/nothing").status_code == 404
    assert a.get("/v1/initialize").status_code == 405
