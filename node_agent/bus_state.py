"""The streams and buckets the agent needs, made on the bus if missing.

Whichever side starts first creates the streams; the agent's retention settings must
match the controller's (FLEET_STREAMS), since both bring them up to date. What exists
and matches is only looked at: on a locked-down bus a host may read stream info but not
create or change streams.
"""

from __future__ import annotations

from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from protocol.streams import BucketDefinition, StreamRetention, fleet_streams


async def ensure_streams(js: JetStreamContext, retention: StreamRetention) -> None:
    for definition in fleet_streams(retention):
        config = definition.model_dump()
        try:
            info = await js.stream_info(config["name"])
        except nats.js.errors.NotFoundError:
            await js.add_stream(**config)
            continue
        if not _stream_matches(info.config, config):
            await js.update_stream(**config)


async def open_bucket(js: JetStreamContext, definition: BucketDefinition) -> KeyValue:
    """Bind to a KV bucket, creating it only if it does not exist yet (the controller
    brings an existing one's replicas to the operator's setting)."""
    try:
        return await js.key_value(definition.bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            return await js.create_key_value(KeyValueConfig(**definition.model_dump()))
        except nats.js.errors.BadRequestError:  # created meanwhile, other settings
            return await js.key_value(definition.bucket)


def _stream_matches(current: Any, wanted: dict[str, Any]) -> bool:
    """Whether the stream's config already has every value the agent would set."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple | list) else value

    return all(
        plain(getattr(current, key, None)) == plain(value)
        for key, value in wanted.items()
        if key != "name" and value is not None
    )
