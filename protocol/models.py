"""Every message on the bus: one envelope, a discriminated union of kinds.

The envelope (schema_version, id, kind, sender, sent_at) is the same for all; commands
add an expiry and room for a signature. ``kind`` selects the model when decoding.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, NamedTuple, get_args

from pydantic import AwareDatetime, Field, TypeAdapter

from protocol import SCHEMA_VERSION
from protocol.base import FrozenModel, HostId, ImageRefText, MessageId, ServiceName, Token
from protocol.config_files import ConfigContent, ConfigName, Sha256
from protocol.spec import Colour, ReloadPolicy, ServiceSpec

Sender = Token
"""A host id, or "controller"."""
ShortText = Annotated[str, Field(max_length=8192)]


def new_message_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(FrozenModel):
    kind: str
    """Each message kind narrows this to its own literal, the union's discriminator."""
    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    id: MessageId = Field(default_factory=new_message_id)
    sender: Sender
    sent_at: AwareDatetime = Field(default_factory=utc_now)


class Command(Envelope):
    host: HostId
    """The host this command is for; an agent refuses one addressed to another host."""
    expires_at: AwareDatetime
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] | None = None
    """Which controller key signed it (protocol/signing.py); None when unsigned."""
    signature: Annotated[bytes, Field(min_length=64, max_length=64)] | None = None
    """Ed25519 over every other field; agents that trust keys refuse a command without."""


# ---- commands: controller -> agent (request/reply on fleet.cmd.<host>) ----


class PrepareCommand(Command):
    """Phase 1: check the host and pull the image; touches nothing running."""

    kind: Literal["prepare"] = "prepare"
    service: ServiceSpec
    allow_downgrade: bool = False
    allow_major: bool = False
    rollout_id: str | None = None


class ApplyCommand(Command):
    """Phase 2: replace the service's container with the prepared image."""

    kind: Literal["apply"] = "apply"
    service: ServiceSpec
    force: bool = False
    """Apply even while the application holds its update lock."""
    rollout_id: str | None = None


class RollbackCommand(Command):
    """Return the service to the previous version the agent recorded."""

    kind: Literal["rollback"] = "rollback"
    service: ServiceName
    force: bool = False
    rollout_id: str | None = None


class StageCommand(Command):
    """Blue-green: start ``colour`` with the new spec next to the serving copy, verify it."""

    kind: Literal["stage"] = "stage"
    service: ServiceSpec
    colour: Colour
    rollout_id: str | None = None


class SwitchCommand(Command):
    """Blue-green: make ``colour`` the serving copy and run the switch hook.

    The other colour keeps running (a switch back takes seconds) unless ``remove_other``.
    """

    kind: Literal["switch"] = "switch"
    service: ServiceName
    colour: Colour
    remove_other: bool = False
    rollout_id: str | None = None


class RetireCommand(Command):
    """Blue-green: stop and remove the copy of ``colour``; never the serving one."""

    kind: Literal["retire"] = "retire"
    service: ServiceName
    colour: Colour
    rollout_id: str | None = None


class ConfigCommand(Command):
    """A config rollout's step on one host: write one file, apply the reload policy, verify.

    On a failed verification the agent restores the previous file itself. ``check_only``
    is the rollout's pre-flight: can the file be written, does the service run here.
    ``content`` None removes the file (reverting a file's first version).
    """

    kind: Literal["config"] = "config"
    service: ServiceName
    name: ConfigName
    version: Annotated[int, Field(ge=0)]
    content: ConfigContent | None
    check_only: bool = False
    rollout_id: str | None = None


class InspectCommand(Command):
    kind: Literal["inspect"] = "inspect"
    service: ServiceName


# ---- pieces shared by replies and events ----


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


class ProbeResult(FrozenModel):
    at: AwareDatetime
    ok: bool
    output: ShortText = ""


class FailureBundle(FrozenModel):
    """What an operator needs to see why a new version was rolled back."""

    reason: Reason
    exit_code: int | None = None
    oom_killed: bool = False
    last_log_lines: tuple[ShortText, ...] = ()
    probe_results: tuple[ProbeResult, ...] = ()
    timings: dict[str, float] = Field(default_factory=dict)


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


class OperationReply(Reply):
    """The outcome of Apply or Rollback."""

    kind: Literal["operation_reply"] = "operation_reply"
    service: ServiceName
    outcome: OperationOutcome
    status: ServiceStatus
    failure: FailureBundle | None = None
    reasons: tuple[Reason, ...] = ()


class InspectReply(Reply):
    kind: Literal["inspect_reply"] = "inspect_reply"
    status: ServiceStatus


class ErrorReply(Reply):
    """A command that was refused: unreadable, invalid, expired, busy, unknown service."""

    kind: Literal["error"] = "error"
    code: Token
    message: ShortText


# ---- events and telemetry: agent -> anyone ----


class HostFacts(Envelope):
    """The heartbeat: what a host is and runs, refreshed into KV fleet_hosts."""

    kind: Literal["host_facts"] = "host_facts"
    host: HostId
    labels: dict[str, str] = Field(default_factory=dict)
    agent_version: str
    docker_version: str | None = None
    cpus: Annotated[int, Field(ge=0)]
    memory_total: Annotated[int, Field(ge=0)]
    memory_available: Annotated[int, Field(ge=0)]
    disk_total: Annotated[int, Field(ge=0)]
    disk_free: Annotated[int, Field(ge=0)]
    services: tuple[ServiceStatus, ...] = ()


class UpdatePhase(StrEnum):
    """The phases of one host's update (DESIGN.md, "One host's update")."""

    CHECKING = "checking"
    PULLING = "pulling"
    READY = "ready"
    NOT_READY = "not_ready"
    SNAPSHOTTING = "snapshotting"
    STOPPING_OLD = "stopping_old"
    STARTING_NEW = "starting_new"
    PROBING = "probing"
    SOAKING = "soaking"
    DONE = "done"
    RESTORING = "restoring"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class UpdateProgress(Envelope):
    kind: Literal["update_progress"] = "update_progress"
    host: HostId
    service: ServiceName
    operation_id: MessageId
    """The id of the command driving this update."""
    rollout_id: str | None = None
    phase: UpdatePhase
    detail: ShortText = ""
    progress: Annotated[float, Field(ge=0, le=1)] | None = None
    image: ImageRefText | None = None


class ConfigPhase(StrEnum):
    RELOADING = "reloading"
    """The new file is written and the reload policy is being applied and verified."""
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"
    """Verification failed: the previous file is back (and reloaded)."""
    FAILED = "failed"
    """The change could not be read or written; nothing was reloaded."""


class ConfigProgress(Envelope):
    """A config file change on one host, published as ``config_<phase>``."""

    kind: Literal["config_progress"] = "config_progress"
    host: HostId
    service: ServiceName
    name: ConfigName
    version: Annotated[int, Field(ge=0)]
    sha256: Sha256 | None = None
    """Of the content the change is about (None: the file is removed)."""
    phase: ConfigPhase
    policy: ReloadPolicy
    detail: ShortText = ""
    rollout_id: str | None = None
    failure: FailureBundle | None = None


class ContainerAction(StrEnum):
    """What the engine reported about a managed container (Docker's event actions)."""

    DIE = "die"
    OOM = "oom"
    RESTART = "restart"
    HEALTH_STATUS = "health_status"


class ContainerEvent(Envelope):
    """The engine's own news about a managed container, published as it happens."""

    kind: Literal["container_event"] = "container_event"
    host: HostId
    service: ServiceName | None = None
    """None for a container that carries no service label."""
    container: Annotated[str, Field(max_length=256)]
    container_id: Annotated[str, Field(max_length=128)]
    action: ContainerAction
    exit_code: int | None = None
    health: Health | None = None
    restarted_by_policy: bool = False
    """For a restart: the engine's restart policy did it, after the container died."""
    at: AwareDatetime


class RolloutEvent(Envelope):
    """The controller's news about a rollout: each change of status, on fleet.evt.controller."""

    kind: Literal["rollout_event"] = "rollout_event"
    rollout_id: Annotated[str, Field(max_length=128)]
    service: ServiceName
    revision: Annotated[int, Field(ge=1)]
    status: Token
    reason: Annotated[str, Field(max_length=16384)] = ""
    image: ImageRefText
    hosts_done: Annotated[int, Field(ge=0)] = 0
    hosts_total: Annotated[int, Field(ge=0)] = 0


class ColourSwitch(Envelope):
    """Blue-green: the service's active colour changed; routers and discovery follow it."""

    kind: Literal["colour_switch"] = "colour_switch"
    service: ServiceName
    colour: Colour
    port: Annotated[int, Field(ge=1, le=65535)]
    rollout_id: Annotated[str, Field(max_length=128)]
    hosts: tuple[HostId, ...] = ()
    """The hosts that serve the service in this colour now."""


class ContainerMetrics(FrozenModel):
    service: ServiceName
    container_id: str
    image: ImageRefText | None = None
    """The image the container runs, so analysis can tell the new version from the old."""
    cpu_percent: Annotated[float, Field(ge=0)]
    """Of one core, like ``docker stats``: 200 means two cores busy."""
    memory_bytes: Annotated[int, Field(ge=0)]
    memory_limit_bytes: Annotated[int, Field(ge=0)] | None = None
    restart_count: Annotated[int, Field(ge=0)] = 0
    health: Health = Health.UNKNOWN


class MetricsSample(Envelope):
    """One host's metrics at one moment, on ``fleet.metrics.<host>`` every interval."""

    kind: Literal["metrics"] = "metrics"
    host: HostId
    interval: Annotated[float, Field(gt=0)] = 10.0
    """Seconds until the next sample; a reader treats a host silent for longer as stale."""
    cpu_percent: Annotated[float, Field(ge=0)]
    memory_used: Annotated[int, Field(ge=0)]
    memory_total: Annotated[int, Field(ge=0)]
    disk_used: Annotated[int, Field(ge=0)]
    disk_total: Annotated[int, Field(ge=0)]
    load_1m: Annotated[float, Field(ge=0)]
    net_bytes_sent: Annotated[int, Field(ge=0)] = 0
    net_bytes_recv: Annotated[int, Field(ge=0)] = 0
    open_files: Annotated[int, Field(ge=0)] = 0
    containers: tuple[ContainerMetrics, ...] = ()


MAX_LOG_LINE = 16 * 1024
"""Longer lines are cut here by the shipper (and marked as cut)."""


class LogEntry(NamedTuple):
    """One line; on the wire a three-item array, since a batch holds hundreds of them."""

    stream: Literal["stdout", "stderr"]
    timestamp: AwareDatetime
    """When the engine received the line (Docker's own timestamp)."""
    line: Annotated[str, Field(max_length=MAX_LOG_LINE + 16)]


class LogBatch(Envelope):
    """Consecutive lines of one container, on ``fleet.logs.<host>.<service>``.

    Lines are batched (by count, size and a short delay) because one message per line
    would cost the agent more than the lines are worth.
    """

    kind: Literal["log_batch"] = "log_batch"
    host: HostId
    service: ServiceName
    container_id: Annotated[str, Field(max_length=128)]
    lines: Annotated[tuple[LogEntry, ...], Field(min_length=1, max_length=10_000)]


class TelemetryDropped(Envelope):
    """Messages a host could not deliver: kept no longer while NATS was away (reported
    once it is back), or refused by the server for good (a permissions error)."""

    kind: Literal["telemetry_dropped"] = "telemetry_dropped"
    host: HostId
    reason: Literal["buffer_full", "refused"] = "buffer_full"
    subject: Annotated[str, Field(max_length=256)] | None = None
    """With ``refused``: the subject the server refused this host."""
    messages: Annotated[int, Field(ge=1)]
    log_lines: Annotated[int, Field(ge=0)] = 0
    bytes: Annotated[int, Field(ge=0)] = 0
    first_dropped_at: AwareDatetime
    last_dropped_at: AwareDatetime


CommandMessage = Annotated[
    PrepareCommand
    | ApplyCommand
    | RollbackCommand
    | StageCommand
    | SwitchCommand
    | RetireCommand
    | ConfigCommand
    | InspectCommand,
    Field(discriminator="kind"),
]
AnyMessage = (
    PrepareCommand
    | ApplyCommand
    | RollbackCommand
    | StageCommand
    | SwitchCommand
    | RetireCommand
    | ConfigCommand
    | InspectCommand
    | PrepareReply
    | OperationReply
    | InspectReply
    | ErrorReply
    | HostFacts
    | UpdateProgress
    | ConfigProgress
    | ContainerEvent
    | RolloutEvent
    | ColourSwitch
    | MetricsSample
    | LogBatch
    | TelemetryDropped
)
Message = Annotated[AnyMessage, Field(discriminator="kind")]

MESSAGE_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(Message)
MESSAGE_MODELS: tuple[type[Envelope], ...] = get_args(AnyMessage)
MESSAGE_KINDS: frozenset[str] = frozenset(
    model.model_fields["kind"].default for model in MESSAGE_MODELS
)
