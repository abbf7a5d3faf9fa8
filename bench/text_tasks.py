"""Figures of the built-in text tasks: classes, split sizes, tokens per example, and the time
to build each task from its Debian files against the time to load it from the disk cache.

For each task (``list_tasks("text")``) it builds every split into a fresh temporary cache
directory (the tokenizer is built once beforehand and not counted), then drops the in-process
copies and loads every split again from that cache (median of ``--reps``). Token figures are
over all splits; "truncated" is the share of examples cut at ``max_tokens``.

    python bench/text_tasks.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tal.tasks import SPLITS, clear_memory_cache, list_tasks, load_text_task
from tal.tasks.text.tokenizer import gpt2_tokenizer

MS = 1e3
PERCENT = 100.0


def _load_all(name: str, root: Path) -> list[torch.Tensor]:
    return [load_text_task(name, split, root=root).lengths for split in SPLITS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="cache loads per task (median)")
    args = parser.parse_args()
    start = time.perf_counter()
    gpt2_tokenizer()
    print(f"GPT-2 tokenizer built in {(time.perf_counter() - start) * MS:.0f} ms\n")
    header = (
        "| task | held out | classes | train / val / test | mean tokens | median tokens | "
        "truncated | build s | cache load ms | build / load |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for info in list_tasks("text"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            clear_memory_cache()
            start = time.perf_counter()
            lengths = torch.cat(_load_all(info.name, root))
            build = time.perf_counter() - start
            loads = []
            for _ in range(args.reps):
                clear_memory_cache()
                start = time.perf_counter()
                _load_all(info.name, root)
                loads.append(time.perf_counter() - start)
        load = statistics.median(loads)
        sizes = info.split_sizes
        truncated = float((lengths == info.max_tokens).float().mean()) * PERCENT
        print(
            f"| {info.name} | {'yes' if info.held_out_of_stage2 else 'no'} | "
            f"{info.num_classes} | {sizes.train} / {sizes.val} / {sizes.test} | "
            f"{float(lengths.float().mean()):.1f} | {float(lengths.float().median()):.0f} | "
            f"{truncated:.1f}% | {build:.2f} | {load * MS:.0f} | {build / load:.0f}x |"
        )


if __name__ == "__main__":
    main()
