"""How many cores a worker may use, and so how many threads torch gets by default.

``torch.get_num_threads()`` defaults to the host's cores, whatever the process may actually
use: in a container limited to 2 CPUs on a 64-core host, 64 OpenMP threads spin against each
other (on our 2-core machines, a small ViT took 0.5-1.5 s with one thread too many on busy
cores, 17 ms without). A worker counts the cores it may run on (its affinity mask) and its
CPU quota (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``, what Kubernetes CPU limits set),
and shares them with the other workers of its ``tal serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
UNLIMITED = "max"


def cpu_quota(
    v2: Path = CGROUP_V2_MAX, v1: tuple[Path, Path] = (CGROUP_V1_QUOTA, CGROUP_V1_PERIOD)
) -> float | None:
    """The CPU quota of this process's cgroup in cores (``2.5`` = 250 ms per 100 ms), or None
    when it has none or the files cannot be read."""
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == UNLIMITED else int(quota) / int(period)
        quota_file, period_file = v1
        if quota_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota < 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(quota: float | None = None) -> int:
    """Cores this process may use: its affinity mask, capped by the cgroup quota (rounded down,
    at least 1: a thread per partial core would be throttled)."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not on Linux
        count = os.cpu_count() or 1
    quota = cpu_quota() if quota is None else quota
    if quota is not None:
        count = min(count, int(quota))
    return max(1, count)


def torch_threads(configured: int | None, workers: int, cpus: int | None = None) -> int:
    """The intra-op threads of one worker: ``configured`` when set, else its share of the
    usable cores (at least 1)."""
    if configured is not None:
        return configured
    return max(1, (cpus or usable_cpus()) // max(1, workers))
