"""Create or update the fleet's JetStream streams from their shared definition."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from protocol.streams import StreamDefinition, StreamRetention, fleet_streams


def stream_config(definition: StreamDefinition) -> StreamConfig:
    return StreamConfig(
        name=definition.name,
        subjects=list(definition.subjects),
        max_age=definition.max_age,
        max_bytes=definition.max_bytes,
        num_replicas=definition.replicas,
        duplicate_window=definition.duplicate_window,
    )


async def ensure_streams(js: JetStreamContext, retention: StreamRetention | None) -> None:
    """Create missing streams; with ``retention`` given, also bring existing ones to it.

    The agent always passes its settings' retention (the controller does the same),
    so both must be configured alike (FLEET_STREAMS).
    """
    for definition in fleet_streams(retention or StreamRetention()):
        config = stream_config(definition)
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            if retention is not None:
                await js.update_stream(config)
