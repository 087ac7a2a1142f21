"""The controller's state in JetStream KV: rollouts, service revisions, host inventory.

Values in ``fleet_rollouts`` and ``fleet_services`` are JSON (readable with ``nats kv
get``); every change of a rollout record is a compare-and-set on the entry's revision.
Host facts in ``fleet_hosts`` are the agents' msgpack envelopes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from controller.errors import ControllerError
from controller.rollouts.model import TERMINAL, RolloutRecord, RolloutStatus
from protocol import subjects
from protocol.codec import decode
from protocol.errors import BrokerError, ProtocolError
from protocol.jetstream_start import jetstream_starting, tell_once_per_reason
from protocol.models import HostFacts
from protocol.streams import BucketDefinition, StreamRetention, fleet_buckets, fleet_streams

T = TypeVar("T")
KV_TIMEOUT = 5.0
FAILOVER_SECONDS = 30.0
FAILOVER_ERRORS = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
JETSTREAM_START_SECONDS = 120.0
"""How long a starting controller waits for its cluster's JetStream: nodes of a cluster
booted together elect a leader within seconds; a supervisor restarts it after this."""
CAS_ATTEMPTS = 20
COMPRESS_ABOVE = 256 * 1024
"""A rollout record larger than this (about 700 hosts) is stored zlib-compressed, so a
5000-host record (1.9 MB of JSON) stays far below NATS's 1 MiB message limit."""
COMPRESSED = b"zlib:"


class RolloutConflict(ControllerError):
    """Another rollout of the service is active, or the record changed under us."""

    code = "conflict"


class NotFound(ControllerError):
    code = "not_found"


class StaleRecord(ControllerError):
    code = "stale"


@dataclass(frozen=True)
class Stored:
    record: RolloutRecord
    revision: int


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


def _rollout_key(rollout_id: str) -> str:
    return f"rollout.{rollout_id}"


def _active_key(service: str) -> str:
    return f"active.{service}"


def encode_record(record: RolloutRecord) -> bytes:
    """JSON, readable with `nats kv get`; compressed once a fleet makes it large."""
    data = record.model_dump_json().encode()
    if len(data) > COMPRESS_ABOVE:
        return COMPRESSED + zlib.compress(data, 1)
    return data


def decode_record(data: bytes) -> RolloutRecord:
    try:
        if data.startswith(COMPRESSED):
            data = zlib.decompress(data[len(COMPRESSED) :])
        return RolloutRecord.model_validate_json(data)
    except (zlib.error, ValueError) as exc:
        raise ControllerError(f"a rollout record in KV cannot be read: {exc}") from exc


class RolloutStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._decoded: dict[str, Stored] = {}
        """The last record read or written of each unfinished rollout: the leader reads
        its rollouts on every pass, and parsing a 5,000-host record is most of a pass."""

    async def get(self, rollout_id: str) -> Stored | None:
        entry = await kv_get(self._kv, _rollout_key(rollout_id))
        if entry is None or entry.value is None:
            self._decoded.pop(rollout_id, None)
            return None
        known = self._decoded.get(rollout_id)
        if known is not None and known.revision == entry.revision:
            return known
        return self._remember(Stored(decode_record(entry.value), entry.revision or 0))

    def _remember(self, stored: Stored) -> Stored:
        if stored.record.status in TERMINAL:
            self._decoded.pop(stored.record.id, None)
        else:
            self._decoded[stored.record.id] = stored
        return stored

    async def create(self, record: RolloutRecord) -> Stored:
        try:
            revision = await self._kv.create(_rollout_key(record.id), encode_record(record))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RolloutConflict(f"rollout {record.id} already exists") from exc
        return Stored(record, revision)

    async def update(self, record: RolloutRecord, revision: int) -> Stored:
        """Compare-and-set: fails with StaleRecord if anyone wrote since ``revision``."""
        try:
            new_revision = await self._kv.update(
                _rollout_key(record.id), encode_record(record), last=revision
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StaleRecord(f"rollout {record.id} changed since revision {revision}") from exc
        return self._remember(Stored(record, new_revision))

    async def mutate(
        self, rollout_id: str, change: Callable[[RolloutRecord], RolloutRecord]
    ) -> RolloutRecord:
        """Read, change, compare-and-set; again from a fresh read whenever someone won."""
        for _ in range(CAS_ATTEMPTS):
            stored = await self.get(rollout_id)
            if stored is None:
                raise NotFound(f"no rollout {rollout_id}")
            changed = change(stored.record)
            if changed == stored.record:
                return changed
            try:
                await self.update(changed, stored.revision)
            except StaleRecord:
                await asyncio.sleep(0.01)
                continue
            return changed
        raise RolloutConflict(f"rollout {rollout_id} kept changing; gave up after retries")

    async def all(self) -> list[RolloutRecord]:
        records = []
        for key in await kv_keys(self._kv, "rollout."):
            stored = await self.get(key.removeprefix("rollout."))
            if stored is not None:
                records.append(stored.record)
        return sorted(records, key=lambda r: r.created_at)

    async def active(self) -> list[tuple[str, str]]:
        """(service, rollout id) of every rollout that holds its service."""
        pairs = []
        for key in await kv_keys(self._kv, "active."):
            entry = await kv_get(self._kv, key)
            if entry is not None and entry.value:
                pairs.append((key.removeprefix("active."), entry.value.decode()))
        return pairs

    async def active_id(self, service: str) -> str | None:
        entry = await kv_get(self._kv, _active_key(service))
        return entry.value.decode() if entry is not None and entry.value else None

    async def claim_service(
        self, service: str, rollout_id: str, *, supersede_convergence: bool = True
    ) -> None:
        """One rollout per service: the first to create ``active.<service>`` has it.

        An operator's rollout takes the claim from a convergence rollout in progress (it
        only converged a few hosts to the accepted revision): that one ends ``aborted``
        and its hosts are simply part of the new rollout."""
        try:
            await self._kv.create(_active_key(service), rollout_id.encode())
            return
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            conflict = exc
        entry = await kv_get(self._kv, _active_key(service))
        current = entry.value.decode() if entry is not None and entry.value else None
        superseded = (
            supersede_convergence
            and entry is not None
            and current is not None
            and await self._supersede(current, rollout_id)
        )
        if superseded and entry is not None:
            try:
                await self._kv.update(
                    _active_key(service), rollout_id.encode(), last=entry.revision
                )
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass  # another took it meanwhile: a conflict like any other
        raise RolloutConflict(
            f"rollout {current} of {service} is still in progress; "
            "wait for it, or pause/abort it first"
        ) from conflict

    async def _supersede(self, rollout_id: str, by: str) -> bool:
        """End a convergence rollout so that ``by`` can take its service; False if it is
        not one (or not any more)."""
        for _ in range(CAS_ATTEMPTS):
            stored = await self.get(rollout_id)
            if stored is None or not stored.record.converging:
                return False
            if stored.record.status in TERMINAL:
                return True
            ended = stored.record.model_copy(
                update={"status": RolloutStatus.ABORTED, "reason": f"superseded by {by}"}
            )
            try:
                await self.update(ended, stored.revision)
                return True
            except StaleRecord:
                continue
        return False

    async def release_service(self, service: str, rollout_id: str) -> None:
        entry = await kv_get(self._kv, _active_key(service))
        if entry is not None and entry.value and entry.value.decode() == rollout_id:
            await self._kv.purge(_active_key(service))


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


def failover_retries() -> AsyncRetrying:
    """Retries of a read while a cluster elects a new leader for the bucket (a node was
    lost): the request times out or finds no responder for a few seconds, then works."""
    return AsyncRetrying(
        retry=retry_if_exception_type(FAILOVER_ERRORS),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        stop=stop_after_delay(FAILOVER_SECONDS),
        reraise=True,
    )


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
