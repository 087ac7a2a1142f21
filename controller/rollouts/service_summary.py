"""One line of `fleetctl services` per service: how many hosts are where, from the same
judgement convergence acts on. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.rollouts.convergence import Desired, Need, fleet_size, matches, needs
from controller.rollouts.model import IN_FLIGHT, RolloutRecord
from controller.rollouts.workload import describe
from protocol.app import AppSpec
from protocol.models import HostFacts


@dataclass(frozen=True)
class ServiceSummary:
    """One line of `fleetctl services`, like `kubectl get deployments`."""

    service: str
    kind: str
    """``service`` (one container) or ``app`` (a Compose project's members)."""
    revision: int | None
    """The accepted revision; None until a rollout of the service completed."""
    image: str | None
    matching: int
    """Live hosts the selector matches."""
    converged: int
    missing: int
    outdated: int
    ahead: int
    drifted: int
    removing: int
    """Hosts off the selector (or of a deleted service) that still run it."""
    engine_down: int
    """Hosts it concerns whose engine is down: judged once the engine answers."""
    deleted: bool
    rollout: str | None
    """The rollout in progress, if any (convergence rollouts included)."""
    updating: int
    """Hosts that rollout is updating right now."""


def summarise(
    service: str,
    desired: Desired | None,
    live: Mapping[str, HostFacts],
    active: RolloutRecord | None,
) -> ServiceSummary:
    counts = {need: 0 for need in Need}
    matching = 0
    outside = 0  # needs of hosts the selector does not match: not among ``matching``
    if desired is not None:
        matching = 0 if desired.deleted else fleet_size(desired, live)
        for need in needs(desired, live):
            counts[need.need] += 1
            on_selector = not desired.deleted and matches(live[need.host], desired.selector)
            outside += not on_selector
    in_flight = active.count(*IN_FLIGHT) if active is not None else 0
    return ServiceSummary(
        service=service,
        kind="app" if desired is not None and isinstance(desired.spec, AppSpec) else "service",
        revision=desired.revision if desired else None,
        image=describe(desired.spec) if desired else None,
        matching=matching,
        converged=matching - sum(counts.values()) + outside,
        missing=counts[Need.DEPLOY],
        outdated=counts[Need.UPDATE],
        ahead=counts[Need.AHEAD],
        drifted=counts[Need.REPAIR] + counts[Need.REPORT],
        removing=counts[Need.REMOVE],
        engine_down=counts[Need.ENGINE_DOWN],
        deleted=desired.deleted if desired else False,
        rollout=active.id if active is not None else None,
        updating=in_flight,
    )
