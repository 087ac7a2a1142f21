"""Every message on the bus: one envelope, a discriminated union of kinds.

The models live by family (envelope, commands, replies, events, telemetry); this module
joins them into the union that decoding and the JSON Schema use, and names them all, so
``from protocol.models import ApplyCommand`` keeps working for every program.
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field, TypeAdapter

from protocol.commands import (
    ApplyAppCommand,
    ApplyCommand,
    Command,
    ConfigCommand,
    InspectCommand,
    PrepareAppCommand,
    PrepareCommand,
    RemoveCommand,
    RetireCommand,
    RollbackCommand,
    StageCommand,
    SwitchCommand,
)
from protocol.envelope import Envelope, Sender, ShortText, new_message_id, utc_now
from protocol.events import (
    ColourSwitch,
    ConfigPhase,
    ConfigProgress,
    ContainerAction,
    ContainerEvent,
    ConvergenceAction,
    ConvergenceEvent,
    HookRun,
    HostFacts,
    ImagesPruned,
    RolloutEvent,
    UpdatePhase,
    UpdateProgress,
)
from protocol.replies import (
    ContainerState,
    Drift,
    ErrorReply,
    FailureBundle,
    Health,
    HookName,
    HookResult,
    InspectReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    ProbeResult,
    Reason,
    Reply,
    ServiceStatus,
)
from protocol.telemetry import (
    MAX_LOG_LINE,
    ContainerMetrics,
    LogBatch,
    LogEntry,
    MetricsSample,
    TelemetryDropped,
)

CommandMessage = Annotated[
    PrepareCommand
    | PrepareAppCommand
    | ApplyCommand
    | ApplyAppCommand
    | RollbackCommand
    | RemoveCommand
    | StageCommand
    | SwitchCommand
    | RetireCommand
    | ConfigCommand
    | InspectCommand,
    Field(discriminator="kind"),
]
AnyMessage = (
    PrepareCommand
    | PrepareAppCommand
    | ApplyCommand
    | ApplyAppCommand
    | RollbackCommand
    | RemoveCommand
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
    | ConvergenceEvent
    | HookRun
    | ImagesPruned
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

__all__ = [
    "MAX_LOG_LINE",
    "MESSAGE_ADAPTER",
    "MESSAGE_KINDS",
    "MESSAGE_MODELS",
    "AnyMessage",
    "ApplyAppCommand",
    "ApplyCommand",
    "ColourSwitch",
    "Command",
    "CommandMessage",
    "ConfigCommand",
    "ConfigPhase",
    "ConfigProgress",
    "ContainerAction",
    "ContainerEvent",
    "ContainerMetrics",
    "ContainerState",
    "ConvergenceAction",
    "ConvergenceEvent",
    "Drift",
    "Envelope",
    "ErrorReply",
    "FailureBundle",
    "Health",
    "HookName",
    "HookResult",
    "HookRun",
    "HostFacts",
    "ImagesPruned",
    "InspectCommand",
    "InspectReply",
    "LogBatch",
    "LogEntry",
    "Message",
    "MetricsSample",
    "OperationOutcome",
    "OperationReply",
    "PrepareAppCommand",
    "PrepareCommand",
    "PrepareReply",
    "ProbeResult",
    "Reason",
    "RemoveCommand",
    "Reply",
    "RetireCommand",
    "RollbackCommand",
    "RolloutEvent",
    "Sender",
    "ServiceStatus",
    "ShortText",
    "StageCommand",
    "SwitchCommand",
    "TelemetryDropped",
    "UpdatePhase",
    "UpdateProgress",
    "new_message_id",
    "utc_now",
]
