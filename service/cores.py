"""How many CPU cores this process may really use: FACEDET_WORKERS=auto starts one worker per core.

os.cpu_count() is the host's count. A container (or a systemd unit with CPUQuota=) usually sees every core of the
host but may only use a share of their time, its cgroup's CPU quota; more workers than that share only queue for it
and get throttled. So: the CPU affinity mask (taskset, cpuset), capped by the tightest quota of this process's
cgroup and its ancestors, rounded down (a worker per whole core of quota, as Go's automaxprocs does), at least 1.
Both cgroup v2 (cpu.max: "max 100000" or "<quota> <period>") and v1 (cpu.cfs_quota_us, -1 for none, and
cpu.cfs_period_us) are read; a file that is missing or unreadable is taken as no limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in cores, on this process's cgroups and their ancestors; None when there is none."""
    quotas: list[float | None] = []
    for controllers, path in _memberships(proc_cgroup):
        if controllers == "":  # cgroup v2: "0::/path"
            quotas += [_v2_quota(d / "cpu.max") for d in _with_ancestors(cgroup_root, path)]
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path", mounted as cpu or cpu,cpuacct
            for mount in dict.fromkeys((cgroup_root / controllers, cgroup_root / "cpu")):
                quotas += [_v1_quota(d) for d in _with_ancestors(mount, path)]
    return min((q for q in quotas if q is not None), default=None)


def _memberships(proc_cgroup: Path) -> list[tuple[str, str]]:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = ["0::/"]  # no /proc here: look at the root of the hierarchy only
    fields = (line.split(":", 2) for line in lines if line.count(":") >= 2)  # "id:controllers:path"
    return [(controllers, path) for _, controllers, path in fields]


def _with_ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and every one above it, up to the mount: a parent's quota binds its children too.
    Inside a container without its own cgroup namespace the path is the host's and is missing under the mount, so
    the container's quota is found at the mount itself."""
    parts = [p for p in path.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else _cores(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        return _cores(int((folder / "cpu.cfs_quota_us").read_text()), int((folder / "cpu.cfs_period_us").read_text()))
    except (OSError, ValueError):
        return None


def _cores(quota_us: int, period_us: int) -> float | None:
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
