"""Drift as the README defines it: removed, stopped or replaced by hand; nothing else."""

from __future__ import annotations

import pytest

from node_agent.update.drift import drift_of, heartbeat_status
from protocol.fingerprint import settings_fingerprint
from protocol.models import ContainerState, Drift, ServiceStatus
from protocol.spec import HealthCheck, ImageRetention, ServiceSpec, TcpProbe

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
PINNED = ServiceSpec(name="web", image=f"registry.local/web:1.0@{DIGEST}")
TAGGED = ServiceSpec(name="web", image="registry.local/web:1.0")


def running(image: str | None, digest: str | None, state: ContainerState) -> ServiceStatus:
    return ServiceStatus(name="web", image=image, digest=digest, state=state)


@pytest.mark.parametrize(
    ("applied", "status", "drift"),
    [
        (PINNED, running(PINNED.image, DIGEST, ContainerState.RUNNING), None),
        (PINNED, running(PINNED.image, DIGEST, ContainerState.RESTARTING), None),
        (PINNED, running(None, None, ContainerState.ABSENT), Drift.REMOVED),
        (PINNED, running(PINNED.image, DIGEST, ContainerState.EXITED), Drift.STOPPED),
        (PINNED, running(PINNED.image, DIGEST, ContainerState.PAUSED), None),
        (PINNED, running(PINNED.image, OTHER, ContainerState.RUNNING), Drift.REPLACED),
        (PINNED, running(None, None, ContainerState.RUNNING), Drift.REPLACED),
        (TAGGED, running(f"{TAGGED.image}@{DIGEST}", DIGEST, ContainerState.RUNNING), None),
        (TAGGED, running("registry.local/web:2.0", None, ContainerState.RUNNING), Drift.REPLACED),
        # A replaced container that was then stopped is replaced first: that is what to fix.
        (PINNED, running(None, None, ContainerState.EXITED), Drift.REPLACED),
    ],
    ids=[
        "running as applied",
        "restarted by its restart policy",
        "removed",
        "stopped",
        "paused (the engine calls it running)",
        "another digest",
        "a container the agent did not make",
        "a tag the host pinned itself",
        "another tag",
        "replaced and stopped",
    ],
)
def test_drift_is_what_differs_from_what_the_agent_applied(
    applied: ServiceSpec, status: ServiceStatus, drift: Drift | None
) -> None:
    assert drift_of(applied, status) is drift


def test_a_service_being_updated_is_never_reported_as_drifted() -> None:
    gone = running(None, None, ContainerState.ABSENT)
    assert heartbeat_status(gone, PINNED, busy=False).drift is Drift.REMOVED
    assert heartbeat_status(gone, PINNED, busy=True).drift is None


def test_the_heartbeat_carries_the_applied_fingerprint_and_digest() -> None:
    status = heartbeat_status(running(PINNED.image, DIGEST, ContainerState.RUNNING), PINNED, False)
    assert status.fingerprint == settings_fingerprint(PINNED)
    assert status.applied_digest == DIGEST
    unmanaged = running(None, None, ContainerState.ABSENT)
    assert heartbeat_status(unmanaged, None, busy=False) == unmanaged


def test_the_fingerprint_ignores_the_digest_health_and_retention_but_not_the_settings() -> None:
    env = TAGGED.container.model_copy(update={"env": {"A": "1"}})
    assert settings_fingerprint(PINNED) == settings_fingerprint(TAGGED)
    probed = TAGGED.model_copy(
        update={"health": HealthCheck(probe=TcpProbe(port=8080), min_healthy_time=1.0)}
    )
    assert settings_fingerprint(probed) == settings_fingerprint(TAGGED)
    keeping = TAGGED.model_copy(update={"images": ImageRetention(keep=7)})
    assert settings_fingerprint(keeping) == settings_fingerprint(TAGGED)
    assert settings_fingerprint(TAGGED) != settings_fingerprint(
        TAGGED.model_copy(update={"container": env})
    )
    assert settings_fingerprint(TAGGED) != settings_fingerprint(
        TAGGED.model_copy(update={"image": "registry.local/web:1.1"})
    )
