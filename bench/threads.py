"""Prediction time on shared cores: OpenMP threads spinning or sleeping (not a timed test).

    python bench/threads.py [--arch vit_base_patch16_224] [--reps 6] [--no-burner]

A worker shares its cores with its event loop, the sends of hits and other workers. This runs
``tal.predict.predict_blob`` ``--reps`` times in a fresh process for each setting (OpenMP wait
policy ``ACTIVE``, the default, or ``PASSIVE``; one thread or every usable core) while a
burner process keeps one core busy (``--no-burner``: a quiet machine), and prints each
setting's times with their median and the ratio to the default's median.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

SETTINGS = (("ACTIVE", None), ("PASSIVE", None), ("ACTIVE", 1), ("PASSIVE", 1))
MEASURE = """
import json, sys, time, torch
from tal.predict import default_learngene, predict_blob
threads = json.loads(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
learngene = default_learngene()
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    result = predict_blob(sys.argv[1], learngene=learngene)
    times.append(time.perf_counter() - start)
    del result
print(json.dumps({"threads": torch.get_num_threads(), "seconds": times}))
"""


def burn(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """Keeps one core busy until ``stop`` is set."""
    while not stop.is_set():
        sum(range(10_000))


def measure(arch: str, reps: int, policy: str, threads: int | None) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "THP_MEM_ALLOC_ENABLE": "1"}
    command = [sys.executable, "-c", MEASURE, arch, str(reps), json.dumps(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--no-burner", action="store_true")
    args = parser.parse_args()
    stop = multiprocessing.Event()
    burner = None if args.no_burner else multiprocessing.Process(target=burn, args=(stop,))
    if burner is not None:
        burner.start()
        time.sleep(0.5)
    try:
        rows = [(p, t, measure(args.arch, args.reps, p, t)) for p, t in SETTINGS]
    finally:
        stop.set()
        if burner is not None:
            burner.join()
    default = statistics.median(rows[0][2]["seconds"][1:])
    print(f"{args.arch}, one core {'quiet' if args.no_burner else 'kept busy by a burner'}")
    print("| OMP_WAIT_POLICY | threads | seconds (first: cold) | median (warm) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for policy, _, result in rows:
        warm = statistics.median(result["seconds"][1:])
        cells = ", ".join(f"{s:.2f}" for s in result["seconds"])
        print(f"| {policy} | {result['threads']} | {cells} | {warm:.3f} | {warm / default:.2f} |")


if __name__ == "__main__":
    main()
