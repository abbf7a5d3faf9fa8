"""Every metric the dashboard and the alert rules query is one the service really exports.

Starts the real service (uvicorn, service.main:create_app) on a free local port with an empty
model store (a fresh untrained hypernetwork) and a Redis URL nobody listens on (so the Redis
tier reports its errors), makes a few requests so the histograms and counters have samples,
and scrapes /metrics.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from deploy_support import DEPLOY_DIR, REPO, load_yaml

STARTUP_TIMEOUT_SECONDS = 90
POLL_SECONDS = 0.25
REQUEST_TIMEOUT_SECONDS = 60
LOCALHOST = "127.0.0.1"
# A tiny ViT: the request exercises prediction, serialisation and both cache tiers quickly.
TINY_VIT = {
    "family": "vit",
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "img_size": 32,
    "patch_size": 8,
    "num_classes": 10,
}
# Series Prometheus itself creates for every target.
PROMETHEUS_SERIES = {"up"}
# Labels Prometheus or the query language add, present on no exported sample.
QUERY_LABELS = {"le", "instance", "job"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
TAL_NAME = re.compile(r"\btal_[a-z0-9_]+\b")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("service") is None or importlib.util.find_spec("service.main") is None,
    reason="the service package (service.main:create_app) is not installed in this checkout",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def http(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextmanager
def running_service(workdir: Path, extra_env: dict[str, str]) -> Iterator[str]:
    """The real service under uvicorn on a free port; yields its base URL once ready."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TAL_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    store = workdir / "empty-model-store"
    store.mkdir()
    env |= {
        "TAL_MODEL_STORE": str(store),
        "TAL_REDIS_URL": f"redis://{LOCALHOST}:{free_port()}/0",  # closed: errors are counted
        "TAL_DEVICE": "cpu",
        "TAL_TORCH_THREADS": "1",
        **extra_env,
    }
    log = workdir / "uvicorn.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "service.main:create_app",
                "--host",
                LOCALHOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{LOCALHOST}:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, f"service exited:\n{log.read_text()}"
            try:
                if http(f"{url}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"service not ready:\n{log.read_text()}"
            time.sleep(POLL_SECONDS)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=REQUEST_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scrape_after_requests(url: str) -> tuple[dict[str, set[str]], set[str]]:
    """Two initializations (a miss, then a memory-tier hit) and a probe, then /metrics."""
    for _ in range(2):
        status, body = http(f"{url}/v1/initialize", {"arch": TINY_VIT})
        assert status == 200, body[:500]
    assert http(f"{url}/healthz")[0] == 200
    status, body = http(f"{url}/metrics")
    assert status == 200
    return parse_exposition(body.decode())


def parse_exposition(text: str) -> tuple[dict[str, set[str]], set[str]]:
    """(sample name -> label names seen, names derived from the # TYPE lines)."""
    samples: dict[str, set[str]] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total") if kind == "counter" else name
            declared |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split()[0]
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', rest.partition("}")[0]))
            samples.setdefault(name, set()).update(labels)
    return samples, declared


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, set[str]], set[str]]:
    """One process, the default registry: every declared metric has # TYPE lines."""
    with running_service(tmp_path_factory.mktemp("single"), {}) as url:
        return scrape_after_requests(url)


@pytest.fixture(scope="module")
def exported_multiprocess(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, set[str]], set[str]]:
    """As the images run it: PROMETHEUS_MULTIPROC_DIR set, /metrics merged from files."""
    workdir = tmp_path_factory.mktemp("multiprocess")
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    with running_service(workdir, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as url:
        return scrape_after_requests(url)


def queried_exprs() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the alert rules, by where it comes from."""
    exprs = {}
    board = json.loads((DEPLOY_DIR / "grafana/dashboards/tal.json").read_text())
    for panel in board["panels"]:
        for number, target in enumerate(panel.get("targets", [])):
            exprs[f"dashboard: {panel['title']} #{number}"] = target["expr"]
    for group in load_yaml(DEPLOY_DIR / "prometheus/alerts.yml")["groups"]:
        for rule in group["rules"]:
            exprs[f"alert: {rule['alert']}"] = rule["expr"]
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(TAL_NAME.findall(expr)) | {name for name, _ in SELECTOR.findall(expr)}


@pytest.mark.parametrize("mode", ["exported", "exported_multiprocess"])
def test_service_exports_the_contracted_metrics(mode: str, request: pytest.FixtureRequest) -> None:
    samples, _ = request.getfixturevalue(mode)
    for name, labels in {
        "tal_requests_total": {"route", "method", "status"},
        "tal_request_duration_seconds_bucket": {"route", "method", "status", "le"},
        "tal_initialize_duration_seconds_bucket": {"family", "format", "cache", "le"},
        "tal_prediction_duration_seconds_bucket": {"family", "le"},
        "tal_head_fit_duration_seconds_bucket": {"family", "le"},
        "tal_cache_requests_total": {"tier", "result"},
        "tal_cache_errors_total": {"tier", "operation"},
        "tal_blob_bytes_bucket": {"family", "le"},
        "tal_inflight_requests": set(),
        "tal_inflight_bytes": set(),
        "tal_model_info": {"name", "version"},
        "tal_model_ready": set(),
    }.items():
        assert name in samples, f"{name} has no samples after a request"
        assert samples[name] == labels, f"{name}: labels {samples[name]}, expected {labels}"


def problems(expr: str, exported: tuple[dict[str, set[str]], set[str]]) -> list[str]:
    """What is wrong with the metric names and labels ``expr`` uses (empty when nothing)."""
    samples, declared = exported
    names = metric_names(expr)
    if not names:
        return [f"no metric found in {expr!r}"]
    unknown = names - set(samples) - declared - PROMETHEUS_SERIES
    if unknown:
        return [f"not exported by the service: {sorted(unknown)}"]
    if any(n not in samples and n not in PROMETHEUS_SERIES for n in names):
        return []  # e.g. GPU memory on a CPU machine: declared, but no series to read labels of
    # Labels used in selectors and by()/without() clauses must exist on the metrics queried.
    available = set(QUERY_LABELS).union(*(samples.get(name, set()) for name in names))
    used = {label.strip() for clause in BY_CLAUSE.findall(expr) for label in clause.split(",")}
    for _, matchers in SELECTOR.findall(expr):
        used |= set(MATCHER_LABEL.findall(matchers))
    missing = used - available - {""}
    return [f"labels {sorted(missing)} are on none of {sorted(names)}"] if missing else []


@pytest.mark.parametrize(("where", "expr"), list(queried_exprs().items()))
def test_queried_metrics_are_exported(
    where: str, expr: str, exported: tuple[dict[str, set[str]], set[str]]
) -> None:
    assert not problems(expr, exported), f"{where}: {problems(expr, exported)}"


@pytest.mark.parametrize(
    "bad_expr",
    [
        "rate(tal_request_total[5m])",  # misspelt counter
        "histogram_quantile(0.99, rate(tal_blob_bytes_buckets[5m]))",  # wrong suffix
        'sum(rate(tal_cache_requests_total{tier="redis",outcome="hit"}[5m]))',  # unknown label
        "sum by (arch) (rate(tal_prediction_duration_seconds_count[5m]))",  # unknown by() label
    ],
)
def test_check_catches_mistakes(
    bad_expr: str, exported: tuple[dict[str, set[str]], set[str]]
) -> None:
    assert problems(bad_expr, exported)


def test_exposition_parser() -> None:
    samples, declared = parse_exposition(
        '# TYPE a_total counter\na_total{x="1"} 1.0\n# TYPE h histogram\n# TYPE g gauge\ng 2\n'
    )
    assert samples == {"a_total": {"x"}, "g": set()}
    assert {"a_total", "h_bucket", "h_sum", "h_count", "g"} <= declared
