"""How many inspection workers `server.workers: 0` means."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.workers import available_cpus


def _cgroup(tmp_path: Path, cpu_max: str | None) -> Path:
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def test_a_container_cpu_quota_caps_the_worker_count(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(_cgroup(tmp_path, "100000 100000")) == 1
    assert available_cpus(_cgroup(tmp_path, "150000 100000")) == min(cpus, 2)   # 1.5 CPUs: round up
    assert available_cpus(_cgroup(tmp_path, "1000 100000")) == 1                 # never fewer than one


def test_without_a_quota_every_cpu_the_process_may_use_counts(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(_cgroup(tmp_path, "max 100000")) == cpus
    assert available_cpus(_cgroup(tmp_path, None)) == cpus
    assert available_cpus(_cgroup(tmp_path, "garbage")) == cpus
