"""Replies, agent to controller: what a command did, with the service's status and, for a
failed update, the failure bundle."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from protocol.base import FrozenModel, ImageRefText, MessageId, ServiceName, Token
from protocol.envelope import Envelope, ShortText
from protocol.spec import Colour


class Reason(FrozenModel):
    """Why something is not ready or failed: a code for machines, a text for humans."""

    code: Token
    text: ShortText


class ContainerState(StrEnum):
    ABSENT = "absent"
    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    PAUSED = "paused"
    EXITED = "exited"
    DEAD = "dead"
    REMOVING = "removing"


class Health(StrEnum):
    UNKNOWN = "unknown"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Drift(StrEnum):
    """How a managed container differs from what its agent last applied, by hand."""

    REMOVED = "removed"
    STOPPED = "stopped"
    """Exited, dead or created: not running, and its restart policy not at work."""
    REPLACED = "replaced"
    """Another image, or a container the agent did not make, under the service's name."""


class ServiceStatus(FrozenModel):
    name: ServiceName
    image: ImageRefText | None = None
    digest: str | None = None
    container_id: str | None = None
    state: ContainerState = ContainerState.ABSENT
    health: Health = Health.UNKNOWN
    started_at: AwareDatetime | None = None
    restart_count: Annotated[int, Field(ge=0)] = 0
    colour: Colour | None = None
    """Blue-green: the colour of the serving copy; None for a service never run that way."""
    fingerprint: Annotated[str, Field(max_length=64)] | None = None
    """settings_fingerprint of the spec the agent last applied (heartbeats only)."""
    applied_digest: Annotated[str, Field(max_length=128)] | None = None
    """The digest that spec pinned, if it pinned one (heartbeats only)."""
    drift: Drift | None = None
    """Set when the container is not what the agent applied (heartbeats only)."""


class ProbeResult(FrozenModel):
    at: AwareDatetime
    ok: bool
    output: ShortText = ""


class HookName(StrEnum):
    PRE_UPDATE = "pre_update"
    POST_UPDATE = "post_update"
    POST_ROLLOUT = "post_rollout"


class HookResult(FrozenModel):
    """How one run of a lifecycle hook ended, with the tail of what it printed."""

    hook: HookName
    ok: bool
    exit_code: int | None = None
    """None when it could not be started or was killed at its timeout."""
    timed_out: bool = False
    output: ShortText = ""
    duration: Annotated[float, Field(ge=0)] = 0.0


class FailureBundle(FrozenModel):
    """What an operator needs to see why a new version was rolled back."""

    reason: Reason
    exit_code: int | None = None
    oom_killed: bool = False
    last_log_lines: tuple[ShortText, ...] = ()
    probe_results: tuple[ProbeResult, ...] = ()
    timings: dict[str, float] = Field(default_factory=dict)
    hooks: tuple[HookResult, ...] = ()


class OperationOutcome(StrEnum):
    DONE = "done"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    """Could not update and could not restore: the service needs a human."""
    DEFERRED = "deferred"
    """Not attempted, e.g. the application holds its update lock."""


# ---- replies: agent -> controller ----


class Reply(Envelope):
    in_reply_to: MessageId | None
    """The id of the command answered; None when the command could not even be read."""


class PrepareReply(Reply):
    kind: Literal["prepare_reply"] = "prepare_reply"
    service: ServiceName
    ready: bool
    reasons: tuple[Reason, ...] = ()
    digest: str | None = None
    digests: dict[str, str] = Field(default_factory=dict)
    """An app's: each member's digest, pulled (a changed member) or running."""


class OperationReply(Reply):
    """The outcome of Apply or Rollback."""

    kind: Literal["operation_reply"] = "operation_reply"
    service: ServiceName
    outcome: OperationOutcome
    status: ServiceStatus
    failure: FailureBundle | None = None
    reasons: tuple[Reason, ...] = ()
    member_failures: dict[Token, FailureBundle] = Field(default_factory=dict)
    """An app's rolled-back update: a bundle per member it replaced, by member name: the
    failing member's (``failure``) and each one put back because of it."""


class InspectReply(Reply):
    kind: Literal["inspect_reply"] = "inspect_reply"
    status: ServiceStatus


class ErrorReply(Reply):
    """A command that was refused: unreadable, invalid, expired, busy, unknown service."""

    kind: Literal["error"] = "error"
    code: Token
    message: ShortText


# ---- events and telemetry: agent -> anyone ----
