"""Prometheus metrics (names fixed: the Grafana dashboard is built on them).

With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (``tal serve --workers N`` does)
before the workers start: every process then writes its samples there and ``/metrics`` merges
them, so any worker answers for all.
"""

from __future__ import annotations

import os
from typing import get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from tal.arch.specs import ArchFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BYTES_BUCKETS = tuple(float(1 << shift) for shift in range(10, 31, 2))  # 1 KiB ... 1 GiB

REQUEST_DURATION = Histogram(
    "tal_request_duration_seconds",
    "HTTP request latency",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter("tal_requests_total", "HTTP requests", ["route", "method", "status"])
INITIALIZE_DURATION = Histogram(
    "tal_initialize_duration_seconds",
    "POST /v1/initialize latency by outcome",
    ["family", "format", "cache"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_DURATION = Histogram(
    "tal_prediction_duration_seconds",
    "hypernetwork prediction time, straight into the safetensors blob (no head fit)",
    ["family"],
    buckets=LATENCY_BUCKETS,
)
HEAD_FIT_DURATION = Histogram(
    "tal_head_fit_duration_seconds",
    "prediction with a discriminant head fitted to a registered task's images",
    ["family"],
    buckets=LATENCY_BUCKETS,
)
# every family's series exists from the start (zeros), so dashboards and alerts that query them
# find them before the first request of their kind
for _family in get_args(ArchFamily):
    for _histogram in (PREDICTION_DURATION, HEAD_FIT_DURATION):
        _histogram.labels(_family)
CACHE_REQUESTS = Counter("tal_cache_requests_total", "cache look-ups", ["tier", "result"])
CACHE_ERRORS = Counter("tal_cache_errors_total", "cache failures", ["tier", "operation"])
BLOB_BYTES = Histogram(
    "tal_blob_bytes", "size of served safetensors blobs", ["family"], buckets=BYTES_BUCKETS
)
INFLIGHT_REQUESTS = Gauge(
    "tal_inflight_requests", "requests being served", multiprocess_mode="livesum"
)
QUEUED_MISSES = Gauge(
    "tal_queued_misses",
    "cache misses waiting for a prediction slot",
    multiprocess_mode="livesum",
)
INFLIGHT_BYTES = Gauge(
    "tal_inflight_bytes",
    "estimated bytes reserved by running predictions",
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "tal_model_info",
    "loaded checkpoint (value 1)",
    ["name", "version"],
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "tal_model_ready", "1 once the checkpoint is loaded and warm", multiprocess_mode="livemin"
)
GPU_MEMORY = Gauge(
    "tal_gpu_memory_bytes",
    "CUDA memory allocated by this worker",
    ["device"],
    multiprocess_mode="livesum",
)


def set_model_info(name: str, version: str, previous: tuple[str, str] | None) -> None:
    """Marks ``name/version`` as the loaded checkpoint (and the previous one as not)."""
    if previous is not None and previous != (name, version):
        MODEL_INFO.labels(*previous).set(0)
    MODEL_INFO.labels(name, version).set(1)


def update_gpu_memory() -> None:
    """Sets ``tal_gpu_memory_bytes`` per visible CUDA device (nothing without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return
    for index in range(torch.cuda.device_count()):
        GPU_MEMORY.labels(f"cuda:{index}").set(torch.cuda.memory_allocated(index))


def render() -> tuple[bytes, str]:
    """The exposition text (merged over worker processes in multiprocess mode)."""
    update_gpu_memory()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drops a finished worker's live gauges (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        prom_multiprocess.mark_process_dead(pid)
