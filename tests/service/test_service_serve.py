"""``tal serve --workers 2``: two uvicorn processes, metrics merged across them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from harness import free_port
from svc_support import MODEL, TINY_VIT

from tal.blobs import io
from tal.client import RetryPolicy, TALClient

REQUESTS = 20


def test_tal_serve_two_workers(cluster, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TAL_MODEL_STORE": str(cluster.store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_MODEL_VERSION": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    log = (tmp_path / "serve.log").open("wb")
    command = [sys.executable, "-m", "tal.cli", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # the client's retries cover start-up: refused connections, then 503 until ready
        with TALClient(url, retry=RetryPolicy(retries=200, backoff=0.2, max_backoff=1)) as client:
            client.wait_ready()
            for classes in range(2, 2 + REQUESTS):
                arch = {**TINY_VIT, "num_classes": classes}
                io.load_state_dict(client.initialize(arch))
        text = httpx.get(f"{url}/metrics").text
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tal_requests_total{")
            and 'route="/v1/initialize"' in line
            and 'status="200"' in line
        )
        assert total == REQUESTS  # whichever worker answered /metrics counts both
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
