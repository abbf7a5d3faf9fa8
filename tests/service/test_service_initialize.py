"""POST /v1/initialize: blobs that load strictly into real timm / transformers models."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from svc_support import MODEL, TASK, TINY_GPT2, TINY_VIT, metric_value

from tal.arch.parse import parse_arch
from tal.arch.target_models import build_model
from tal.blobs import io

REDIS_WRITE_GRACE = 0.3


def post(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/initialize", json=body)


def test_vit_timm_blob_loads_strictly(a: httpx.Client) -> None:
    response = post(a, arch=TINY_VIT, task=TASK, format="timm")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-tal-model-version"] == f"{MODEL}/1"
    tensors, metadata = io.load_state_dict(response.content)
    spec = parse_arch(TINY_VIT)
    build_model(spec, "timm").load_state_dict(tensors, strict=True)
    assert metadata["tal.spec"] == spec.canonical_json()
    assert json.loads(metadata["tal.task"]) == TASK
    assert metadata["tal.model_version"] == f"{MODEL}/1"
    assert (metadata["tal.format"], metadata["tal.dtype"]) == ("timm", "float32")


def test_vit_hf_and_half_precision(a: httpx.Client) -> None:
    response = post(a, arch=TINY_VIT, format="hf", dtype="bfloat16")
    assert response.status_code == 200, response.text
    tensors, metadata = io.load_state_dict(response.content)
    assert metadata["tal.dtype"] == "bfloat16"
    assert all(t.dtype.is_floating_point and t.element_size() == 2 for t in tensors.values())
    model = build_model(parse_arch(TINY_VIT), "hf")
    model.load_state_dict(tensors, strict=True)


def test_tied_gpt2_loads_with_tal_io(a: httpx.Client) -> None:
    response = post(a, arch=TINY_GPT2, format="hf")
    assert response.status_code == 200, response.text
    tensors, _ = io.load_state_dict(response.content)
    model = build_model(parse_arch(TINY_GPT2), "hf")
    model.load_state_dict(tensors, strict=True)
    assert tensors["lm_head.weight"] is tensors["transformer.wte.weight"]


def test_timm_name_and_hf_config(a: httpx.Client) -> None:
    by_name = post(a, arch="vit_tiny_patch16_224")
    assert by_name.status_code == 200, by_name.text
    hf_config = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 50}
    by_config = post(a, arch=hf_config, format="hf")
    assert by_config.status_code == 200, by_config.text
    assert io.read_metadata(by_config.content)["tal.spec"] == parse_arch(hf_config).canonical_json()


def test_hit_equals_miss_and_etag(a: httpx.Client) -> None:
    body = {"arch": {**TINY_VIT, "depth": 3, "num_classes": 11}}
    miss = a.post("/v1/initialize", json=body)
    hit = a.post("/initialize", json=body)  # the unversioned alias
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.headers["x-cache-tier"] == "memory"
    assert miss.content == hit.content
    assert miss.headers["etag"] == hit.headers["etag"]
    etag = miss.headers["etag"]
    not_modified = a.post("/v1/initialize", json=body, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    other = a.post("/v1/initialize", json=body, headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


def test_cache_key_covers_every_field(a: httpx.Client) -> None:
    base = {"arch": {**TINY_VIT, "depth": 4}}
    variants = [
        base,
        {**base, "arch": {**TINY_VIT, "depth": 4, "num_classes": 7}},
        {**base, "dtype": "float16"},
        {**base, "format": "hf"},
        {**base, "task": TASK},
    ]
    etags = {a.post("/v1/initialize", json=v).headers["etag"] for v in variants}
    assert len(etags) == len(variants)


def test_single_flight(a: httpx.Client, cluster) -> None:
    before = metric_value(a, "tal_prediction_duration_seconds_count", family="vit")
    body = {"arch": {**TINY_VIT, "embed_dim": 64, "depth": 5, "num_classes": 9}}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: a.post("/v1/initialize", json=body), range(8)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    after = metric_value(a, "tal_prediction_duration_seconds_count", family="vit")
    assert after - before == 1


def test_redis_tier_shared_between_replicas(a: httpx.Client, b: httpx.Client) -> None:
    body = {"arch": {**TINY_VIT, "depth": 6, "num_classes": 5}}
    first = a.post("/v1/initialize", json=body)
    assert first.headers["x-cache"] == "miss"
    time.sleep(REDIS_WRITE_GRACE)  # the Redis write runs after the response
    other_replica = b.post("/v1/initialize", json=body)
    assert other_replica.status_code == 200, other_replica.text
    assert other_replica.headers["x-cache-tier"] == "redis"
    assert other_replica.content == first.content


def test_health_ready_metrics(a: httpx.Client, cluster) -> None:
    assert a.get("/healthz").json() == {"status": "ok"}
    assert a.get("/readyz").json()["status"] == "ready"
    text = a.get("/metrics").text
    for name in (
        "tal_request_duration_seconds",
        "tal_requests_total",
        "tal_initialize_duration_seconds",
        "tal_prediction_duration_seconds",
        "tal_head_fit_duration_seconds",
        "tal_cache_requests_total",
        "tal_blob_bytes",
        "tal_inflight_requests",
        "tal_inflight_bytes",
        "tal_model_info",
        "tal_model_ready",
    ):
        assert name in text, name
    assert metric_value(a, "tal_model_info", name=MODEL, version="1") == 1
    assert metric_value(a, "tal_model_ready") == 1
    assert metric_value(a, "tal_requests_total", route="/v1/initialize", method="POST") > 0


def test_models_endpoint(a: httpx.Client) -> None:
    body = a.get("/v1/models").json()
    assert body["loaded"]["model_version"] == f"{MODEL}/1"
    assert body["loaded"]["has_ancestry"] is True
    assert body["available"][MODEL] == ["0-corrupt", "1", "2"]


def test_openapi_and_docs(a: httpx.Client) -> None:
    schema = a.get("/openapi.json").json()
    assert "/v1/initialize" in schema["paths"]
    assert "/v1/tasks" in schema["paths"]
    assert a.get("/docs").status_code == 200
