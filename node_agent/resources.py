"""The host's resources, read with psutil (the one module that imports it): the checks
before an update (memory, disk, open files, load) and the figures the heartbeat and the
metrics publisher report."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import psutil

from protocol.models import Reason

MiB = 1024 * 1024


@dataclass(frozen=True)
class Disk:
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class Memory:
    total: int
    available: int


def memory() -> Memory:
    figures = psutil.virtual_memory()
    return Memory(total=figures.total, available=figures.available)


def disk(path: str) -> Disk:
    """Usage of the file system holding ``path`` (the root's where it is no directory);
    an OSError passes through, so that the pre-flight check never measures the wrong
    file system."""
    figures = psutil.disk_usage(path if os.path.isdir(path) else "/")
    return Disk(total=figures.total, used=figures.used, free=figures.free)


def disk_for_report(path: str) -> Disk:
    """As :func:`disk`, for figures that are only reported (heartbeat, metrics): the
    root's when ``path`` cannot be measured."""
    try:
        return disk(path)
    except OSError:
        return disk("/")


def cpu_count() -> int:
    return psutil.cpu_count() or 0


def cpu_percent() -> float:
    """The host's CPU use since the previous call (the first call only starts counting)."""
    return float(psutil.cpu_percent(interval=None))


def load_1m() -> float:
    return float(psutil.getloadavg()[0])


def network_bytes() -> tuple[int, int]:
    """Bytes sent and received on all interfaces since boot."""
    counters = psutil.net_io_counters()
    return (counters.bytes_sent, counters.bytes_recv) if counters else (0, 0)


@dataclass(frozen=True)
class ResourceNeeds:
    memory: int
    """Bytes of available memory needed: the service's limit, or the agent's minimum."""
    disk: int
    """Bytes free needed where Docker keeps images: image size plus a margin."""
    open_files: int
    max_load_per_cpu: float


def check_resources(needs: ResourceNeeds, docker_root: str) -> list[Reason]:
    reasons: list[Reason] = []
    available = memory().available
    if available < needs.memory:
        reasons.append(
            Reason(
                code="insufficient_memory",
                text=f"{available // MiB} MiB available, {needs.memory // MiB} MiB needed",
            )
        )
    path = docker_root if os.path.isdir(docker_root) else "/"
    free = disk(path).free
    if free < needs.disk:
        # In the agent's container the engine's data-root is not mounted: its own root
        # lies on that disk, so it is measured there, and named as the engine knows it.
        where = docker_root if path == docker_root else f"{docker_root} (measured at /)"
        reasons.append(
            Reason(
                code="insufficient_disk",
                text=f"{free // MiB} MiB free on {where}, {needs.disk // MiB} MiB needed",
            )
        )
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit != resource.RLIM_INFINITY and soft_limit < needs.open_files:
        reasons.append(
            Reason(
                code="open_files_limit",
                text=f"open-files limit {soft_limit} is under the minimum {needs.open_files}",
            )
        )
    load_per_cpu = os.getloadavg()[0] / (cpu_count() or 1)
    if load_per_cpu > needs.max_load_per_cpu:
        reasons.append(
            Reason(
                code="load_too_high",
                text=f"load {load_per_cpu:.2f} per CPU is over {needs.max_load_per_cpu}",
            )
        )
    return reasons
