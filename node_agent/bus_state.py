"""The streams and buckets the agent needs, made on the bus if missing.

Whichever side starts first creates the streams; the agent's retention settings must
match the controller's (FLEET_STREAMS), since both bring them up to date. What exists
and matches is only looked at: on a locked-down bus a host may read stream info but not
create or change streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from protocol.jetstream_start import jetstream_starting, tell_once_per_reason
from protocol.streams import BucketDefinition, StreamRetention, fleet_streams

T = TypeVar("T")


async def when_jetstream_ready(
    open_state: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    on_wait: Callable[[str], None],
) -> T | None:
    """Run ``open_state`` until JetStream answers it, or None once ``stop`` is set.

    An agent never gives up on its bus (an edge box may boot before the servers do):
    while JetStream is starting it asks again with a growing pause, telling ``on_wait``
    once per reason. Any other error (a permission refused) is raised at once.
    """

    async def nap(seconds: float) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()

    retrying = AsyncRetrying(
        retry=retry_if_exception(jetstream_starting),
        wait=wait_exponential(multiplier=0.25, max=5.0),
        stop=lambda _: stop.is_set(),
        sleep=nap,
        before_sleep=tell_once_per_reason(on_wait),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                if stop.is_set():  # set during the pause: no need to ask again
                    return None
                return await open_state()
    except Exception as exc:
        if stop.is_set() and jetstream_starting(exc):
            return None
        raise
    raise AssertionError("unreachable: the retries return or raise")  # pragma: no cover


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
        except nats.js.errors.BadRequestError as exc:
            if jetstream_starting(exc):  # too few peers yet: not made, try again later
                raise
            return await js.key_value(definition.bucket)  # made meanwhile, other settings


def _stream_matches(current: Any, wanted: dict[str, Any]) -> bool:
    """Whether the stream's config already has every value the agent would set."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple | list) else value

    return all(
        plain(getattr(current, key, None)) == plain(value)
        for key, value in wanted.items()
        if key != "name" and value is not None
    )
