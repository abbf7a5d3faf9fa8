"""Weights on the wire: the service against what a user would do locally (not a timed test).

    python bench/service.py [--reps 7] [--models vit_s,vit_b,gpt2] [--concurrency 24]

Starts one uvicorn worker on this machine (the shipped checkpoint, in-process cache, torch
threads as the service sizes them) and measures, per model, in one run:

* the baseline a user would otherwise run: ``timm.create_model`` (``GPT2LMHeadModel`` for GPT-2)
  with random init, then ``safetensors.torch.save``;
* ``tal.predict.predict_blob`` in this process (the same checkpoint);
* a miss (a fresh cache key each time: the spec's class count, or GPT-2's positions) and a
  memory hit, each received whole by curl (``-o /dev/null``, curl's own ``time_total``) and by
  ``TALClient.state_dict`` (tensors in hand);
* the worker's peak resident memory during a miss above its level before, against the blob;
* misses again once the worker is warm: after enough misses of the model to fill its memory
  cache, every new blob reuses the buffer of one the cache evicted. Until then each miss
  grows the process, which on our virtual machines costs up to 0.4 s for ViT-B's 346 MB
  (docs/service.md): the first columns are a freshly started worker's.

Then ``--concurrency`` clients send mixed requests (ViT-Ti to GPT-2 small; misses and hits)
for ``--burst-requests`` requests, and the hits' latency under that load is set against idle
hits. Prints p50 / p95, ratios to the baseline and whether each target is met.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as `tal` and the service do
# This file is named service.py: keep its folder off the path so ``service`` is the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the process harness

import psutil  # noqa: E402
from harness import ServiceProcess  # noqa: E402

from tal.arch.parse import parse_arch  # noqa: E402
from tal.arch.specs import GPT2Spec  # noqa: E402
from tal.arch.target_models import build_model  # noqa: E402
from tal.client import RetryPolicy, TALClient  # noqa: E402
from tal.predict import default_learngene, predict_blob  # noqa: E402

MODELS = {
    "vit_s": ("ViT-S/16", "vit_small_patch16_224", "timm"),
    "vit_b": ("ViT-B/16", "vit_base_patch16_224", "timm"),
    "gpt2": ("GPT-2 small", GPT2Spec().model_dump(mode="json"), "hf"),
}
BURST_MODELS = (
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    {"family": "gpt2", "n_layer": 4, "n_embd": 256, "n_head": 4},
    GPT2Spec().model_dump(mode="json"),
)
# targets on our 2-core CPU (ratios to the baseline; seconds; memory over the blob)
TARGET_MISS_CURL, TARGET_MISS_CLIENT = 0.25, 0.35  # ViT-B/16
TARGET_HIT_CURL, TARGET_HIT_CLIENT = 0.1, 0.2  # ViT-B/16
TARGET_GPT2_MISS_SECONDS = 0.4
TARGET_PEAK_OVER_BLOB = 1.3
MEMORY_CACHE_BYTES = 4 << 30  # the worker's TAL_MEMORY_CACHE_BYTES
WARMING_SPARE_MISSES = 2  # beyond the blobs the memory cache holds
RSS_SAMPLE_SECONDS = 0.002
PERCENT = 100


def variant_of(arch: object, variant: int) -> dict:
    """``arch`` as a spec dict made distinct by ``variant`` (a cache key of its own): ViTs by
    their class count, GPT-2 by its number of positions."""
    spec = parse_arch(arch)  # type: ignore[arg-type]
    field = "num_classes" if spec.family == "vit" else "n_positions"
    return {**spec.model_dump(mode="json"), field: getattr(spec, field) + variant}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / PERCENT * (len(ordered) - 1)))]


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def baseline(arch: object, format: str) -> float:
    """Random init of the real model, then its safetensors bytes (what a user would run)."""
    import safetensors.torch

    spec = parse_arch(arch)  # type: ignore[arg-type]

    def run() -> None:
        model = build_model(spec, format)
        unique: dict[int, tuple[str, object]] = {}  # tied tensors once, as save_model does
        for name, tensor in model.state_dict().items():
            unique.setdefault(tensor.data_ptr(), (name, tensor))
        safetensors.torch.save({name: tensor.contiguous() for name, tensor in unique.values()})

    return timed(run)


def curl_seconds(url: str, body: dict) -> float:
    """curl's own total time for the whole body to /dev/null."""
    import json

    command = [
        "curl", "-sf", "-o", os.devnull, "-w", "%{time_total}", "-X", "POST",
        f"{url}/v1/initialize", "-H", "Content-Type: application/json", "-d", json.dumps(body),
    ]  # fmt: skip
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


class PeakRSS:
    """Samples a process's resident memory in a thread; ``peak`` over the block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(RSS_SAMPLE_SECONDS)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def single_requests(server: ServiceProcess, reps: int, keys: list[str]) -> dict[str, dict]:
    client = TALClient(server.url, retry=RetryPolicy(retries=0))
    rows = {key: measure_model(server, client, reps, *MODELS[key]) for key in keys}
    client.close()
    return rows


def measure_model(
    server: ServiceProcess, client: TALClient, reps: int, label: str, arch: object, format: str
) -> dict[str, object]:
    """Baseline, in-process, miss and hit timings of one model, and a miss's peak memory."""
    learngene = default_learngene()
    predict_blob(arch, None, format, learngene=learngene)  # warm (timm import, graph)
    base = [baseline(arch, format) for _ in range(reps)]
    local = [
        timed(lambda s=s: predict_blob(variant_of(arch, s), None, format, learngene=learngene))
        for s in range(reps)
    ]
    miss_curl = [
        curl_seconds(server.url, {"arch": variant_of(arch, 100 + s), "format": format})
        for s in range(reps)
    ]
    miss_client, peaks, blob_bytes = [], [], 0
    for s in range(reps):
        fresh = variant_of(arch, 200 + s)
        with PeakRSS(server.process.pid) as rss:  # type: ignore[union-attr]
            miss_client.append(timed(lambda a=fresh: client.state_dict(a, format=format)))
        blob_bytes = len(client.initialize(fresh, format=format))  # a hit now
        peaks.append((rss.peak - rss.before) / blob_bytes)
    for s in range(MEMORY_CACHE_BYTES // blob_bytes + WARMING_SPARE_MISSES):
        curl_seconds(server.url, {"arch": variant_of(arch, 300 + s), "format": format})
    miss_warm = [
        curl_seconds(server.url, {"arch": variant_of(arch, 1000 + s), "format": format})
        for s in range(reps)
    ]
    cached = variant_of(arch, 100)
    hit_curl = [curl_seconds(server.url, {"arch": cached, "format": format}) for _ in range(reps)]
    hit_client = [timed(lambda: client.state_dict(cached, format=format)) for _ in range(reps)]
    print(f"measured {label}", flush=True)
    return {
        "label": label, "baseline": base, "local": local, "miss_curl": miss_curl,
        "miss_client": miss_client, "miss_warm": miss_warm, "hit_curl": hit_curl,
        "hit_client": hit_client,
        "peak_over_blob": peaks, "blob_mib": blob_bytes / 2**20,
    }  # fmt: skip


def burst(server: ServiceProcess, concurrency: int, requests: int) -> dict[str, object]:
    """``concurrency`` clients, ``requests`` requests: half hits on warm keys, half misses."""
    client = TALClient(server.url, retry=RetryPolicy(retries=50, backoff=0.05, max_backoff=2))
    warm = [(variant_of(arch, 0), "hf" if "gpt2" in str(arch) else "timm") for arch in BURST_MODELS]
    for arch, format in warm:
        client.initialize(arch, format=format)
    idle = [timed(lambda a=a, f=f: client.initialize(a, format=f)) for a, f in warm * 3]
    pid = server.process.pid  # type: ignore[union-attr]
    hits: list[float] = []
    misses: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(number: int) -> None:
        base_arch = BURST_MODELS[number % len(BURST_MODELS)]
        format = "hf" if "gpt2" in str(base_arch) else "timm"
        is_hit = number % 2 == 0
        arch = variant_of(base_arch, 0 if is_hit else 1000 + number)
        try:
            seconds = timed(lambda: client.initialize(arch, format=format))
        except Exception as exc:  # any failure is reported, not raised
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            (hits if is_hit else misses).append(seconds)

    with PeakRSS(pid) as rss, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    client.close()
    return {"idle": idle, "hits": hits, "misses": misses, "failures": failures,
            "peak_mib": rss.peak / 2**20, "before_mib": rss.before / 2**20}  # fmt: skip


def report(rows: dict[str, dict], load: dict[str, object] | None) -> None:
    print("\n| model | blob MiB | baseline s | in-process s | miss curl s | miss client s "
          "| miss curl, warm worker s | hit curl s | hit client s "
          "| miss / baseline (curl, client, warm curl) "
          "| hit / baseline (curl, client) | peak miss memory / blob |")  # fmt: skip
    print("|" + " --- |" * 12)
    for row in rows.values():
        base = statistics.median(row["baseline"])

        def cell(name: str, row: dict = row) -> str:
            return f"{statistics.median(row[name]):.3f} / {p(row[name], 95):.3f}"

        ratio = lambda name, row=row, base=base: statistics.median(row[name]) / base  # noqa: E731
        print(
            f"| {row['label']} | {row['blob_mib']:.0f} | {cell('baseline')} | {cell('local')} "
            f"| {cell('miss_curl')} | {cell('miss_client')} | {cell('miss_warm')} "
            f"| {cell('hit_curl')} | {cell('hit_client')} "
            f"| {ratio('miss_curl'):.2f}, {ratio('miss_client'):.2f}, {ratio('miss_warm'):.2f} "
            f"| {ratio('hit_curl'):.3f}, {ratio('hit_client'):.3f} "
            f"| {max(row['peak_over_blob']):.2f} |"
        )
    print("\n(cells: p50 / p95 seconds; ratios of p50s; memory: the largest of the misses)")
    if "vit_b" in rows:
        row = rows["vit_b"]
        base = statistics.median(row["baseline"])
        targets = {"miss_curl": TARGET_MISS_CURL, "miss_client": TARGET_MISS_CLIENT,
                   "miss_warm": TARGET_MISS_CURL, "hit_curl": TARGET_HIT_CURL,
                   "hit_client": TARGET_HIT_CLIENT}  # fmt: skip
        for name, target in targets.items():
            ratio = statistics.median(row[name]) / base
            print(
                f"ViT-B/16 {name} <= {target}x baseline: {ratio:.3f}x, {verdict(ratio <= target)}"
            )
    if "gpt2" in rows:
        for name in ("miss_curl", "miss_warm"):
            miss = statistics.median(rows["gpt2"][name])
            print(f"GPT-2 small {name} < {TARGET_GPT2_MISS_SECONDS} s: {miss:.3f} s, "
                  f"{verdict(miss < TARGET_GPT2_MISS_SECONDS)}")  # fmt: skip
    worst = max(max(row["peak_over_blob"]) for row in rows.values())
    print(f"peak memory of a miss <= {TARGET_PEAK_OVER_BLOB}x the blob: {worst:.2f}x, "
          f"{verdict(worst <= TARGET_PEAK_OVER_BLOB)}")  # fmt: skip
    if load is None:
        return
    idle, hits, misses = load["idle"], load["hits"], load["misses"]
    print(f"\nburst: {len(hits)} hits, {len(misses)} misses, {len(load['failures'])} failures; "
          f"worker memory {load['before_mib']:.0f} -> peak {load['peak_mib']:.0f} MiB")  # fmt: skip
    for name, values in (("idle hits", idle), ("hits under load", hits), ("misses", misses)):
        if values:
            print(f"  {name}: p50 {statistics.median(values):.3f} s, p95 {p(values, 95):.3f} s, "
                  f"max {max(values):.3f} s")  # fmt: skip
    for failure in load["failures"][:5]:
        print(f"  failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--models", default="vit_s,vit_b,gpt2")
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--burst-requests", type=int, default=96)
    parser.add_argument("--no-burst", action="store_true")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    with tempfile.TemporaryDirectory() as folder:
        settings = {"TAL_MEMORY_CACHE_BYTES": str(MEMORY_CACHE_BYTES), "HF_HUB_OFFLINE": "1"}
        server = ServiceProcess(Path(folder), settings).start().wait_ready()
        try:
            rows = single_requests(server, args.reps, args.models.split(","))
            load = None if args.no_burst else burst(server, args.concurrency, args.burst_requests)
        finally:
            server.stop()
    report(rows, load)


if __name__ == "__main__":
    main()
