"""Soak: a bounded mixed load on two workers sharing Redis, with one Redis restart and one hot
reload on the way (not a timed test; it prints figures and whether each target is met).

    python bench/soak.py [--minutes 3] [--requests 4000] [--clients 32]

Everything runs on this machine over loopback: a private ``redis-server``, two uvicorn workers
(``tests/harness.py``) sharing it over a temporary model store (``tal-test`` versions 1 and 2,
a fresh hypernetwork: timing does not depend on training), and ``--clients`` client threads
that use only the public HTTP API. The run stops after ``--minutes`` or ``--requests``,
whichever comes first. A third of the way in Redis is stopped and started again (empty); two
thirds of the way in both workers hot-reload to version 2 (``POST /v1/models/reload``, admin
key), which changes every cache key, as a real new checkpoint does.

The mix, per request a client draws (weights in ``MIX``):

* ``hot``: ``POST /v1/initialize`` of one of ``HOT`` (ViT-Ti to GPT-2 small), so mostly hits;
* ``fresh``: a request nobody made before (a new class count or context length), so a miss,
  of ``FRESH`` (mostly ViT-Ti and ViT-S, sometimes ViT-B and GPT-2 small);
* ``conditional``: a hot request with ``If-None-Match`` of its last ETag (304);
* ``probe``: ``GET /readyz`` or ``/healthz``; ``metrics``: ``GET /metrics``.

Besides the clients, a ``curl`` process asks every ``CURL_PROBE_SECONDS`` for the smallest hot
blob (class ``hit-curl``): a small hit read by a program outside the load generator, whose
own threads share one interpreter lock and the two cores with the workers.

Answers are classed by what they were (``X-Cache`` hit or miss, 304, probe, metrics). Per class
it prints p50 / p95 / p99 of the time to the last byte (and to the first for hits), errors by
status, connection errors, and the workers' peak resident memory (psutil, sampled) against
what the settings allow them.

Targets: no 5xx, no connection errors, hit p99 under 0.5 s (to the first byte, all sizes, and
to the last byte for a small blob read by curl; the load generator's own Python clients read
small blobs slower than the workers send them, so their figure is printed beside it), each
worker's peak resident memory within its
baseline after start-up plus ``TAL_MEMORY_CACHE_BYTES`` + ``TAL_INFLIGHT_BUDGET_BYTES`` +
``TAL_OUTPUT_POOL_MB``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "service")]  # harness, test store

import httpx  # noqa: E402
import psutil  # noqa: E402
from harness import RedisProcess, ServiceProcess  # noqa: E402
from svc_support import MODEL, TASK, make_store  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
ADMIN_KEY = "soak-admin"
USER_KEY = "soak-user"
READ_CHUNK = 4 * MIB
REQUEST_TIMEOUT = 180.0
MEMORY_SAMPLE_SECONDS = 0.2
SETTLE_SECONDS = 2.0  # after start-up, before the baseline memory is read
HIT_P99_TARGET = 0.5
SMALL_BLOB_BYTES = 16 * MIB  # the Redis tier's limit: blobs above it live in memory only
RESTART_AT, RELOAD_AT = 1 / 3, 2 / 3
RELOAD_VERSION = "2"
CURL_PROBE_SECONDS = 1.0
SERVER_ERROR = 500
ERROR_STATUS = 400

GPT2_SMALL = {"family": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12}
VIT = {
    "ti": {"family": "vit", "depth": 12, "embed_dim": 192, "num_heads": 3},
    "s": {"family": "vit", "depth": 12, "embed_dim": 384, "num_heads": 6},
    "b": {"family": "vit", "depth": 12, "embed_dim": 768, "num_heads": 12},
}
# Hot requests: (label, body, weight). The tiny one is the size of a head fitted on glyphs.
HOT = [
    ("vit-tiny-32px", {"arch": {**VIT["ti"], "depth": 4, "img_size": 32, "patch_size": 4}}, 20),
    ("vit-ti", {"arch": "vit_tiny_patch16_224", "task": TASK}, 35),
    ("vit-s", {"arch": "vit_small_patch16_224"}, 25),
    ("vit-b", {"arch": "vit_base_patch16_224"}, 12),
    ("gpt2", {"arch": GPT2_SMALL, "format": "hf"}, 8),
]
FRESH = [("vit-ti", VIT["ti"], 50), ("vit-s", VIT["s"], 30), ("vit-b", VIT["b"], 12)]
FRESH_GPT2_WEIGHT = 8
MIX = {"hot": 62, "fresh": 6, "conditional": 20, "probe": 8, "metrics": 4}


@dataclass(frozen=True)
class Sample:
    """One request: its class, status (None: no answer), seconds to the first and last byte,
    when it started (seconds into the run), how long its connection had been idle before, and
    for a failure the error code of the body or the exception."""

    kind: str
    status: int | None
    first_byte: float
    total: float
    size: int
    at: float
    idle: float
    error: str | None = None


@dataclass
class Plan:
    """What the clients share: the limits, the hot ETags, the fresh-request counter."""

    deadline: float
    max_requests: int
    started: float = 0.0
    etags: dict[str, str] = field(default_factory=dict)
    issued: int = 0
    fresh: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_ticket(self) -> bool:
        with self.lock:
            if self.issued >= self.max_requests or time.monotonic() >= self.deadline:
                return False
            self.issued += 1
            return True

    def next_fresh(self) -> int:
        with self.lock:
            self.fresh += 1
            return self.fresh


def fresh_body(rng: random.Random, number: int) -> tuple[str, dict]:
    """A request no one made before: a new class count (ViT) or context length (GPT-2)."""
    labels = [label for label, _, _ in FRESH] + ["gpt2"]
    weights = [weight for _, _, weight in FRESH] + [FRESH_GPT2_WEIGHT]
    label = rng.choices(labels, weights)[0]
    if label == "gpt2":
        return label, {"arch": {**GPT2_SMALL, "n_positions": 1024 + number}, "format": "hf"}
    arch = next(arch for name, arch, _ in FRESH if name == label)
    return label, {"arch": {**arch, "num_classes": 1000 + number}}


def timed_request(
    client: httpx.Client, method: str, path: str, **kwargs: object
) -> tuple[httpx.Response, float, float, int, str | None]:
    """(response, seconds to the headers, seconds to the last byte, body bytes, the ``error``
    code of an error body), the body streamed and dropped as it arrives."""
    start = time.perf_counter()
    with client.stream(method, path, **kwargs) as response:
        first = time.perf_counter() - start
        if response.status_code >= ERROR_STATUS:
            response.read()
            size, code = len(response.content), error_code(response)
        else:
            size, code = sum(len(c) for c in response.iter_raw(READ_CHUNK)), None
    return response, first, time.perf_counter() - start, size, code


def error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except ValueError:
        return response.text[:40]


def classify(kind: str, response: httpx.Response) -> str:
    if kind in ("probe", "metrics"):
        return kind
    if response.status_code == 304:
        return "304"
    if response.status_code == 200:
        return response.headers.get("x-cache", "miss")
    return kind


def client_loop(index: int, urls: list[str], plan: Plan, samples: list[Sample], seed: int) -> None:
    rng = random.Random(seed + index)
    headers = {"X-API-Key": USER_KEY}
    kinds, weights = list(MIX), list(MIX.values())
    hot_weights = [weight for _, _, weight in HOT]
    last_end = time.monotonic()
    with httpx.Client(base_url=urls[index % len(urls)], timeout=REQUEST_TIMEOUT) as client:
        while plan.next_ticket():
            kind = rng.choices(kinds, weights)[0]
            label, body = rng.choices([(h[0], h[1]) for h in HOT], hot_weights)[0]
            extra: dict[str, object] = {}
            if kind == "fresh":
                label, body = fresh_body(rng, plan.next_fresh())
            if kind == "conditional" and label in plan.etags:
                extra = {"If-None-Match": plan.etags[label]}
            now = time.monotonic()
            at, idle = now - plan.started, now - last_end
            try:
                if kind == "probe":
                    path = rng.choice(["/readyz", "/healthz"])
                    response, first, total, size, code = timed_request(client, "GET", path)
                elif kind == "metrics":
                    response, first, total, size, code = timed_request(client, "GET", "/metrics")
                else:
                    response, first, total, size, code = timed_request(
                        client, "POST", "/v1/initialize", json=body, headers={**headers, **extra}
                    )
                    if kind != "fresh" and "etag" in response.headers:
                        plan.etags[label] = response.headers["etag"]
            except httpx.TransportError as exc:
                samples.append(Sample(kind, None, 0.0, 0.0, 0, at, idle, f"{type(exc).__name__}"))
                last_end = time.monotonic()
                continue
            last_end = time.monotonic()
            sample_kind = classify(kind, response)
            if sample_kind == "hit" and size > SMALL_BLOB_BYTES:
                sample_kind = "hit-large"
            samples.append(
                Sample(sample_kind, response.status_code, first, total, size, at, idle, code)
            )


def curl_probe(urls: list[str], plan: Plan, samples: list[Sample]) -> None:
    """The smallest hot request through curl, every ``CURL_PROBE_SECONDS``, to each worker in
    turn (class ``hit-curl`` when it was a hit)."""
    label, body, _ = HOT[0]
    for number in itertools.count():
        if time.monotonic() >= plan.deadline or plan.issued >= plan.max_requests:
            return
        at = time.monotonic() - plan.started
        command = [
            "curl", "-s", "-o", os.devnull, "-D", "-", "-w",
            "\n%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
            "-X", "POST", f"{urls[number % len(urls)]}/v1/initialize",
            "-H", "Content-Type: application/json", "-H", f"X-API-Key: {USER_KEY}",
            "-d", json.dumps(body),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=REQUEST_TIMEOUT)
        *headers, last = result.stdout.strip().splitlines()
        status, first, total, size = last.split()
        code = int(status)
        if not code:  # curl's 000: no answer
            samples.append(Sample(f"curl-{label}", None, 0.0, 0.0, 0, at, 0.0, "curl: no answer"))
        else:
            hit = any(h.lower().startswith("x-cache: hit") for h in headers)
            kind = "hit-curl" if hit and code == HTTPStatus.OK else f"curl-{label}"
            samples.append(Sample(kind, code, float(first), float(total), int(size), at, 0.0))
        time.sleep(CURL_PROBE_SECONDS)


class MemoryWatch(threading.Thread):
    """Peak resident memory of each process (and its children), sampled."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peaks = [0] * len(pids)
        self.stop = threading.Event()

    @staticmethod
    def resident(process: psutil.Process) -> int:
        try:
            family = [process, *process.children(recursive=True)]
            return sum(p.memory_info().rss for p in family)
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self.stop.wait(MEMORY_SAMPLE_SECONDS):
            for i, process in enumerate(self.processes):
                self.peaks[i] = max(self.peaks[i], self.resident(process))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def events(
    redis: RedisProcess,
    replicas: list[ServiceProcess],
    plan: Plan,
    log: list[str],
    times: list[float],
) -> None:
    """The Redis restart and the hot reload, at their share of the run (``log`` gets a line
    and ``times`` the start, in seconds into the run, of each)."""
    start = plan.started
    length = plan.deadline - start

    def wait_until(share: float) -> bool:
        while time.monotonic() < start + share * length:
            if plan.issued >= plan.max_requests:
                return False
            time.sleep(0.1)
        return True

    if wait_until(RESTART_AT):
        began = time.monotonic()
        times.append(began - start)
        redis.stop()
        redis.start()
        down = time.monotonic() - began
        log.append(f"redis restarted (empty) at {began - start:.1f} s, down {down:.2f} s")
    if wait_until(RELOAD_AT):
        for replica in replicas:
            began = time.monotonic()
            times.append(began - start)
            answer = httpx.post(
                f"{replica.url}/v1/models/reload",
                json={"name": MODEL, "version": RELOAD_VERSION},
                headers={"X-API-Key": ADMIN_KEY},
                timeout=REQUEST_TIMEOUT,
            )
            log.append(
                f"reload of {replica.url} at {began - start:.1f} s: {answer.status_code} in "
                f"{time.monotonic() - began:.2f} s"
            )


def print_phases(by_kind: dict[str, list[Sample]], times: list[float]) -> None:
    """Hit p99 (to the first byte) before, between and after the events."""
    hits = by_kind.get("hit", []) + by_kind.get("hit-large", [])
    edges = [0.0, *times, float("inf")]
    parts = []
    for start, end in itertools.pairwise(edges):
        window = [s.first_byte for s in hits if start <= s.at < end]
        if window:
            parts.append(
                f"{start:.0f}-{end:.0f} s: {percentile(window, 0.99):.3f} s (n={len(window)})"
            )
    print(f"hit first-byte p99 between events: {'; '.join(parts)}")


def report(
    samples: list[Sample],
    watch: MemoryWatch,
    baselines: list[int],
    allowance: int,
    settings: dict[str, str],
    elapsed: float,
    log: list[str],
    log_times: list[float],
) -> None:
    by_kind: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_kind[sample.kind].append(sample)
    print(f"\n{len(samples)} requests in {elapsed:.0f} s ({len(samples) / elapsed:.1f}/s)")
    for line in log:
        print(f"  event: {line}")
    columns = ("n", "p50 s", "p95 s", "p99 s", "first-byte p99 s", "MB/req")
    widths = (6, 8, 8, 8, 17, 8)
    print(
        "\n"
        + f"{'class':<10} "
        + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    )
    for kind in ("hit", "hit-curl", "hit-large", "miss", "304", "probe", "metrics"):
        group = [s for s in by_kind.get(kind, []) if s.status is not None]
        if not group:
            continue
        totals = [s.total for s in group]
        print(
            f"{kind:<10} {len(group):>6} {percentile(totals, 0.5):>8.3f} "
            f"{percentile(totals, 0.95):>8.3f} {percentile(totals, 0.99):>8.3f} "
            f"{percentile([s.first_byte for s in group], 0.99):>17.3f} "
            f"{statistics.fmean(s.size for s in group) / 1e6:>8.1f}"
        )
    statuses = Counter(s.status for s in samples if s.status is not None and s.status >= 400)
    connection = Counter(s.error for s in samples if s.status is None)
    print(f"\nerrors by status: {dict(sorted(statuses.items())) or 'none'}")
    print(f"connection errors: {dict(connection) or 'none'}")
    failures = [s for s in samples if s.status is None or s.status >= ERROR_STATUS]
    for s in sorted(failures, key=lambda s: s.at):
        print(
            f"  {s.at:6.1f} s  {s.kind:<11} {s.status or 'no answer'} {s.error}  (connection "
            f"idle {s.idle:.2f} s before)"
        )
    print_phases(by_kind, log_times)
    budget = int(settings["TAL_INFLIGHT_BUDGET_BYTES"])
    for i, (peak, base) in enumerate(zip(watch.peaks, baselines, strict=True)):
        print(
            f"worker {i + 1}: peak resident {peak / GIB:.2f} GiB (baseline {base / GIB:.2f} GiB, "
            f"allowed {(base + allowance) / GIB:.2f} GiB = baseline + memory cache + in-flight "
            f"budget {budget / GIB:.2f} GiB + output pool)"
        )
    hits = by_kind.get("hit", []) + by_kind.get("hit-large", [])
    targets = {
        "zero 5xx": sum(n for status, n in statuses.items() if status >= SERVER_ERROR) == 0,
        "zero connection errors": not connection,
        f"hit p99 to first byte < {HIT_P99_TARGET} s": bool(hits)
        and percentile([s.first_byte for s in hits], 0.99) < HIT_P99_TARGET,
        f"hit p99 (a blob <= 16 MiB, read by curl) < {HIT_P99_TARGET} s": bool(
            by_kind.get("hit-curl")
        )
        and percentile([s.total for s in by_kind["hit-curl"]], 0.99) < HIT_P99_TARGET,
        "peak memory within the configured budget": all(
            peak <= base + allowance for peak, base in zip(watch.peaks, baselines, strict=True)
        ),
    }
    if by_kind.get("hit"):
        python_p99 = percentile([s.total for s in by_kind["hit"]], 0.99)
        print(f"hit p99 (blobs <= 16 MiB) read by the load generator's clients: {python_p99:.3f} s")
    print()
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="stop after this long")
    parser.add_argument("--requests", type=int, default=4000, help="stop after this many")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--budget-gib", type=float, default=3.0, help="TAL_INFLIGHT_BUDGET_BYTES")
    parser.add_argument("--cache-gib", type=float, default=1.0, help="TAL_MEMORY_CACHE_BYTES")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")

    folder = Path(tempfile.mkdtemp(prefix="tal-soak-"))
    store = make_store(folder / "store")
    redis = RedisProcess(folder / "redis").start()
    output_pool_mb = int(os.environ.get("TAL_OUTPUT_POOL_MB", "1024"))
    settings = {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_MODEL_VERSION": "1",
        "TAL_REDIS_URL": redis.url,
        "TAL_API_KEYS": USER_KEY,
        "TAL_ADMIN_KEYS": ADMIN_KEY,
        "TAL_TORCH_THREADS": str(args.threads),
        "TAL_INFLIGHT_BUDGET_BYTES": str(int(args.budget_gib * GIB)),
        "TAL_MEMORY_CACHE_BYTES": str(int(args.cache_gib * GIB)),
        "HF_HUB_OFFLINE": "1",
    }
    allowance = (
        int(settings["TAL_MEMORY_CACHE_BYTES"])
        + int(settings["TAL_INFLIGHT_BUDGET_BYTES"])
        + output_pool_mb * MIB
    )
    replicas = [ServiceProcess(folder, settings) for _ in range(2)]
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        urls = [replica.url for replica in replicas]
        time.sleep(SETTLE_SECONDS)
        baselines = [MemoryWatch.resident(psutil.Process(r.pid)) for r in replicas]
        watch = MemoryWatch([r.pid for r in replicas])
        watch.start()
        print(f"workers ready at {urls}; warming the hot set", flush=True)
        plan = Plan(deadline=0.0, max_requests=args.requests)
        with httpx.Client(timeout=REQUEST_TIMEOUT, headers={"X-API-Key": USER_KEY}) as warm:
            for url in urls:
                for label, body, _ in HOT:
                    answer = warm.post(f"{url}/v1/initialize", json=body)
                    answer.raise_for_status()
                    plan.etags[label] = answer.headers["etag"]
        plan.deadline = time.monotonic() + args.minutes * 60
        samples: list[Sample] = []
        log: list[str] = []
        times: list[float] = []
        print(
            f"{args.clients} clients for {args.minutes:g} min or {args.requests} requests",
            flush=True,
        )
        started = plan.started = time.monotonic()
        threads = [
            threading.Thread(target=client_loop, args=(i, urls, plan, samples, args.seed))
            for i in range(args.clients)
        ]
        chaos = threading.Thread(target=events, args=(redis, replicas, plan, log, times))
        probe = threading.Thread(target=curl_probe, args=(urls, plan, samples))
        for thread in [*threads, chaos, probe]:
            thread.start()
        for thread in [*threads, chaos, probe]:
            thread.join()
        elapsed = time.monotonic() - started
        watch.stop.set()
        watch.join()
        report(samples, watch, baselines, allowance, settings, elapsed, log, times)
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()


if __name__ == "__main__":
    main()
