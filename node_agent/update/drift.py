"""Whether a managed container is still what its agent applied: drift, for convergence.

The agent knows exactly what it applied (its service store), so it tells: the container
removed, stopped, or replaced (another image, or one it did not make) by someone else.
A container its own restart policy is restarting is not drift, and neither is one being
updated: the heartbeat does not look while an operation holds the service. For a
blue-green service the serving copy (the one with the service's name) is judged; the
other colour kept for a switch back is not.
"""

from __future__ import annotations

from protocol.fingerprint import image_digest, settings_fingerprint
from protocol.models import ContainerState, Drift, ServiceStatus
from protocol.spec import ServiceSpec

NOT_RUNNING = frozenset({ContainerState.EXITED, ContainerState.DEAD, ContainerState.CREATED})
"""Paused is not here: the engine still calls it running, so an Apply to "repair" it
would find it running as applied and change nothing, again and again."""


def drift_of(applied: ServiceSpec, status: ServiceStatus) -> Drift | None:
    if status.state is ContainerState.ABSENT:
        return Drift.REMOVED
    if status.image is None:  # not labelled by an agent: made by hand
        return Drift.REPLACED
    wanted_digest = image_digest(applied.image)
    if wanted_digest is not None and status.digest != wanted_digest:
        return Drift.REPLACED
    if wanted_digest is None and status.image.split("@", 1)[0] != applied.image.split("@", 1)[0]:
        return Drift.REPLACED
    if status.state in NOT_RUNNING:
        return Drift.STOPPED
    return None


def heartbeat_status(
    status: ServiceStatus, applied: ServiceSpec | None, busy: bool
) -> ServiceStatus:
    """The status as the heartbeat reports it: with what was applied, and any drift."""
    if applied is None:
        return status
    return status.model_copy(
        update={
            "fingerprint": settings_fingerprint(applied),
            "applied_digest": image_digest(applied.image),
            "drift": None if busy else drift_of(applied, status),
        }
    )
