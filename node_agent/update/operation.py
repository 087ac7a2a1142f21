"""What an operation on a service is and ends with, shared by its phases: the results,
the emit and record callbacks, the containers' names, and a service's status as read
from its container."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from node_agent.runtime import Inspect
from node_agent.update.container_config import COLOUR_LABEL, IMAGE_LABEL
from protocol.errors import ProtocolError
from protocol.image_ref import parse_image_reference
from protocol.models import (
    ContainerState,
    FailureBundle,
    Health,
    OperationOutcome,
    Reason,
    ServiceStatus,
    UpdatePhase,
)
from protocol.spec import COLOURS, ServiceSpec


class RecordOutcome(Protocol):
    """Stores an operation's outcome durably, under its operation id."""

    def __call__(
        self, operation_id: str, service: str, result: OperationResult
    ) -> Awaitable[None]: ...


async def record_nowhere(operation_id: str, service: str, result: OperationResult) -> None:
    """The default: an updater used on its own (tests, benches) keeps no outcomes."""


class Emit(Protocol):
    """Publishes one phase change (and, while pulling, how far the pull is)."""

    def __call__(
        self, phase: UpdatePhase, detail: str, progress: float | None = None
    ) -> Awaitable[None]: ...


LOG_LINES_IN_BUNDLE = 30
ASIDE_SUFFIX = "--prev"
NEXT_SUFFIX = "--next"
STANDBY_SUFFIX = "--standby"
SWITCHING_SUFFIX = "--switching"
COPY_SUFFIXES = ("", ASIDE_SUFFIX, NEXT_SUFFIX, STANDBY_SUFFIX, SWITCHING_SUFFIX)
"""Every name a service's containers take: serving, set aside, next, the other colour."""
CANDIDATE_STARTED = frozenset(
    {UpdatePhase.PROBING.value, UpdatePhase.SOAKING.value, UpdatePhase.STOPPING_OLD.value}
)
"""Start-first phases in which the new copy (``--next``) has been started beside the old."""
AGENT_RESTARTED = Reason(code="agent_restarted", text="the agent died during the update")


@dataclass
class PrepareResult:
    ready: bool
    reasons: list[Reason]
    digest: str | None = None


@dataclass
class OperationResult:
    outcome: OperationOutcome
    status: ServiceStatus
    failure: FailureBundle | None = None
    reasons: list[Reason] = field(default_factory=list)
    member_failures: dict[str, FailureBundle] = field(default_factory=dict)
    """An app's rolled-back update: a bundle per member it replaced (bundles.py)."""


@dataclass
class Operation:
    operation_id: str
    spec: ServiceSpec
    emit: Emit
    rollout_id: str | None = None
    old_image: str = ""
    """The image the service ran before (its label), for the hooks' environment."""
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self.started, 3)


def dump_spec(spec: ServiceSpec | None) -> dict[str, Any] | None:
    return spec.model_dump(mode="json") if spec else None


def image_label(info: Inspect | None) -> str | None:
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    value = labels.get(IMAGE_LABEL)
    return str(value) if value else None


def status_from_inspect(service: str, info: Inspect | None) -> ServiceStatus:
    if info is None:
        return ServiceStatus(name=service)
    state = info.get("State") or {}
    image_ref = image_label(info)
    config_image = str((info.get("Config") or {}).get("Image") or "")
    digest = config_image.split("@", 1)[1] if "@" in config_image else None
    health_status = (state.get("Health") or {}).get("Status")
    try:
        health = Health(health_status) if health_status else Health.UNKNOWN
    except ValueError:
        health = Health.UNKNOWN
    try:
        container_state = ContainerState(state.get("Status", "absent"))
    except ValueError:
        container_state = ContainerState.DEAD
    started = state.get("StartedAt")
    started_at = None
    if started and not started.startswith("0001"):
        started_at = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00")
    try:
        parse_image_reference(image_ref or "")
    except ProtocolError:
        image_ref = None
    colour = ((info.get("Config") or {}).get("Labels") or {}).get(COLOUR_LABEL)
    return ServiceStatus(
        name=service,
        colour=colour if colour in COLOURS else None,
        image=image_ref,
        digest=digest,
        container_id=info.get("Id"),
        state=container_state,
        health=health,
        started_at=started_at,
        restart_count=int(info.get("RestartCount") or 0),
    )
