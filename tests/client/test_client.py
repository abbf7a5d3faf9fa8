"""TALClient / AsyncTALClient / ``tal init`` against a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch
from client_support import MODEL, TASK, labelled_npz, service_settings
from harness import ServiceProcess, free_port

from tal.arch.parse import parse_arch
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.client import AsyncTALClient, RetryPolicy, TALClient, TALError

VIT = {"family": "vit", "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32,
       "patch_size": 8, "num_classes": 10}  # fmt: skip
GPT2 = {"family": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 64,
        "n_positions": 32}  # fmt: skip
FAST_RETRY = RetryPolicy(retries=40, backoff=0.1, max_backoff=1.0)


def requests_with_status(url: str, status: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if (
                sample.name == "tal_requests_total"
                and sample.labels.get("route") == "/v1/initialize"
                and sample.labels.get("status") == str(status)
            ):
                total += sample.value
    return total


def test_state_dict_and_load_into(server) -> None:
    with TALClient(server.url) as client:
        tensors, metadata = client.state_dict(VIT, task=TASK)
        assert metadata["tal.model_version"] == f"{MODEL}/1"
        model = build_model(parse_arch(VIT), "timm")
        model.load_state_dict(tensors, strict=True)
        gpt2 = build_model(parse_arch(GPT2), "hf")
        meta = client.load_into(gpt2, GPT2, format="hf")
        assert meta["tal.format"] == "hf"
        assert client.models()["loaded"]["name"] == MODEL
        assert TASK in {row["name"] for row in client.tasks()["tasks"]}
        assert client.reload(MODEL, "1")["version"] == "1"


def test_state_dict_tensors_are_views_of_one_received_buffer(server) -> None:
    with TALClient(server.url) as client:
        tensors, metadata = client.state_dict(GPT2, format="hf", dtype="bfloat16")
    storages = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert len(storages) == 1  # no copy per tensor: all share the buffer the body was read into
    assert tensors["lm_head.weight"] is tensors["transformer.wte.weight"]
    assert metadata["tal.dtype"] == "bfloat16"
    build_model(parse_arch(GPT2), "hf").load_state_dict(tensors, strict=True)


def test_register_task_from_both_faces(server, tmp_path: Path) -> None:
    npz = labelled_npz(tmp_path / "task.npz")
    width = 192  # the fresh hypernetwork's task_dim
    with TALClient(server.url) as client:
        by_vector = client.register_task("sync-vector", embedding=[0.5] * width)
        by_images = client.register_task("sync-images", data=npz)
        with pytest.raises(ValueError, match="exactly one"):
            client.register_task("neither")

    async def run() -> tuple[dict, dict, dict]:
        async with AsyncTALClient(server.url) as client:
            vector = await client.register_task("async-vector", embedding=[0.25] * width)
            images = await client.register_task("async-images", data=npz)
            return vector, images, await client.tasks()

    async_vector, async_images, listed = asyncio.run(run())
    assert by_vector["name"] == "sync-vector" and async_vector["name"] == "async-vector"
    assert by_images["support_images"] == async_images["support_images"] == 24
    assert by_images["classes"] == 3
    names = {row["name"] for row in listed["tasks"]}
    assert {"sync-vector", "sync-images", "async-vector", "async-images"} <= names
    with TALClient(server.url) as client:  # a registered task's head is fitted to its images
        arch = {**VIT, "num_classes": 3}
        _, metadata = client.state_dict(arch, task="sync-images", format="timm")
        expiring = client.register_task("sync-expiring", embedding=[0.1] * width, ttl_seconds=60)
        client.delete_task("sync-vector")
        with pytest.raises(TALError) as gone:
            client.delete_task("sync-vector")
    assert metadata["tal.head"] == "discriminant" and "tal.input_norm" in metadata
    assert expiring["expires_at"] is not None
    assert gone.value.status == 404
    asyncio.run(_async_delete(server.url, "async-vector"))
    with TALClient(server.url) as client:
        names = {row["name"] for row in client.tasks()["tasks"]}
    assert "async-vector" not in names and "sync-vector" not in names


async def _async_delete(url: str, name: str) -> None:
    async with AsyncTALClient(url) as client:
        await client.delete_task(name)


def test_async_face_reads_models_and_reloads(server) -> None:
    async def run() -> tuple[dict, dict]:
        async with AsyncTALClient(server.url) as client:
            return await client.models(), await client.reload(MODEL, "1")

    models, reloaded = asyncio.run(run())
    assert models["loaded"]["name"] == MODEL
    assert reloaded["version"] == "1"


def test_head_choice_reaches_the_server(server) -> None:
    with TALClient(server.url) as client:
        _, metadata = client.state_dict(VIT, task=TASK, head="predicted")
        assert metadata["tal.head"] == "predicted"
        with pytest.raises(TALError) as refused:  # the checkpoint's task has no images
            client.initialize(VIT, task=TASK, head="discriminant")
        assert refused.value.status == 422
        assert "registered from labelled examples" in refused.value.detail


def test_errors_carry_status_and_detail(server) -> None:
    with TALClient(server.url) as client:
        with pytest.raises(TALError) as invalid:
            client.initialize({**VIT, "num_heads": 3})
        assert invalid.value.status == 422
        assert "num_heads" in invalid.value.detail
        with pytest.raises(TALError) as unknown:
            client.initialize(VIT, task="nope")
        assert unknown.value.status == 404


def test_stream_to_file_and_etag_cache(server, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    cache = tmp_path / "cache"
    with TALClient(server.url, cache_dir=cache) as client:
        assert client.initialize(VIT, out=out) == out
        first = out.read_bytes()
        before = requests_with_status(server.url, 304)
        second = client.initialize(VIT)  # answered 304 from the cached copy
        assert requests_with_status(server.url, 304) == before + 1
    assert second == first
    io.load_state_dict(out)
    with TALClient(server.url) as plain:
        plain_out = tmp_path / "plain.safetensors"
        plain.initialize(VIT, out=plain_out)
        assert plain_out.read_bytes() == first


def test_async_client(server, tmp_path: Path) -> None:
    async def run() -> list:
        async with AsyncTALClient(server.url, cache_dir=tmp_path / "acache") as client:
            blobs = await asyncio.gather(
                *(client.initialize({**VIT, "num_classes": 2 + k}) for k in range(4))
            )
            again = await client.initialize({**VIT, "num_classes": 2})
            await client.load_into(build_model(parse_arch(GPT2), "hf"), GPT2, format="hf")
            assert (await client.wait_ready())["status"] == "ready"
            return [*blobs, again]

    blobs = asyncio.run(run())
    assert blobs[0] == blobs[-1]
    assert len({bytes(blob) for blob in blobs[:4]}) == 4


def test_retries_until_a_late_server_is_ready(store: Path, tmp_path: Path) -> None:
    """The client starts first; the server comes up a second later and loads its checkpoint:
    connection errors and 503s are retried until the answer arrives."""
    port = free_port()
    server = ServiceProcess(tmp_path, service_settings(store), port=port)
    result: dict = {}

    def call() -> None:
        with TALClient(server.url, retry=FAST_RETRY) as client:
            result["blob"] = client.initialize(VIT)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)
    server.start()
    try:
        thread.join(timeout=120)
        assert isinstance(result.get("blob"), memoryview)
        io.load_state_dict(result["blob"])
    finally:
        server.stop()


class _BusyThenOk(BaseHTTPRequestHandler):
    """Answers 503 + Retry-After: 1 twice, then a small body (exercises the client only)."""

    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).calls += 1
        if type(self).calls <= 2:
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"blob"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retry_after_is_honoured() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenOk)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        start = time.monotonic()
        with TALClient(url, retry=RetryPolicy(retries=3, backoff=0.01)) as client:
            assert client.initialize(VIT) == b"blob"
        assert time.monotonic() - start >= 2.0  # two Retry-After: 1 waits
        assert _BusyThenOk.calls == 3
        _BusyThenOk.calls = -100  # always 503 now: retries run out
        with (
            TALClient(url, retry=RetryPolicy(retries=1, backoff=0.01, max_backoff=0.05)) as client,
            pytest.raises(TALError) as exc,
        ):
            client.initialize(VIT)
        assert exc.value.status == 503
    finally:
        httpd.shutdown()


def test_connection_errors_run_out(tmp_path: Path) -> None:
    with (
        TALClient(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(2, 0.01, 0.02)) as client,
        pytest.raises(TALError) as exc,
    ):
        client.initialize(VIT)
    assert exc.value.status is None


def test_tal_init_command(server, tmp_path: Path) -> None:
    out = tmp_path / "init.safetensors"
    tal = [sys.executable, "-m", "tal.cli"]
    done = subprocess.run(
        [*tal, "init", "--server", server.url, "--arch", '{"family": "gpt2", "n_layer": 1, '
         '"n_embd": 32, "n_head": 2, "vocab_size": 64}', "--format", "hf", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, metadata = io.load_state_dict(out)
    assert metadata["tal.format"] == "hf"
    bad = subprocess.run(
        [*tal, "init", "--server", server.url, "--arch", "not_a_model", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "422" in bad.stderr


def test_tal_init_out_dir_writes_a_folder_transformers_loads(server, tmp_path: Path) -> None:
    import transformers

    folder = tmp_path / "gpt2"
    done = subprocess.run(
        [sys.executable, "-m", "tal.cli", "init", "--server", server.url, "--arch",
         '{"family": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 64}',
         "--format", "hf", "--out-dir", str(folder)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    expected, _ = io.load_state_dict(folder / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


class _ClosesIdleConnections(BaseHTTPRequestHandler):
    """HTTP/1.1 answers that promise keep-alive, then the server closes the connection (as a
    server's idle timeout does)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # no "Connection: close" header: the client cannot know

    def log_message(self, *args: object) -> None:
        pass


def test_a_kept_alive_connection_the_server_closed_is_reopened_once() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ClosesIdleConnections)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with TALClient(url, retry=RetryPolicy(retries=0)) as client:  # no retries at all
            for _ in range(3):
                assert client.wait_ready() == {"status": "ready"}
                time.sleep(0.05)  # the server has closed the socket by now
    finally:
        httpd.shutdown()
