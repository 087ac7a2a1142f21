"""Heartbeats (HostFacts) as an agent that applied a spec would send them, for pure tests."""

from __future__ import annotations

from datetime import datetime

from protocol.fingerprint import image_digest, settings_fingerprint
from protocol.models import ContainerState, Drift, HostFacts, ServiceStatus
from protocol.spec import Colour, ServiceSpec


def heartbeat(
    host: str,
    labels: dict[str, str],
    applied: ServiceSpec | None,
    sent_at: datetime,
    drift: Drift | None = None,
    colour: Colour | None = None,
) -> HostFacts:
    """A host running ``applied`` (None: no service) as its agent applied it; ``colour``:
    the label of its container (blue-green)."""
    services: tuple[ServiceStatus, ...] = ()
    if applied is not None:
        services = (
            ServiceStatus(
                name=applied.name,
                image=applied.image,
                state=ContainerState.RUNNING,
                fingerprint=settings_fingerprint(applied),
                applied_digest=image_digest(applied.image),
                drift=drift,
                colour=colour,
            ),
        )
    return facts_with(host, services, sent_at, labels)


def facts_with(
    host: str,
    services: tuple[ServiceStatus, ...],
    sent_at: datetime,
    labels: dict[str, str] | None = None,
    engine_down: bool = False,
) -> HostFacts:
    """A heartbeat reporting ``services`` as they are given."""
    return HostFacts(
        sender=host,
        host=host,
        labels=labels or {},
        agent_version="test",
        cpus=1,
        memory_total=1,
        memory_available=1,
        disk_total=1,
        disk_free=1,
        services=services,
        sent_at=sent_at,
        engine_down=engine_down,
    )
