"""Service latency against in-process prediction (not a timed test).

    python bench/service.py [--reps 5] [--models vit_s,vit_b,gpt2]

Starts a private ``redis-server`` and two workers on this machine:

* ``memory``: in-process LRU only (misses and memory-tier hits),
* ``redis``: no memory tier, Redis for every blob (Redis-tier hits),

and measures, per model, p50/p95 client-side latency (full body received by curl, or httpx
without curl) of a miss (a fresh
class count each time), a memory hit and a Redis hit, next to ``tal.predict.predict_bytes`` in this
process (the same fresh hypernetwork). Also times raw redis-py SET/GET by value size, which is
what decides the Redis size threshold (docs/service.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as `tal` and the service do
# This file is named service.py: keep its folder off the path so ``service`` is the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the process harness

import httpx  # noqa: E402
import redis  # noqa: E402
import torch  # noqa: E402
from harness import RedisProcess, ServiceProcess  # noqa: E402

from tal.arch.parse import parse_arch  # noqa: E402
from tal.arch.specs import GPT2Spec  # noqa: E402
from tal.predict import predict_bytes  # noqa: E402


def variant_of(arch: object, variant: int) -> dict:
    """``arch`` as a spec dict made distinct by ``variant`` (a cache key of its own): ViTs by
    their class count, GPT-2 by its number of positions."""
    spec = parse_arch(arch)  # type: ignore[arg-type]
    field = "num_classes" if spec.family == "vit" else "n_positions"
    return {**spec.model_dump(mode="json"), field: getattr(spec, field) + variant}


MODELS = {
    "vit_s": ("ViT-S/16", "vit_small_patch16_224", "timm"),
    "vit_b": ("ViT-B/16", "vit_base_patch16_224", "timm"),
    "gpt2": ("GPT-2 small", GPT2Spec().model_dump(mode="json"), "hf"),
}
RAW_SIZES_MIB = (1, 4, 16, 64, 256)
MIB = 1 << 20
GIB = 1 << 30
PERCENT_95 = 0.95
REDIS_MAX_BULK = "1gb"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(call, *args, **kwargs) -> float:
    """Seconds one ``call(*args, **kwargs)`` takes."""
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


def raw_redis(port: int, reps: int) -> list[tuple[int, float, float]]:
    """(MiB, median SET s, median GET s) with redis-py on localhost."""
    client = redis.Redis(port=port)
    rows = []
    for size in RAW_SIZES_MIB:
        value = os.urandom(size * MIB)
        sets = [timed(client.set, "bench", value) for _ in range(reps)]
        gets = [timed(client.get, "bench") for _ in range(reps)]
        rows.append((size, statistics.median(sets), statistics.median(gets)))
    client.unlink("bench")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads here and in each worker (use 1 when another job shares the cores)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="tal-bench-"))
    store = folder / "store"  # empty: the embedded fresh hypernetwork, as predict_bytes uses
    redis_server = RedisProcess(folder / "redis").start()
    redis.Redis(port=redis_server.port).config_set("proto-max-bulk-len", REDIS_MAX_BULK)
    common = {
        "TAL_MODEL_STORE": str(store),
        "TAL_MAX_BODY_BYTES": str(MIB),
        "TAL_TORCH_THREADS": str(args.threads),
    }
    memory = ServiceProcess(folder, {**common, "TAL_MEMORY_CACHE_BYTES": str(4 * GIB)})
    shared = ServiceProcess(
        folder,
        {
            **common,
            "TAL_MEMORY_CACHE_BYTES": "0",
            "TAL_REDIS_URL": redis_server.url,
            "TAL_REDIS_MAX_VALUE_BYTES": str(GIB),
            "TAL_REDIS_SOCKET_TIMEOUT": "30",
        },
    )
    rows = []
    try:
        for server in (memory, shared):
            server.start()
        for server in (memory, shared):
            server.wait_ready()
        client = httpx.Client(timeout=600)
        curl = shutil.which("curl")

        def fetch(url: str, arch: object, format: str, variant: int) -> str:
            """The whole body is received; returns X-Cache-Tier. curl when installed: httpx
            itself needs about 1 s to read 346 MB on these machines (docs/service.md)."""
            body = {"arch": variant_of(arch, variant), "format": format}
            if curl is None:
                response = client.post(f"{url}/v1/initialize", json=body)
                response.raise_for_status()
                return response.headers["x-cache-tier"]
            command = [
                curl, "-sf", "-o", os.devnull, "-D", "-", "-X", "POST",
                f"{url}/v1/initialize", "-H", "Content-Type: application/json",
                "-d", json.dumps(body),
            ]  # fmt: skip
            headers = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            for line in headers.splitlines():
                if line.lower().startswith("x-cache-tier:"):
                    return line.split(":", 1)[1].strip()
            raise RuntimeError(headers)

        for key in args.models.split(","):
            label, arch, format = MODELS[key]
            predict_bytes(arch, format=format)  # warm (timm import, graph)
            base = [
                timed(predict_bytes, variant_of(arch, s), format=format) for s in range(args.reps)
            ]
            miss = [timed(fetch, memory.url, arch, format, 1000 + s) for s in range(args.reps)]
            hit = [timed(fetch, memory.url, arch, format, 1000) for _ in range(args.reps)]
            fetch(shared.url, arch, format, 1000)  # computed once, stored in Redis
            redis_hit = [timed(fetch, shared.url, arch, format, 1000) for _ in range(args.reps)]
            assert fetch(shared.url, arch, format, 1000) == "redis"
            rows.append((label, base, miss, hit, redis_hit))
            print(f"measured {label}", flush=True)
        raw = raw_redis(redis_server.port, args.reps)
    finally:
        memory.stop()
        shared.stop()
        redis_server.stop()

    print(
        f"\n{args.reps} reps, {args.threads} torch threads; p50 / p95 in ms; "
        "ratio = p50 / in-process predict_bytes p50\n"
    )
    print("| model | in-process | miss | memory hit | Redis hit | miss ratio | memory-hit ratio "
          "| Redis-hit ratio |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, base, miss, hit, redis_hit in rows:
        b50 = statistics.median(base)
        cells = [
            f"{statistics.median(v) * 1e3:.0f} / {percentile(v, PERCENT_95) * 1e3:.0f}"
            for v in (base, miss, hit, redis_hit)
        ]
        ratios = [f"{statistics.median(v) / b50:.2f}" for v in (miss, hit, redis_hit)]
        print(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    print("\nraw redis-py on localhost (median):\n\n| value MiB | SET ms | GET ms | GET MB/s |")
    print("| --- | --- | --- | --- |")
    for size, set_s, get_s in raw:
        print(
            f"| {size} | {set_s * 1e3:.1f} | {get_s * 1e3:.1f} | {size * MIB / get_s / 1e6:.0f} |"
        )


if __name__ == "__main__":
    main()
