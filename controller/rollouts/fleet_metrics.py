"""The newest metrics sample of each host: what canary analysis, `fleetctl top` and the
exporter read. Pure: samples in, views out; the time is the caller's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol.models import ContainerMetrics, MetricsSample

STALE_AFTER_INTERVALS = 3.0
"""A sample older than this many of its host's intervals is not fresh."""


@dataclass
class FleetMetrics:
    latest: dict[str, MetricsSample] = field(default_factory=dict)
    feed_problem: str | None = None
    """Why the metrics feed is not being read (set by a MetricsReader); None while it is."""

    def add(self, sample: MetricsSample) -> None:
        known = self.latest.get(sample.host)
        if known is None or sample.sent_at >= known.sent_at:
            self.latest[sample.host] = sample

    def fresh(self, host: str, now: datetime) -> bool:
        sample = self.latest.get(host)
        if sample is None:
            return False
        age = (now - sample.sent_at).total_seconds()
        return age <= sample.interval * STALE_AFTER_INTERVALS

    def containers(
        self, service: str, hosts: list[str] | None = None
    ) -> list[tuple[str, ContainerMetrics]]:
        """(host, container) for each container of ``service``, on ``hosts`` or everywhere."""
        wanted = (
            self.latest if hosts is None else {h: self.latest[h] for h in hosts if h in self.latest}
        )
        return [
            (host, container)
            for host, sample in sorted(wanted.items())
            for container in sample.containers
            if container.service == service
        ]
