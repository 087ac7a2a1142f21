"""Telemetry: metrics samples, log batches, and the count of what was dropped."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import AwareDatetime, Field

from protocol.base import FrozenModel, HostId, ImageRefText, ServiceName
from protocol.envelope import Envelope
from protocol.replies import Health


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
