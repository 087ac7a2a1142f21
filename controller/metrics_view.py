"""The newest metrics sample of every host, as read from FLEET_METRICS.

``fleetctl top``, the Prometheus exporter and canary analysis all look at the fleet
through this: one sample per host, and whether it is fresh (a host silent for three
of its own intervals is stale, and its figures are not trusted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol.models import ContainerMetrics, MetricsSample, utc_now

STALE_AFTER_INTERVALS = 3.0


@dataclass
class FleetMetrics:
    latest: dict[str, MetricsSample] = field(default_factory=dict)

    def add(self, sample: MetricsSample) -> None:
        known = self.latest.get(sample.host)
        if known is None or sample.sent_at >= known.sent_at:
            self.latest[sample.host] = sample

    def fresh(self, host: str, now: datetime | None = None) -> bool:
        sample = self.latest.get(host)
        if sample is None:
            return False
        age = ((now or utc_now()) - sample.sent_at).total_seconds()
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
