"""The controller's state in JetStream KV: the buckets and streams, and reading them.

Values in ``fleet_rollouts`` and ``fleet_services`` are JSON (readable with ``nats kv
get``; see rollout_store.py for how a rollout is kept). Host facts in ``fleet_hosts``
are the agents' msgpack envelopes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.kv import KeyValue
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from controller.errors import ControllerError
from protocol import subjects
from protocol.codec import decode
from protocol.errors import BrokerError, ProtocolError
from protocol.jetstream_start import failover_retries, jetstream_starting, tell_once_per_reason
from protocol.models import HostFacts
from protocol.streams import BucketDefinition, StreamRetention, fleet_buckets, fleet_streams

T = TypeVar("T")
KV_TIMEOUT = 5.0
JETSTREAM_START_SECONDS = 120.0
"""How long a starting controller waits for its cluster's JetStream: nodes of a cluster
booted together elect a leader within seconds; a supervisor restarts it after this."""
CAS_ATTEMPTS = 20


class RolloutConflict(ControllerError):
    """Another rollout of the service is active, or the record changed under us."""

    code = "conflict"


class NotFound(ControllerError):
    code = "not_found"


class StaleRecord(ControllerError):
    code = "stale"


async def open_buckets(
    js: JetStreamContext, retention: StreamRetention | None = None
) -> tuple[KeyValue, KeyValue, KeyValue]:
    """The rollouts, services and hosts buckets and the streams (created if missing).

    As for the streams, only a caller that passes ``retention`` (the long-running
    controller) brings existing buckets to it.
    """
    buckets = fleet_buckets(retention or StreamRetention())
    bring = retention is not None
    await ensure_streams(js, retention)
    rollouts = await open_bucket(js, buckets[subjects.ROLLOUTS_BUCKET], bring_existing=bring)
    services = await open_bucket(js, buckets[subjects.SERVICES_BUCKET], bring_existing=bring)
    hosts = await open_bucket(js, buckets[subjects.HOSTS_BUCKET], bring_existing=bring)
    return rollouts, services, hosts


async def when_jetstream_ready(
    open_state: Callable[[], Awaitable[T]],
    on_wait: Callable[[str], None],
    patience: float = JETSTREAM_START_SECONDS,
) -> T:
    """Run ``open_state`` (creating and binding the streams and buckets) for the
    long-running controller, which may start before its cluster has elected a
    JetStream leader (all nodes booting at once): until then a request times out or is
    refused as temporarily unavailable (or, with too few peers yet, unplaceable), so it
    is tried again for up to ``patience`` seconds, telling ``on_wait`` once per reason."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(jetstream_starting),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        stop=stop_after_delay(patience),
        before_sleep=tell_once_per_reason(on_wait),
        reraise=True,
    ):
        with attempt:
            return await open_state()
    raise AssertionError("unreachable: the retries return or raise")  # pragma: no cover


async def open_bucket(
    js: JetStreamContext, definition: BucketDefinition, *, bring_existing: bool
) -> KeyValue:
    """Bind to a bucket, creating it if missing; with ``bring_existing``, an existing
    bucket's replicas are set to the definition's (a bucket made on one server, or by
    an older version with one replica, gets its copies on the other nodes)."""
    try:
        kv = await js.key_value(definition.bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            return await js.create_key_value(KeyValueConfig(**definition.model_dump()))
        except nats.js.errors.BadRequestError as exc:
            if jetstream_starting(exc):  # too few peers yet: not made, try again later
                raise
            # Created meanwhile by another party (with other settings): bind to it.
            kv = await js.key_value(definition.bucket)
    if bring_existing:
        info = await js.stream_info(definition.stream)
        if info.config.num_replicas != definition.replicas:
            scaled = dataclasses.replace(info.config, num_replicas=definition.replicas)
            await js.update_stream(scaled)
    return kv


async def ensure_streams(js: JetStreamContext, retention: StreamRetention | None) -> None:
    """Create missing streams; with ``retention`` given, also bring existing ones to it.

    fleetctl's verbs pass None, so only the long-running controller (and the agents),
    which carry the operator's retention settings, ever change an existing stream.
    """
    for definition in fleet_streams(retention or StreamRetention()):
        config = definition.model_dump()
        try:
            await js.add_stream(**config)
        except nats.js.errors.BadRequestError as exc:
            if jetstream_starting(exc):  # too few peers yet: neither made nor there
                raise
            if retention is not None:
                await js.update_stream(**config)


async def read_hosts(kv: KeyValue) -> dict[str, HostFacts]:
    """Every host's latest facts; entries that do not decode are skipped, never fatal."""
    hosts: dict[str, HostFacts] = {}
    for key in await kv_keys(kv, ""):
        entry = await kv_get(kv, key)
        if entry is None or not entry.value:
            continue
        try:
            facts = decode(entry.value)
        except ProtocolError:
            continue
        if isinstance(facts, HostFacts):
            hosts[key] = facts
    return hosts


async def kv_get(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    try:
        async for attempt in failover_retries():
            with attempt:
                return await asyncio.wait_for(kv.get(key), KV_TIMEOUT)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"KV read of {key} failed: {exc!r}") from exc
    raise AssertionError("unreachable: the retries return or raise")  # pragma: no cover


async def kv_keys(kv: KeyValue, prefix: str) -> list[str]:
    """The keys starting with ``prefix`` (deleted ones too: a read of those gives None).

    Asked of the bucket's stream (its subjects), not with nats-py's ``kv.keys()``: that
    watcher may send its end-of-keys marker before the keys already on their way, and
    so list none of them (seen in CI). The stream and subject prefix are the KeyValue's
    own (private) attributes, set from the bucket name when it was opened.
    """
    subjects_filter = f"{kv._pre}{prefix}>"
    try:
        async for attempt in failover_retries():
            with attempt:
                info = await asyncio.wait_for(
                    kv._js.stream_info(kv._stream, subjects_filter=subjects_filter), KV_TIMEOUT
                )
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"KV listing failed: {exc!r}") from exc
    return sorted(subject.removeprefix(kv._pre) for subject in info.state.subjects or {})


@dataclasses.dataclass(frozen=True)
class Latest:
    value: bytes
    revision: int


FETCH_WAIT = 1.0
"""Seconds a whole-prefix read waits for a batch before asking whether any is coming."""


async def kv_latest(kv: KeyValue, prefix: str) -> dict[str, Latest]:
    """The value and revision of every key starting with ``prefix`` (deleted ones left
    out), read in one pass over the bucket's stream rather than one request per key: a
    rollout's parts come in well under a second. A pull consumer, not a push one: a push
    consumer stalls on flow control when its reader falls behind."""
    try:
        async for attempt in failover_retries():
            with attempt:
                return await _read_latest(kv, prefix)
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"KV read of {prefix}* failed: {exc!r}") from exc
    raise AssertionError("unreachable: the retries return or raise")  # pragma: no cover


async def _read_latest(kv: KeyValue, prefix: str) -> dict[str, Latest]:
    """One attempt of :func:`kv_latest`, from a consumer of its own: a read cut short by
    a failover is started again whole, never continued. The consumer says how many
    entries it has for us when it is made: none, and there is nothing to wait for (the
    keys may have been purged a moment ago)."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        filter_subject=f"{kv._pre}{prefix}>",
        inactive_threshold=KV_TIMEOUT * 6,  # the server drops it if this reader dies
    )
    values: dict[str, Latest] = {}
    info = await asyncio.wait_for(kv._js.add_consumer(kv._stream, config), KV_TIMEOUT)
    try:
        if not info.num_pending:
            return values
        reader = await kv._js.pull_subscribe_bind(consumer=info.name, stream=kv._stream)
        deadline = asyncio.get_running_loop().time() + KV_TIMEOUT
        received = 0  # the consumer's sequence of the last entry that came
        try:
            while True:
                try:
                    messages = await reader.fetch(batch=1000, timeout=FETCH_WAIT)
                except TimeoutError:
                    # Nothing came: purged since the consumer was made (it has nothing
                    # left, and nothing it sent is still on its way), or slow. A timeout
                    # with entries still to come, even after some came, is an error: the
                    # caller must never take part of the entries for all of them.
                    left = await asyncio.wait_for(
                        kv._js.consumer_info(kv._stream, info.name), KV_TIMEOUT
                    )
                    sent = left.delivered.consumer_seq if left.delivered else 0
                    if not left.num_pending and sent == received:
                        return values
                    if asyncio.get_running_loop().time() >= deadline:
                        raise
                    continue
                for message in messages:
                    received = message.metadata.sequence.consumer
                    key = message.subject.removeprefix(kv._pre)
                    operation = (message.headers or {}).get("KV-Operation")
                    if operation in ("DEL", "PURGE") or not message.data:
                        values.pop(key, None)
                    else:
                        values[key] = Latest(message.data, message.metadata.sequence.stream)
                    if message.metadata.num_pending == 0:
                        return values
        finally:
            await reader.unsubscribe()
    finally:
        with suppress(nats.errors.Error, TimeoutError):
            await asyncio.wait_for(kv._js.delete_consumer(kv._stream, info.name), KV_TIMEOUT)


async def kv_drop_before(kv: KeyValue, keys: str, sequence: int) -> None:
    """Like :func:`kv_drop`, but only of entries older than stream ``sequence``."""
    try:
        await asyncio.wait_for(
            kv._js.purge_stream(kv._stream, subject=f"{kv._pre}{keys}", seq=sequence), KV_TIMEOUT
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"KV purge of {keys} failed: {exc!r}") from exc


async def kv_drop(kv: KeyValue, keys: str) -> None:
    """Drop a key, or every key a pattern like ``host.web-r2.>`` matches, with its
    history and without leaving a delete marker, in one request."""
    try:
        await asyncio.wait_for(
            kv._js.purge_stream(kv._stream, subject=f"{kv._pre}{keys}"), KV_TIMEOUT
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"KV purge of {keys} failed: {exc!r}") from exc
