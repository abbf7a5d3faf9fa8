"""Threads from the cores a worker may use: affinity, cgroup quota, workers."""

from __future__ import annotations

import os
from pathlib import Path

from service.core.cpus import cpu_quota, torch_threads, usable_cpus


def test_cpu_quota_reads_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "cpu.max"
    missing = (tmp_path / "no-quota", tmp_path / "no-period")
    v2.write_text("250000 100000\n")
    assert cpu_quota(v2, missing) == 2.5
    v2.write_text("max 100000\n")
    assert cpu_quota(v2, missing) is None
    quota, period = tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    quota.write_text("150000\n")
    period.write_text("100000\n")
    assert cpu_quota(tmp_path / "absent", (quota, period)) == 1.5
    quota.write_text("-1\n")  # v1's "no limit"
    assert cpu_quota(tmp_path / "absent", (quota, period)) is None
    assert cpu_quota(tmp_path / "absent", missing) is None


def test_usable_cpus_takes_the_smaller_of_affinity_and_quota() -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus() <= affinity
    assert usable_cpus(quota=1.5) == 1  # a partial core would be throttled
    assert usable_cpus(quota=0.5) == 1  # never fewer than one
    assert usable_cpus(quota=10_000.0) == affinity


def test_torch_threads_share_the_cores_between_workers() -> None:
    assert torch_threads(None, workers=1, cpus=8) == 8
    assert torch_threads(None, workers=3, cpus=8) == 2
    assert torch_threads(None, workers=16, cpus=8) == 1
    assert torch_threads(3, workers=4, cpus=8) == 3  # TAL_TORCH_THREADS wins


def test_a_worker_takes_its_share_of_the_cores(tmp_path: Path) -> None:
    """A real worker told it is one of two (as ``tal serve --workers 2`` tells it) reports
    half the usable cores as its threads."""
    import httpx
    from harness import ServiceProcess

    settings = {"TAL_WORKERS": "2", "TAL_MODEL_STORE": str(tmp_path / "empty")}
    server = ServiceProcess(tmp_path, settings).start()
    try:
        server.wait_ready()
        loaded = httpx.get(f"{server.url}/v1/models", timeout=30).json()["loaded"]
    finally:
        server.stop()
    assert loaded["torch_threads"] == max(1, usable_cpus() // 2)
