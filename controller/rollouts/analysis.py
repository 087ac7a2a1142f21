"""Canary analysis: a rollout's checks, measured on the newest metrics of its hosts.

Pure: the record and a ``FleetMetrics`` view in, the measured values and the first
failure out. Only containers running the rollout's target image on hosts this rollout
has updated count, so the old version's figures never blame the new one. A check with
nothing to measure yet (no fresh sample of an updated host) neither passes nor fails;
while no check has a value, :func:`analyse` says the analysis has no data, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import median

from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.model import UPDATED, AnalysisCheck, AnalysisMetric, RolloutRecord
from controller.rollouts.workload import specs_of
from protocol.models import ContainerMetrics, Health

NO_DATA = "analysis has no data"
NAMED_HOSTS = 5
"""Hosts named in a no-data reason; the rest are counted."""


@dataclass(frozen=True)
class Measurement:
    check: AnalysisCheck
    value: float

    @property
    def passed(self) -> bool:
        return self.value <= self.check.max

    def failure(self) -> str:
        return (
            f"analysis check {self.check.name} failed: "
            f"{self.check.metric.value} = {self.value:g}, limit {self.check.max:g}"
        )


def runs_target(record: RolloutRecord, host: str, image: str | None) -> bool:
    """Whether a container on ``host`` runs this rollout's image.

    The agent runs what it pulled by digest (``repo@sha256:...``), so the digest the host
    reported at pre-flight is what tells the new version from the old.
    """
    if image is None:
        return False
    digest = record.hosts[host].digest if host in record.hosts else None
    if digest is not None and "@" in image:
        return image.rsplit("@", 1)[1] == digest
    # (An app has no analysis checks: nothing of it is measured by this.)
    return image in {spec.image for spec in specs_of(record.target)}


def new_containers(
    record: RolloutRecord, view: FleetMetrics, now: datetime
) -> list[tuple[str, ContainerMetrics]]:
    updated = [h for h, entry in record.hosts.items() if entry.phase in UPDATED]
    fresh = [h for h in updated if view.fresh(h, now)]
    return [
        (host, container)
        for host, container in view.containers(record.service, fresh)
        if runs_target(record, host, container.image)
    ]


def baseline_memory(record: RolloutRecord, view: FleetMetrics, now: datetime) -> float | None:
    """The old version's median memory across the rollout's hosts, if any reports it."""
    hosts = [h for h in record.hosts if view.fresh(h, now)]
    old = [
        c.memory_bytes
        for host, c in view.containers(record.service, hosts)
        if not runs_target(record, host, c.image)
    ]
    return float(median(old)) if old else None


def measure(record: RolloutRecord, view: FleetMetrics, now: datetime) -> list[Measurement]:
    containers = [c for _, c in new_containers(record, view, now)]
    if not containers:
        return []
    found = []
    for check in record.spec.analysis:
        value = _value(check.metric, containers, record.baseline_memory)
        if value is not None:
            found.append(Measurement(check, value))
    return found


@dataclass(frozen=True)
class Verdict:
    """What the checks say now: measured values, or why there are none."""

    measurements: tuple[Measurement, ...]
    no_data: str | None = None
    """Set while no check has a value: ``analysis has no data: <why>``."""

    @property
    def failure(self) -> str | None:
        """The first failed check, with its value; None if every measured one holds."""
        failed = [m for m in self.measurements if not m.passed]
        return failed[0].failure() if failed else None


def analyse(record: RolloutRecord, view: FleetMetrics, now: datetime) -> Verdict:
    measurements = tuple(measure(record, view, now))
    if measurements or not record.spec.analysis:
        return Verdict(measurements)
    return Verdict((), f"{NO_DATA}: {_why_no_data(record, view, now)}")


def first_failure(record: RolloutRecord, view: FleetMetrics, now: datetime) -> str | None:
    return analyse(record, view, now).failure


def _why_no_data(record: RolloutRecord, view: FleetMetrics, now: datetime) -> str:
    if new_containers(record, view, now):
        # Containers to measure, but no check has a value: memory_ratio alone, unbased.
        return "memory_ratio needs the old version's memory, which no host reported"
    if view.feed_problem is not None:
        return f"the metrics feed is down ({view.feed_problem})"
    updated = sorted(h for h, entry in record.hosts.items() if entry.phase in UPDATED)
    if not updated:
        return "no host runs the new version yet"
    named = ", ".join(updated[:NAMED_HOSTS])
    more = f" and {len(updated) - NAMED_HOSTS} more" if len(updated) > NAMED_HOSTS else ""
    return f"no fresh metrics sample of the new version from {named}{more}"


def _value(
    metric: AnalysisMetric, containers: list[ContainerMetrics], baseline: float | None
) -> float | None:
    match metric:
        case AnalysisMetric.RESTARTS:
            return float(sum(c.restart_count for c in containers))
        case AnalysisMetric.UNHEALTHY:
            return float(sum(1 for c in containers if c.health is Health.UNHEALTHY))
        case AnalysisMetric.MEMORY_BYTES:
            return float(max(c.memory_bytes for c in containers))
        case AnalysisMetric.CPU_PERCENT:
            return max(c.cpu_percent for c in containers)
        case AnalysisMetric.MEMORY_RATIO:
            if not baseline:
                return None
            return round(median(c.memory_bytes for c in containers) / baseline, 3)
    return None  # pragma: no cover
