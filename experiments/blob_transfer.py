"""How fast a ViT-B/16 fp32 blob (about 346 MB) gets from a uvicorn server to a Python client.

    nice -n 10 python experiments/blob_transfer.py [--reps 5] [--client-route mv-1mib]

A study, not a test: loopback only, bounded (a few minutes on two cores). It prints five
markdown tables, medians and p95 over ``--reps`` repeats:

1. **Serialising** ViT-B/16's state dict (timm's init): ``safetensors.torch.save`` (what the
   service used before ``tal.blobs``), ``tal.blobs.io.to_bytes`` and
   ``tal.blobs.io.pack`` (the buffer the service would cache and send as a memoryview).
2. **Servers**: a minimal Starlette app under uvicorn (a subprocess on 127.0.0.1) with each
   event loop (``uvloop``, ``asyncio``) and HTTP implementation (``httptools``, ``h11``), sending
   the blob as ``Response(bytes)``, ``Response(memoryview)`` (one send of the whole view) or
   memoryview slices of 1 MiB (the service's ``BlobResponse``) and 16 MiB, read by curl into
   ``/dev/null``. Besides time, the server's CPU seconds per response and its peak resident
   memory above its idle level (``VmHWM``, reset before each route): a copy of the body shows
   in both.
3. **Clients** against one server route (``--client-route``; uvloop + httptools, uvicorn's
   default and the service's): curl, httpx (``.content``, ``iter_raw`` into a buffer sized from
   ``Content-Length``, and with httpcore's read size raised), urllib3 ``readinto``,
   ``http.client`` ``readinto``, and async faces (httpx ``AsyncClient``, the sync read in a
   thread, asyncio ``sock_recv_into``). Ratios are against curl into ``/dev/null``.
4. **Tensors from the received buffer**: ``safetensors.torch.load(bytes)`` against
   ``tal.blobs.reader.read_state_dict`` (views of a writable buffer, or one copy of bytes).
5. **A fresh blob-sized buffer**, filled: ``bytearray``, 4 KiB-page memory, ``torch.empty``
   with huge pages, ``tal.blobs.memory.empty_bytes``. Page faults, not copies, dominate.

Receive buffers are ``bytearray`` (zero-filled) or ``tal.blobs.memory.empty_bytes`` (huge
pages), both sized from ``Content-Length``.

Curl's times are its own ``time_total`` (without starting the process); Python's are wall
times of the whole request, allocating the receive buffer included. The machines this ran on
have 2 cores shared with other people: run it under ``nice`` and repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# As `tal` and the service run torch (huge-page CPU tensors); set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

HOST = "127.0.0.1"
MIB = 1 << 20
MB = 1e6
MS = 1e3
PERCENT_95 = 0.95
READY_TIMEOUT_SECONDS = 60.0
READY_POLL_SECONDS = 0.1
CURL_TIMEOUT_SECONDS = 120
RAISED_READ_BYTES = 4 * MIB  # httpcore reads 64 KiB per call
SOCKET_READ_BYTES = 64 * 1024
FILE_CHUNK_BYTES = 16 * MIB
SERVER_LOOPS = ("uvloop", "asyncio")
SERVER_HTTPS = ("httptools", "h11")
# Route name -> memoryview slice size (0: the whole body in one send); "bytes" sends bytes.
ROUTES = {"bytes": None, "mv-whole": 0, "mv-1mib": MIB, "mv-16mib": 16 * MIB}
ZEROED, HUGE = "bytearray", "empty_bytes"  # receive buffer kinds
CLEAR_PEAK_RSS = "5"  # written to /proc/self/clear_refs, resets VmHWM
VIT_B = "vit_base_patch16_224"


# --------------------------------------------------------------------------- the server


def serve(port: int, blob_path: Path, loop: str, http_impl: str) -> None:
    """Runs the study's server (in its own process): the blob as bytes and as a NumPy-backed
    read-only memoryview (as ``tal.blobs.layout.Blob.memoryview`` exports it)."""
    import numpy as np
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

    as_bytes = blob_path.read_bytes()
    as_view = memoryview(np.fromfile(blob_path, dtype=np.uint8)).toreadonly()

    class SlicedResponse(Response):
        """``service.api.responses.BlobResponse`` with a chosen slice size."""

        media_type = "application/octet-stream"

        def __init__(self, view: memoryview, chunk: int) -> None:
            super().__init__(view)
            self.chunk = chunk

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await send(start)
            view = memoryview(self.body)
            for begin in range(0, view.nbytes, self.chunk):
                end = begin + self.chunk
                body = {"type": "http.response.body", "body": view[begin:end]}
                await send({**body, "more_body": end < view.nbytes})

    def blob(request: Request) -> Response:
        chunk = ROUTES[request.path_params["route"]]
        if chunk is None:
            return Response(as_bytes, media_type="application/octet-stream")
        if chunk == 0:
            return Response(as_view, media_type="application/octet-stream")
        return SlicedResponse(as_view, chunk)

    def stats(request: Request) -> JSONResponse:
        if request.query_params.get("reset"):
            Path("/proc/self/clear_refs").write_text(CLEAR_PEAK_RSS)
        status = Path("/proc/self/status").read_text()
        memory = {k: int(re.search(rf"{k}:\s+(\d+)", status)[1]) * 1024 for k in ("VmRSS", "VmHWM")}
        return JSONResponse({"cpu": time.process_time(), **memory})

    app = Starlette(routes=[Route("/blob/{route}", blob), Route("/stats", stats)])
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop=loop,
        http=http_impl,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextmanager
def server(blob_path: Path, loop: str, http_impl: str) -> Iterator[str]:
    """A running study server; yields its base URL."""
    port = free_port()
    command = [
        sys.executable,
        __file__,
        "--serve",
        str(port),
        "--blob",
        str(blob_path),
        "--loop",
        loop,
        "--http",
        http_impl,
    ]
    process = subprocess.Popen(command)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{url}/stats").read()
                break
            except OSError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    message = f"the study server ({loop}, {http_impl}) did not start"
                    raise RuntimeError(message) from exc
                time.sleep(READY_POLL_SECONDS)
        yield url
    finally:
        process.terminate()
        process.wait()


def server_stats(url: str, reset: bool = False) -> dict[str, float]:
    query = "?reset=1" if reset else ""
    return json.loads(urllib.request.urlopen(f"{url}/stats{query}").read())


# --------------------------------------------------------------------------- the clients


def curl(url: str, out: str) -> float:
    """Curl's own ``time_total`` for reading ``url`` into ``out``."""
    command = ["curl", "-sf", "-o", out, "-w", "%{time_total}", url]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=CURL_TIMEOUT_SECONDS
    )
    return float(result.stdout)


def empty_buffer(size: int, kind: str):
    """A receive buffer of ``size`` bytes: ``bytearray`` (zero-filled, 4 KiB pages) or
    ``tal.blobs.memory.empty_bytes`` (huge pages; returned as its NumPy view)."""
    if kind == "bytearray":
        return bytearray(size)
    from tal.blobs.memory import empty_bytes

    return empty_bytes(size).numpy()


def fill(view: memoryview, read_into: Callable[[memoryview], int]) -> None:
    done, size = 0, view.nbytes
    while done < size:
        count = read_into(view[done:])
        if not count:
            raise ConnectionError(f"the body ended after {done} of {size} bytes")
        done += count


def http_client_readinto(url: str, kind: str):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        buffer = empty_buffer(int(response.getheader("content-length")), kind)
        fill(memoryview(buffer).cast("B"), response.readinto)
        return buffer
    finally:
        connection.close()


def http_client_to_file(url: str, path: Path, chunk: memoryview) -> Path:
    """Streams the body to ``path`` through one reused buffer (``tal init`` writing a file)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        left = int(response.getheader("content-length"))
        with path.open("wb", buffering=0) as handle:
            while left:
                count = response.readinto(chunk[: min(left, chunk.nbytes)])
                if not count:
                    raise ConnectionError(f"the body ended {left} bytes early")
                handle.write(chunk[:count])
                left -= count
        return path
    finally:
        connection.close()


def talclient_today(client, url: str):
    """What ``TALClient.state_dict`` did before this study: 1 MiB ``iter_bytes`` chunks,
    joined, then ``safetensors.torch.load``."""
    import safetensors.torch

    with client.stream("GET", url) as response:
        blob = b"".join(response.iter_bytes(MIB))
    return safetensors.torch.load(blob)


def urllib3_readinto(pool, url: str, kind: str):
    response = pool.request("GET", url, preload_content=False)
    buffer = empty_buffer(int(response.headers["content-length"]), kind)
    fill(memoryview(buffer).cast("B"), response.readinto)
    response.release_conn()
    return buffer


def httpx_content(client, url: str) -> bytes:
    return client.get(url).content


def httpx_iter_raw(client, url: str, kind: str):
    with client.stream("GET", url) as response:
        buffer = empty_buffer(int(response.headers["content-length"]), kind)
        view, done = memoryview(buffer).cast("B"), 0
        for chunk in response.iter_raw():
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
    return buffer


@contextmanager
def httpcore_read_size(size: int) -> Iterator[None]:
    """Raises httpcore's per-call read size (a class attribute, not a supported option)."""
    from httpcore._async.http11 import AsyncHTTP11Connection
    from httpcore._sync.http11 import HTTP11Connection

    previous = HTTP11Connection.READ_NUM_BYTES
    HTTP11Connection.READ_NUM_BYTES = AsyncHTTP11Connection.READ_NUM_BYTES = size
    try:
        yield
    finally:
        HTTP11Connection.READ_NUM_BYTES = AsyncHTTP11Connection.READ_NUM_BYTES = previous


async def httpx_async_content(client, url: str) -> bytes:
    return (await client.get(url)).content


async def httpx_async_iter_raw(client, url: str, kind: str):
    async with client.stream("GET", url) as response:
        buffer = empty_buffer(int(response.headers["content-length"]), kind)
        view, done = memoryview(buffer).cast("B"), 0
        async for chunk in response.aiter_raw():
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
    return buffer


async def threaded_readinto(url: str):
    """The sync face's read, run in a worker thread: one implementation for both faces."""
    return await asyncio.to_thread(http_client_readinto, url, HUGE)


async def asyncio_recv_into(url: str):
    """h11 parses the head; the body goes straight from the socket into the buffer."""
    import h11

    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setblocking(False)
    try:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=parts.path, headers=[("Host", parts.netloc)])
        head = connection.send(request) + connection.send(h11.EndOfMessage())
        await loop.sock_sendall(sock, head)
        event = connection.next_event()
        while event is h11.NEED_DATA:
            connection.receive_data(await loop.sock_recv(sock, SOCKET_READ_BYTES))
            event = connection.next_event()
        headers = {name: value for name, value in event.headers}
        buffer = empty_buffer(int(headers[b"content-length"]), HUGE)
        view = memoryview(buffer).cast("B")
        leading, _ = connection.trailing_data  # body bytes that came with the head
        view[: len(leading)] = leading

        async def receive(part: memoryview) -> int:
            return await loop.sock_recv_into(sock, part)

        done = len(leading)
        while done < view.nbytes:
            count = await receive(view[done:])
            if not count:
                raise ConnectionError("the body ended early")
            done += count
        return buffer
    finally:
        sock.close()


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(PERCENT_95 * (len(ordered) - 1)))]


def timed(call: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def same_bytes(received, expected) -> bool:
    import numpy as np

    got = np.frombuffer(received, dtype=np.uint8)
    return got.size == len(expected) and bool((got == np.frombuffer(expected, np.uint8)).all())


def measure(label: str, call: Callable[[], object], reps: int, expected=None) -> Row:
    """``reps`` timings of ``call``; the first result is checked against ``expected``."""
    seconds = []
    for rep in range(reps):
        elapsed, result = timed(call)
        if rep == 0 and expected is not None and not same_bytes(result, expected):
            raise AssertionError(f"{label}: the received bytes differ from the blob")
        del result
        seconds.append(elapsed)
    return Row(label, seconds)


def measure_curl(url: str, out: str, reps: int) -> list[float]:
    return [curl(url, out) for _ in range(reps)]


def measure_async(label: str, make, reps: int, expected) -> Row:
    """``make(client)`` returns a coroutine; one event loop and one httpx.AsyncClient."""
    import httpx

    async def run() -> list[float]:
        seconds = []
        async with httpx.AsyncClient(timeout=CURL_TIMEOUT_SECONDS) as client:
            for rep in range(reps):
                gc.collect()
                start = time.perf_counter()
                result = await make(client)
                seconds.append(time.perf_counter() - start)
                if rep == 0 and not same_bytes(result, expected):
                    raise AssertionError(f"{label}: the received bytes differ from the blob")
                del result
        return seconds

    return Row(label, asyncio.run(run()))


# --------------------------------------------------------------------------- the sections


def vit_b_state_dict():
    import timm

    model = timm.create_model(VIT_B, pretrained=False)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def serialising(tensors, reps: int) -> list[Row]:
    import safetensors.torch

    from tal.blobs import io

    metadata = {"tal.spec": VIT_B}
    return [
        measure("safetensors.torch.save", lambda: safetensors.torch.save(tensors), reps),
        measure("tal.blobs.io.to_bytes", lambda: io.to_bytes(tensors, metadata), reps),
        measure("tal.blobs.io.pack (cached buffer)", lambda: io.pack(tensors, metadata), reps),
    ]


def servers(blob_path: Path, reps: int) -> list[tuple[Row, float, float]]:
    """(row, server CPU seconds per response, peak RSS above idle in MB) per loop/http/route."""
    rows = []
    for loop in SERVER_LOOPS:
        for http_impl in SERVER_HTTPS:
            with server(blob_path, loop, http_impl) as url:
                for route in ROUTES:
                    before = server_stats(url, reset=True)
                    seconds = measure_curl(f"{url}/blob/{route}", os.devnull, reps)
                    after = server_stats(url)
                    cpu = (after["cpu"] - before["cpu"]) / reps
                    peak = (after["VmHWM"] - before["VmRSS"]) / MB
                    rows.append((Row(f"{loop} + {http_impl}, {route}", seconds), cpu, peak))
                    print(f"  measured {rows[-1][0].label}", flush=True)
    return rows


def clients(blob_path: Path, expected: bytes, reps: int, route: str) -> list[Row]:
    import httpx
    import urllib3

    from tal.blobs.reader import read_state_dict

    def sync_rows(url: str, client: httpx.Client, pool: urllib3.PoolManager) -> list[Row]:
        cases = {
            "httpx .content": lambda: httpx_content(client, url),
            "httpx iter_raw -> bytearray": lambda: httpx_iter_raw(client, url, ZEROED),
            "httpx iter_raw -> empty_bytes": lambda: httpx_iter_raw(client, url, HUGE),
            "urllib3 readinto -> bytearray": lambda: urllib3_readinto(pool, url, ZEROED),
            "urllib3 readinto -> empty_bytes": lambda: urllib3_readinto(pool, url, HUGE),
            "http.client readinto -> bytearray": lambda: http_client_readinto(url, ZEROED),
            "http.client readinto -> empty_bytes": lambda: http_client_readinto(url, HUGE),
        }
        rows = [measure(label, call, reps, expected) for label, call in cases.items()]
        with httpcore_read_size(RAISED_READ_BYTES):
            label = "httpx iter_raw -> empty_bytes, 4 MiB reads (patched httpcore)"
            rows.append(measure(label, lambda: httpx_iter_raw(client, url, HUGE), reps, expected))
        file_chunk = memoryview(bytearray(FILE_CHUNK_BYTES))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "blob.safetensors"
            label = "http.client readinto 16 MiB -> file"
            call = lambda: http_client_to_file(url, path, file_chunk)  # noqa: E731
            rows.append(measure(label, call, reps))
        label = "state dict, before: httpx iter_bytes(1 MiB), join, safetensors.torch.load"
        rows.append(measure(label, lambda: talclient_today(client, url), reps))
        label = "state dict: http.client readinto -> empty_bytes, read_state_dict"
        call = lambda: read_state_dict(http_client_readinto(url, HUGE))  # noqa: E731
        rows.append(measure(label, call, reps))
        return rows

    def async_rows(url: str) -> list[Row]:
        cases = {
            "async: httpx AsyncClient .content": lambda c: httpx_async_content(c, url),
            "async: httpx aiter_raw -> bytearray": lambda c: httpx_async_iter_raw(c, url, ZEROED),
            "async: httpx aiter_raw -> empty_bytes": lambda c: httpx_async_iter_raw(c, url, HUGE),
            "async: to_thread(http.client readinto) -> empty_bytes": (
                lambda _: threaded_readinto(url)
            ),
            "async: sock_recv_into (h11 head) -> empty_bytes": lambda _: asyncio_recv_into(url),
        }
        rows = [measure_async(label, make, reps, expected) for label, make in cases.items()]
        with httpcore_read_size(RAISED_READ_BYTES):
            label = "async: httpx aiter_raw -> empty_bytes, 4 MiB reads (patched httpcore)"
            make = lambda c: httpx_async_iter_raw(c, url, HUGE)  # noqa: E731
            rows.append(measure_async(label, make, reps, expected))
        return rows

    with server(blob_path, "uvloop", "httptools") as base, tempfile.TemporaryDirectory() as tmp:
        url = f"{base}/blob/{route}"
        rows = [Row("curl -o /dev/null", measure_curl(url, os.devnull, reps))]
        out = str(Path(tmp) / "blob.safetensors")
        rows.append(Row("curl -o file", measure_curl(url, out, reps)))
        with httpx.Client(timeout=CURL_TIMEOUT_SECONDS) as client:
            rows += sync_rows(url, client, urllib3.PoolManager())
        rows += async_rows(url)
    return rows


def fresh_buffers(expected: bytes, reps: int) -> list[Row]:
    """Allocating a blob-sized buffer and copying the blob into it: what page faults cost."""
    import mmap

    import numpy as np
    import torch

    from tal.blobs.memory import empty_bytes

    source = np.frombuffer(expected, dtype=np.uint8)

    def into(buffer):
        np.frombuffer(buffer, dtype=np.uint8)[:] = source
        return buffer

    def plain_mapping():
        return mmap.mmap(-1, len(expected), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    cases = {
        "bytearray(n)": lambda: into(bytearray(len(expected))),
        "plain anonymous mmap (4 KiB pages)": lambda: into(plain_mapping()),
        "torch.empty, THP_MEM_ALLOC_ENABLE=1": lambda: into(
            torch.empty(len(expected), dtype=torch.uint8).numpy()
        ),
        "tal.blobs.memory.empty_bytes": lambda: into(empty_bytes(len(expected)).numpy()),
    }
    return [measure(label, call, reps) for label, call in cases.items()]


def tensors_from_buffer(expected: bytes, reps: int) -> list[Row]:
    import safetensors.torch

    from tal.blobs.reader import read_state_dict

    writable = bytearray(expected)
    cases = {
        "safetensors.torch.load(bytes)": lambda: safetensors.torch.load(expected),
        "tal.blobs read_state_dict(bytes): one copy": lambda: read_state_dict(expected),
        "tal.blobs read_state_dict(bytearray): views": lambda: read_state_dict(writable),
    }
    return [measure(label, call, reps) for label, call in cases.items()]


def print_table(title: str, rows: list[Row], size: int, baseline: float | None) -> None:
    print(f"\n### {title}\n")
    ratio = " | ratio to curl" if baseline else ""
    print(f"| | median ms | p95 ms | MB/s{ratio} |")
    print("| --- | --- | --- | ---" + (" | ---" if baseline else "") + " |")
    for row in rows:
        cells = [f"{row.median * MS:.0f}", f"{row.p95 * MS:.0f}", f"{size / row.median / MB:.0f}"]
        if baseline:
            cells.append(f"{row.median / baseline:.2f}")
        print(f"| {row.label} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--client-route", default="mv-1mib", choices=list(ROUTES))
    parser.add_argument("--sections", default="serialise,buffers,servers,clients,tensors")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--blob", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    parser.add_argument("--http", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.blob, args.loop, args.http)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from tal.blobs import io

    torch.set_num_threads(1)  # the other core is the server's
    sections = args.sections.split(",")
    tensors = vit_b_state_dict()
    expected = io.to_bytes(tensors, {"tal.spec": VIT_B})
    size = len(expected)
    print(f"blob: {VIT_B} fp32, {len(tensors)} tensors, {size / MB:.1f} MB; {args.reps} reps")
    with tempfile.TemporaryDirectory() as folder:
        blob_path = Path(folder) / "blob.safetensors"
        blob_path.write_bytes(expected)
        if "serialise" in sections:
            print_table(
                "Serialising ViT-B/16 (timm init, fp32)",
                serialising(tensors, args.reps),
                size,
                None,
            )
        del tensors
        if "buffers" in sections:
            title = "A fresh blob-sized buffer, filled (page faults)"
            print_table(title, fresh_buffers(expected, args.reps), size, None)
        if "servers" in sections:
            rows = servers(blob_path, args.reps)
            print("\n### Servers (curl -o /dev/null)\n")
            print("| loop + http, body | median ms | p95 ms | MB/s | server CPU ms | peak RSS MB |")
            print("| --- | --- | --- | --- | --- | --- |")
            for row, cpu, peak in rows:
                print(
                    f"| {row.label} | {row.median * MS:.0f} | {row.p95 * MS:.0f} | "
                    f"{size / row.median / MB:.0f} | {cpu * MS:.0f} | {peak:.0f} |"
                )
        if "clients" in sections:
            rows = clients(blob_path, expected, args.reps, args.client_route)
            title = f"Clients (uvloop + httptools, route {args.client_route})"
            print_table(title, rows, size, rows[0].median)
        if "tensors" in sections:
            print_table(
                "Tensors from the received buffer",
                tensors_from_buffer(expected, args.reps),
                size,
                None,
            )


if __name__ == "__main__":
    main()
