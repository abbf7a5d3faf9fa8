"""The machine and numeric stack that produced a result, recorded beside it (``results.json``,
checkpoint manifests). Two short training runs on one machine give bit-identical weights; the
same 30 steps of stage 1 under ``ATEN_CPU_CAPABILITY=avx2`` differ from the AVX-512 run in 180 of
266 tensors (docs/lab/ablations.md), so runs on different machines are comparable only
within run-to-run spread."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
CPU_MODEL_KEY = "model name"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` reports."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == CPU_MODEL_KEY:
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment() -> dict[str, str | int | None]:
    """Python and torch versions, CPU model, the CPU kernel path torch dispatches to (``AVX512``,
    ``AVX2``, ...; ``ATEN_CPU_CAPABILITY`` overrides it), torch's intra-op threads, and the CUDA
    device's name (None without one)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_model": cpu_model(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def code_version() -> str:
    """The git commit of the code, when run from a checkout (``-dirty`` if it has changes)."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
