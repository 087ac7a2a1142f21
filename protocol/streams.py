"""The three JetStream streams, the four KV buckets and their retention: pure data both
sides create them from.

Whichever side starts first creates them (or updates them to this definition), so the
definition lives here, once. Every message carries a ``Nats-Msg-Id`` (the envelope id),
and the stream's duplicate window drops a re-send after a reconnect.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from protocol import subjects
from protocol.base import FrozenModel
from protocol.config_files import CONFIG_HISTORY, MAX_CONFIG_DOCUMENT

DAY = 86_400.0
GIB = 1024**3


class StreamLimits(FrozenModel):
    max_age: Annotated[float, Field(gt=0)]
    """Seconds a message is kept."""
    max_bytes: Annotated[int, Field(ge=1024 * 1024)]
    """The stream drops its oldest messages beyond this size."""


class StreamRetention(FrozenModel):
    """Operators tune this (FLEET_STREAMS as JSON, or [streams] in a TOML file)."""

    replicas: Annotated[int, Field(ge=1, le=5)] = 1
    """Of the streams and the KV buckets alike: 1 on a single server, 3 on a cluster."""
    duplicate_window: Annotated[float, Field(gt=0, le=DAY)] = 120.0
    events: StreamLimits = StreamLimits(max_age=7 * DAY, max_bytes=1 * GIB)
    logs: StreamLimits = StreamLimits(max_age=1 * DAY, max_bytes=1 * GIB)
    metrics: StreamLimits = StreamLimits(max_age=1 * DAY, max_bytes=GIB // 2)


class StreamDefinition(FrozenModel):
    """Named as JetStream's stream config is, so ``add_stream(**definition.model_dump())``."""

    name: str
    subjects: tuple[str, ...]
    max_age: float
    max_bytes: int
    num_replicas: int
    duplicate_window: float


def fleet_streams(retention: StreamRetention) -> tuple[StreamDefinition, ...]:
    def stream(name: str, wildcard: str, limits: StreamLimits) -> StreamDefinition:
        return StreamDefinition(
            name=name,
            subjects=(wildcard,),
            max_age=limits.max_age,
            max_bytes=limits.max_bytes,
            num_replicas=retention.replicas,
            duplicate_window=retention.duplicate_window,
        )

    return (
        stream(subjects.EVENTS_STREAM, subjects.EVENTS_WILDCARD, retention.events),
        stream(subjects.LOGS_STREAM, subjects.LOGS_WILDCARD, retention.logs),
        stream(subjects.METRICS_STREAM, subjects.METRICS_WILDCARD, retention.metrics),
    )


class BucketDefinition(FrozenModel):
    """One KV bucket, named as nats-py's KeyValueConfig is."""

    bucket: str
    history: int = 1
    max_value_size: int = -1
    replicas: int = 1

    @property
    def stream(self) -> str:
        """The stream JetStream keeps the bucket in."""
        return f"KV_{self.bucket}"


def fleet_buckets(retention: StreamRetention) -> dict[str, BucketDefinition]:
    """The four buckets by name, with as many replicas as the streams: losing the node
    that holds a bucket must not stall the fleet."""
    replicas = retention.replicas
    return {
        definition.bucket: definition
        for definition in (
            BucketDefinition(bucket=subjects.ROLLOUTS_BUCKET, replicas=replicas),
            BucketDefinition(bucket=subjects.SERVICES_BUCKET, replicas=replicas),
            BucketDefinition(bucket=subjects.HOSTS_BUCKET, replicas=replicas),
            BucketDefinition(
                bucket=subjects.CONFIG_BUCKET,
                history=CONFIG_HISTORY,
                max_value_size=MAX_CONFIG_DOCUMENT,
                replicas=replicas,
            ),
        )
    }
