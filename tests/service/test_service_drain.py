"""SIGTERM drains a worker: readiness 503 at once, the request in flight completes, then exit 0.

Real uvicorn processes (one worker, and ``tal serve --workers 2``), a real miss large enough to
take seconds on this CPU (ViT-B/16, 346 MB), real signals.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import safetensors.torch
import timm
from harness import ServiceProcess
from svc_support import MODEL, make_store, metric_value

LARGE_ARCH = "vit_base_patch16_224"  # a miss of about a second on one thread, 346 MB
# A miss that outlasts SHORT_GRACE several times over even on an idle machine (3.5 s on one
# thread here), so the grace period ends before its response starts.
LARGER_ARCH = "vit_large_patch16_224"
DELAY = 1.0
GRACE = 120.0
SHORT_GRACE = 0.5
EXIT_SLACK = 20.0  # lifespan shutdown (pending cache writes) and interpreter exit
POLL_SECONDS = 0.05
IN_FLIGHT_TIMEOUT = 30.0
REQUEST_TIMEOUT = 300.0
SELF = 1  # the /metrics request counts itself among the requests in flight
SERVICE_UNAVAILABLE = 503
PROBE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("drain") / "store")


def settings(store: Path, delay: float, grace: float) -> dict[str, str]:
    return {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_MODEL_VERSION": "1",
        "TAL_TORCH_THREADS": "1",
        "TAL_DRAIN_DELAY_SECONDS": str(delay),
        "TAL_DRAIN_GRACE_SECONDS": str(grace),
        "HF_HUB_OFFLINE": "1",
    }


class Miss(threading.Thread):
    """``POST /v1/initialize`` of ``arch`` in the background."""

    def __init__(self, url: str, arch: str = LARGE_ARCH) -> None:
        super().__init__(daemon=True)
        self.url, self.arch = url, arch
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.finished = 0.0

    def run(self) -> None:
        try:
            self.response = httpx.post(
                f"{self.url}/v1/initialize", json={"arch": self.arch}, timeout=REQUEST_TIMEOUT
            )
        except httpx.HTTPError as exc:
            self.error = exc
        self.finished = time.monotonic()


def wait_in_flight(server: ServiceProcess) -> None:
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while time.monotonic() < deadline:
            if metric_value(client, "tal_inflight_requests") > SELF:
                return
            time.sleep(POLL_SECONDS)
    raise TimeoutError("the miss never showed up in tal_inflight_requests")


def readiness_until_refused(url: str, timeout: float) -> tuple[list[int], float]:
    """Status codes of ``/readyz`` polled until connections are refused, and when that was.

    A connection the kernel accepted just before the last listener closed is reset instead of
    refused; that counts as the end too (a timeout does not: it would be a hang)."""
    statuses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            statuses.append(httpx.get(f"{url}/readyz", timeout=PROBE_TIMEOUT).status_code)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            return statuses, time.monotonic()
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{url} still accepts connections {timeout} s after SIGTERM")


def assert_complete_blob(miss: Miss) -> None:
    assert miss.error is None, miss.error
    assert miss.response is not None and miss.response.status_code == 200, miss.response
    assert len(miss.response.content) == int(miss.response.headers["content-length"])
    state = safetensors.torch.load(miss.response.content)
    timm.create_model(miss.arch, pretrained=False).load_state_dict(state, strict=True)


def test_sigterm_lets_the_miss_in_flight_finish(store: Path, tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, settings(store, DELAY, GRACE)).start().wait_ready()
    try:
        # it must outlast DELAY after the signal: a ViT-B miss (about a second) did not always
        miss = Miss(server.url, LARGER_ARCH)
        miss.start()
        wait_in_flight(server)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        ready = httpx.get(f"{server.url}/readyz", timeout=PROBE_TIMEOUT)
        assert ready.status_code == SERVICE_UNAVAILABLE, ready.text
        assert ready.json()["status"] == "draining" and "SIGTERM" in ready.json()["detail"]
        assert "retry-after" in ready.headers and ready.headers["connection"] == "close"
        statuses, refused = readiness_until_refused(server.url, DELAY + EXIT_SLACK)
        exit_code = server.wait_exit(GRACE + EXIT_SLACK)
        exited = time.monotonic()
        miss.join(EXIT_SLACK)
    finally:
        server.stop()
    assert exit_code == 0
    assert set(statuses) == {SERVICE_UNAVAILABLE}
    assert refused - signalled >= DELAY  # the listener stayed open for the delay ...
    assert miss.finished > refused  # ... and the request in flight outlived it
    assert exited - signalled < DELAY + GRACE
    assert_complete_blob(miss)


def test_every_worker_of_tal_serve_drains(store: Path, tmp_path: Path) -> None:
    # A longer delay: the supervisor forwards the signal within 0.5 s, and a loaded machine
    # answers probes slowly; /readyz must be seen at 503 before the listeners close.
    server = ServiceProcess(tmp_path, settings(store, 2 * DELAY, GRACE), workers=2)
    server.start().wait_ready()
    try:
        miss = Miss(server.url)
        miss.start()
        wait_in_flight(server)
        server.send_signal(signal.SIGTERM)  # the supervisor forwards it to both workers
        statuses, _ = readiness_until_refused(server.url, 2 * DELAY + EXIT_SLACK)
        exit_code = server.wait_exit(GRACE + EXIT_SLACK)
        miss.join(EXIT_SLACK)
    finally:
        server.stop()
    assert exit_code == 0
    # The supervisor polls for signals every 0.5 s: a few 200s may come first, then only 503s.
    assert SERVICE_UNAVAILABLE in statuses, statuses
    first = statuses.index(SERVICE_UNAVAILABLE)
    assert set(statuses[first:]) == {SERVICE_UNAVAILABLE}, statuses
    assert_complete_blob(miss)


def test_the_grace_period_bounds_the_drain(store: Path, tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, settings(store, 0.0, SHORT_GRACE)).start().wait_ready()
    try:
        miss = Miss(server.url, LARGER_ARCH)
        miss.start()
        wait_in_flight(server)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait_exit(SHORT_GRACE + EXIT_SLACK)
        exited = time.monotonic()
        miss.join(EXIT_SLACK)
    finally:
        server.stop()
    assert exit_code == 0
    # The prediction running in its thread delays the exit until it ends (it cannot be
    # interrupted), but the request is answered when the grace period ends.
    assert exited - signalled < SHORT_GRACE + EXIT_SLACK
    assert miss.error is None and miss.response is not None
    assert miss.response.status_code == SERVICE_UNAVAILABLE, miss.response.text
    assert miss.response.json()["error"] == "shutting_down"
    assert "retry-after" in miss.response.headers
    assert miss.finished - signalled < SHORT_GRACE + EXIT_SLACK
