"""Prediction speed and memory against a random init measured in the same run.

For ViT-Ti/S/B (224 px, patch 16) and GPT-2 small, prints the graph, encode, decode and total
milliseconds (median of ``--repeats``; "total" reuses an idle output buffer as a serving
process does, "cold" faults in fresh memory every time, see ``tal.hypernet.arena``), the peak
extra resident memory during one prediction (measured in a fresh subprocess) relative to the
output size, and the time of the baseline
``timm.create_model(name, pretrained=False)`` (``GPT2LMHeadModel(GPT2Config())`` for GPT-2).

"encode" and "decode" are the hypernetwork at the requested shape; "total" is what a client
gets (``Learngene.predict``), which for a ViT outside the checkpoint's trained range ("lifted":
yes) predicts the proxy's factors and lifts them into the target's prediction, whose lifted
blocks are not composed first (``tal.transfer.lift``); "lift ms" is the lift step alone (the
proxy's own prediction is a small one).

    python bench/predict.py [--repeats 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as `tal` and the service run

import torch

from tal.arch.formats import export_plan
from tal.arch.graph import build_graph
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec
from tal.checkpoints.learngene import load_default
from tal.hypernet.arena import OUTPUT_POOL
from tal.transfer.lift import lift_into, lifted_matrices

MODELS = {
    "vit_tiny_patch16_224": "timm",
    "vit_small_patch16_224": "timm",
    "vit_base_patch16_224": "timm",
    "gpt2": "hf",
}
MIB = 2**20


def arch_of(name: str):
    return GPT2Spec() if name == "gpt2" else parse_arch(name)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return statistics.median(times)


def baseline(name: str):
    if name == "gpt2":
        import transformers

        config = transformers.GPT2Config()
        return lambda: transformers.GPT2LMHeadModel(config)
    import timm

    return lambda: timm.create_model(name, pretrained=False)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Resets VmHWM (Linux >= 4.0); a child's ru_maxrss can carry the parent's peak."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def peak_extra_memory(name: str) -> None:
    """Runs in a subprocess: prints peak RSS growth during one prediction and the output size."""
    learngene = load_default(device="cpu")
    spec, format = arch_of(name), MODELS[name]
    learngene.predict({"family": "vit", "depth": 1, "embed_dim": 8, "num_heads": 1})  # warm-up
    build_graph(spec)
    reset_peak_rss()
    before = rss_bytes()
    state = learngene.predict(spec, format=format)
    peak = peak_rss_bytes()
    output = sum(t.numel() * t.element_size() for t in {id(t): t for t in state.values()}.values())
    print(json.dumps({"extra": max(peak - before, 0), "output": output}))


def measure(name: str, repeats: int) -> dict[str, float]:
    learngene = load_default(device="cpu")
    hypernet = learngene.hypernet
    spec, format = arch_of(name), MODELS[name]
    plan = export_plan(spec, format)
    with torch.inference_mode():
        learngene.predict(spec, format=format)  # warm caches (basis features, graph tensors)
        graph_s = median_seconds(lambda: build_graph.__wrapped__(spec), repeats)
        encode_s = median_seconds(lambda: hypernet.encode(spec), repeats)
        nodes = hypernet.encode(spec)
        decode_s = median_seconds(lambda: hypernet.decoder(nodes, plan), repeats)
        proxy = learngene.proxy(spec)
        lift_s = 0.0
        if proxy is not None:
            proxy_state = hypernet.factored(proxy, None, "timm", every_matrix=True)
            skipped = lifted_matrices(proxy, spec)
            outputs = hypernet(spec, None, format, torch.float32, None, skipped)
            lift_s = median_seconds(
                lambda: lift_into(proxy, proxy_state, spec, outputs, plan), repeats
            )
        total_s = median_seconds(lambda: learngene.predict(spec, format=format), repeats)
        with OUTPUT_POOL.budget(0):
            cold_s = median_seconds(lambda: learngene.predict(spec, format=format), repeats)
    baseline_s = median_seconds(baseline(name), repeats)
    memory = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--memory-of", name],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return {
        "graph_ms": graph_s * 1e3,
        "encode_ms": encode_s * 1e3,
        "decode_ms": decode_s * 1e3,
        "lifted": proxy is not None,
        "lift_ms": lift_s * 1e3,
        "total_ms": total_s * 1e3,
        "cold_total_ms": cold_s * 1e3,
        "baseline_ms": baseline_s * 1e3,
        "ratio_to_baseline": total_s / baseline_s,
        "output_mib": memory["output"] / MIB,
        "peak_extra_mib": memory["extra"] / MIB,
        "peak_extra_over_output": memory["extra"] / memory["output"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        peak_extra_memory(args.memory_of)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}, "
        f"checkpoint {load_default(device='cpu').model_version}"
    )
    header = (
        f"{'model':24} {'lifted':>6} {'graph ms':>9} {'encode ms':>10} {'decode ms':>10} "
        f"{'lift ms':>8} {'total ms':>9} "
        f"{'cold ms':>8} "
        f"{'baseline ms':>12} {'ratio':>6} {'out MiB':>8} {'extra MiB':>10} {'extra/out':>9}"
    )
    print(header)
    results = {}
    for name in args.models:
        r = results[name] = measure(name, args.repeats)
        print(
            f"{name:24} {'yes' if r['lifted'] else 'no':>6} {r['graph_ms']:9.2f} "
            f"{r['encode_ms']:10.1f} {r['decode_ms']:10.1f} {r['lift_ms']:8.1f} "
            f"{r['total_ms']:9.1f} {r['cold_total_ms']:8.1f} {r['baseline_ms']:12.1f} "
            f"{r['ratio_to_baseline']:6.2f} "
            f"{r['output_mib']:8.1f} {r['peak_extra_mib']:10.1f} "
            f"{r['peak_extra_over_output']:9.2f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
