"""Host and container metrics, sampled every interval onto ``fleet.metrics.<host>``.

Host figures come from node_agent.resources (psutil); each managed container's from
the engine's stats API
(one-shot, so a sample costs one quick call rather than the API's one-second wait) and
its inspect (restart count, health, image). CPU % is computed, as ``docker stats`` does,
from the change since this agent's previous sample of the same container.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent import resources
from node_agent.runtime import SERVICE_LABEL, DockerRuntime
from node_agent.telemetry.outbox import Outgoing
from protocol import subjects
from protocol.codec import encode
from protocol.errors import ProtocolError, RuntimeFault
from protocol.models import ContainerMetrics, Health, MetricsSample

log = logging.getLogger("fleet-agent.metrics")
FILE_NR = Path("/proc/sys/fs/file-nr")


@dataclass(frozen=True)
class CpuReading:
    container: int
    system: int
    cpus: int


def cpu_percent(before: CpuReading | None, now: CpuReading) -> float:
    """Like ``docker stats``: 100 is one core busy for the whole span."""
    if before is None:
        return 0.0
    container = now.container - before.container
    system = now.system - before.system
    if container <= 0 or system <= 0:
        return 0.0
    return round(container / system * now.cpus * 100.0, 2)


def cpu_reading(stats: dict[str, Any]) -> CpuReading | None:
    cpu = stats.get("cpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    if usage is None or system is None:
        return None
    cpus = int(
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [1])
    )
    return CpuReading(int(usage), int(system), max(cpus, 1))


def memory_used(stats: dict[str, Any]) -> tuple[int, int | None]:
    """Usage without the page cache, as ``docker stats`` shows it; and the limit."""
    memory = stats.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    limit = memory.get("limit")
    return max(0, usage - int(cache or 0)), (int(limit) if limit else None)


class MetricsPublisher:
    def __init__(
        self,
        runtime: DockerRuntime,
        host: str,
        agent_id: str,
        send: Callable[[Outgoing], None],
        interval: float,
    ) -> None:
        self._runtime = runtime
        self._host = host
        self._agent_id = agent_id
        self._send = send
        self.interval = interval
        self._cpu: dict[str, CpuReading] = {}
        self._root = "/"

    async def run(self, stop: asyncio.Event) -> None:
        with suppress(RuntimeFault):
            self._root = await self._runtime.root_dir()
        resources.cpu_percent()  # the first call only starts the measurement
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                return
            try:
                sample = await self.sample()
                payload = encode(sample)
            except (RuntimeFault, ProtocolError) as exc:
                log.warning("metrics not sampled: %s", exc)
                continue
            self._send(Outgoing(subjects.metrics_subject(self._host), payload, sample.id))

    async def sample(self) -> MetricsSample:
        containers = await self._containers()
        host = await asyncio.to_thread(self._host_figures)
        return MetricsSample(
            sender=self._host,
            host=self._host,
            interval=self.interval,
            containers=containers,
            **host,
        )

    def _host_figures(self) -> dict[str, Any]:
        memory = resources.memory()
        disk = resources.disk_for_report(self._root)
        sent, received = resources.network_bytes()
        return {
            "cpu_percent": resources.cpu_percent(),
            "memory_used": memory.total - memory.available,
            "memory_total": memory.total,
            "disk_used": disk.used,
            "disk_total": disk.total,
            "load_1m": resources.load_1m(),
            "net_bytes_sent": sent,
            "net_bytes_recv": received,
            "open_files": _open_files(),
        }

    async def _containers(self) -> tuple[ContainerMetrics, ...]:
        found = []
        listed = await self._runtime.list_managed(self._agent_id)
        running = [c for c in listed if c.get("State") == "running"]
        for item in running:
            container_id = str(item["Id"])
            service = (item.get("Labels") or {}).get(SERVICE_LABEL)
            if not service:
                continue
            try:
                stats = await self._runtime.stats(container_id)
                inspect = await self._runtime.inspect_container(container_id)
            except RuntimeFault as exc:  # it may have gone between the listing and now
                log.debug("no stats for %s: %s", container_id[:12], exc)
                continue
            if inspect is None:
                continue
            reading = cpu_reading(stats)
            percent = cpu_percent(self._cpu.get(container_id), reading) if reading else 0.0
            if reading is not None:
                self._cpu[container_id] = reading
            used, limit = memory_used(stats)
            health = ((inspect.get("State") or {}).get("Health") or {}).get("Status")
            found.append(
                ContainerMetrics(
                    service=service,
                    container_id=container_id,
                    image=(inspect.get("Config") or {}).get("Image"),
                    cpu_percent=percent,
                    memory_bytes=used,
                    memory_limit_bytes=limit,
                    restart_count=int(inspect.get("RestartCount") or 0),
                    health=_health(health),
                )
            )
        for gone in set(self._cpu) - {str(c["Id"]) for c in running}:
            del self._cpu[gone]
        return tuple(found)


def _health(status: str | None) -> Health:
    try:
        return Health(status) if status else Health.UNKNOWN
    except ValueError:
        return Health.UNKNOWN


def _open_files() -> int:
    try:
        return int(FILE_NR.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
