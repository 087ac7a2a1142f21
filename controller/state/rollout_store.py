"""Rollout records in KV ``fleet_rollouts``: read whole, written by what changed.

Callers see a whole ``RolloutRecord``; the store keeps a rollout in progress as a header
naming a base of its hosts and the changes written since (rollout_encoding.py). A write
puts its part first, then compare-and-sets the header: a plan made on a record someone
else changed (an operator's verb) is refused there, and the part it wrote is named by no
header. A record read at a header revision this store wrote is the one it remembers.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from controller.errors import ControllerError
from controller.rollouts.host_index import replaced
from controller.rollouts.model import (
    TERMINAL,
    Change,
    HostRecord,
    RolloutRecord,
    RolloutStatus,
)
from controller.state.rollout_encoding import (
    Parts,
    base_key,
    changes_key,
    changes_prefix,
    decode_header,
    decode_hosts,
    encode_header,
    encode_hosts,
    encode_record,
    header_key,
)
from controller.state.store import (
    CAS_ATTEMPTS,
    KV_TIMEOUT,
    NotFound,
    RolloutConflict,
    StaleRecord,
    kv_drop,
    kv_drop_before,
    kv_get,
    kv_keys,
    kv_latest,
)
from protocol.errors import BrokerError

CHANGING_READS = 3
"""Reads of a record whose parts are replaced while it is read, before giving up."""
REBASE_AFTER_CHANGES = 256
REBASE_AFTER_BYTES = 1024 * 1024
"""A write puts all hosts in a new base once the changes since the last one are this
many, or this large and larger than the base: a reader reads a base and some changes."""
TIDY_AFTER_CHANGES = 8
"""``tidy`` (the leader, when it has nothing else to do) puts all hosts in a new base once
the changes are this many: a new base of a large fleet costs a pass tens of milliseconds,
which every answer that came meanwhile would wait for."""


@dataclass(frozen=True)
class Stored:
    record: RolloutRecord
    revision: int
    """The header's revision: compare-and-set against it."""
    apart: bool = True
    """Its hosts are kept apart from the header (False: the header holds them all)."""
    parts: Parts = field(default_factory=Parts)
    changes_size: int = 0
    """Bytes of the changes written since its base."""
    base_size: int = 0


@dataclass(frozen=True)
class _Base:
    name: str | None
    hosts: dict[str, HostRecord]
    size: int


class RolloutStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._decoded: dict[str, Stored] = {}
        """The last record read or written of each unfinished rollout: the leader reads
        its rollouts on every pass, and a large fleet's hosts are most of a pass."""
        self._bases: dict[str, _Base] = {}
        """Each unfinished rollout's base last read or written here."""

    async def get(self, rollout_id: str) -> Stored | None:
        """The record as it stands: its header, then the parts it names. Should a part be
        gone (a newer write replaced the base, and purged what it replaced), read again."""
        for _ in range(CHANGING_READS):
            entry = await kv_get(self._kv, header_key(rollout_id))
            if entry is None or entry.value is None:
                self._forget(rollout_id)
                return None
            known = self._decoded.get(rollout_id)
            if known is not None and known.revision == entry.revision:
                return known
            header = decode_header(entry.value)
            revision = entry.revision or 0
            if not header.apart:
                return self._remember(Stored(header.record, revision, apart=False))
            stored = await self._with_hosts(rollout_id, header.record, revision, header.parts)
            if stored is not None:
                return self._remember(stored)
            if not await self._changed(rollout_id, revision):
                raise ControllerError(f"rollout {rollout_id} in KV lacks a part its header names")
        raise RolloutConflict(f"rollout {rollout_id} kept changing while it was read")

    async def _changed(self, rollout_id: str, revision: int) -> bool:
        entry = await kv_get(self._kv, header_key(rollout_id))
        return entry is None or entry.revision != revision

    async def _with_hosts(
        self, rollout_id: str, header: RolloutRecord, revision: int, parts: Parts
    ) -> Stored | None:
        """The record the header and its parts make; None if a part is gone."""
        base = await self._base(rollout_id, parts.base)
        if base is None:
            return None
        hosts = dict(base.hosts)
        size = 0
        if parts.changes:
            found = await kv_latest(self._kv, changes_prefix(rollout_id))
            for name in parts.changes:
                change = found.get(changes_key(rollout_id, name))
                if change is None:
                    return None
                hosts.update(decode_hosts(change.value))
                size += len(change.value)
        record = header.model_copy(update={"hosts": hosts})
        return Stored(record, revision, parts=parts, changes_size=size, base_size=base.size)

    async def _base(self, rollout_id: str, name: str | None) -> _Base | None:
        base = self._bases.get(rollout_id)
        if base is None or base.name != name:
            entry = await kv_get(self._kv, base_key(rollout_id, name))
            if entry is None or not entry.value:
                return None
            base = _Base(name, decode_hosts(entry.value), len(entry.value))
            self._bases[rollout_id] = base
        return base

    def _remember(self, stored: Stored) -> Stored:
        if stored.record.status in TERMINAL:
            self._forget(stored.record.id)
        else:
            self._decoded[stored.record.id] = stored
        return stored

    def _forget(self, rollout_id: str) -> None:
        self._decoded.pop(rollout_id, None)
        self._bases.pop(rollout_id, None)

    async def create(self, record: RolloutRecord) -> Stored:
        """The hosts first, then the header: a header is never without its hosts."""
        if await kv_get(self._kv, header_key(record.id)) is not None:
            raise RolloutConflict(f"rollout {record.id} already exists")
        base = encode_hosts(record.hosts)
        try:
            await asyncio.wait_for(self._kv.put(base_key(record.id), base), KV_TIMEOUT)
            revision = await asyncio.wait_for(
                self._kv.create(header_key(record.id), encode_header(record, Parts())),
                KV_TIMEOUT,
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RolloutConflict(f"rollout {record.id} already exists") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {record.id} failed: {exc!r}") from exc
        self._bases[record.id] = _Base(None, record.hosts, len(base))
        return self._remember(Stored(record, revision, base_size=len(base)))

    async def update(self, record: RolloutRecord, revision: int) -> Stored:
        """Compare-and-set: fails with StaleRecord if anyone wrote since ``revision``."""
        known = self._decoded.get(record.id)
        if known is not None and known.revision != revision:
            known = None  # not read here at that revision: every host is written
        if record.status in TERMINAL:
            new_revision = await self._set_header(record.id, encode_record(record), revision)
            with suppress(BrokerError):  # it took effect; the leader drops them again
                await self.drop_parts(record.id)
            return self._remember(Stored(record, new_revision, apart=False))
        if known is None or not known.apart or _rebase_due(known):
            return await self._rebase(record, revision)
        changed = _changed(record.hosts, known.record.hosts)
        parts, size = known.parts, known.changes_size
        if changed:
            name = _part_name(revision)
            data = encode_hosts(changed)
            await self._put(record.id, changes_key(record.id, name), data)
            parts, size = Parts(parts.base, (*parts.changes, name)), size + len(data)
        new_revision = await self._set_header(record.id, encode_header(record, parts), revision)
        written = Stored(
            record, new_revision, parts=parts, changes_size=size, base_size=known.base_size
        )
        return self._remember(written)

    def untidy(self) -> list[str]:
        """The unfinished rollouts last read or written here with many changes on their
        base."""
        return [rollout_id for rollout_id, known in self._decoded.items() if _untidy(known)]

    async def tidy(self, rollout_id: str) -> bool:
        """Every host into a new base now, if the changes are many; False if there was
        nothing to do, or someone wrote since this store last read or wrote it."""
        known = self._decoded.get(rollout_id)
        if known is None or not _untidy(known):
            return False
        if await self._changed(rollout_id, known.revision):
            self._forget(rollout_id)  # finished or written elsewhere: read again if driven
            return False
        try:
            await self._rebase(known.record, known.revision)
        except StaleRecord:  # written in between
            self._forget(rollout_id)
            return False
        return True

    def keep_only(self, rollout_ids: set[str]) -> None:
        """Forget the rollouts the leader no longer drives (superseded, finished by
        another): nothing tidies them any more."""
        for rollout_id in [r for r in self._decoded if r not in rollout_ids]:
            self._forget(rollout_id)

    async def _rebase(self, record: RolloutRecord, revision: int) -> Stored:
        """Every host into a new base, named by a new header; what it replaced is purged."""
        name = _part_name(revision)
        data = encode_hosts(record.hosts)
        sequence = await self._put(record.id, base_key(record.id, name), data)
        parts = Parts(base=name)
        try:
            new_revision = await self._set_header(record.id, encode_header(record, parts), revision)
        except StaleRecord:  # named by no header: of no use to anyone (a part is small)
            with suppress(BrokerError):
                await kv_drop(self._kv, base_key(record.id, name))
            raise
        self._bases[record.id] = _Base(name, record.hosts, len(data))
        stored = self._remember(Stored(record, new_revision, parts=parts, base_size=len(data)))
        # Entries older than the new base are named by no header that can still be
        # written on: a writer reads this header before it writes a part of its own.
        for keys in (f"{changes_prefix(record.id)}>", f"{base_key(record.id)}.>"):
            with suppress(BrokerError):  # else left for the next base, or the end, to purge
                await kv_drop_before(self._kv, keys, sequence)
        return stored

    async def _put(self, rollout_id: str, key: str, data: bytes) -> int:
        try:
            return await asyncio.wait_for(self._kv.put(key, data), KV_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {rollout_id} failed: {exc!r}") from exc

    async def _set_header(self, rollout_id: str, data: bytes, revision: int) -> int:
        try:
            return await asyncio.wait_for(
                self._kv.update(header_key(rollout_id), data, last=revision), KV_TIMEOUT
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StaleRecord(f"rollout {rollout_id} changed since revision {revision}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {rollout_id} failed: {exc!r}") from exc

    async def drop_parts(self, rollout_id: str) -> None:
        """A finished rollout's header holds it whole: its parts are of no more use (again
        by the leader once it finished, in case a crash came between)."""
        await kv_drop(self._kv, base_key(rollout_id))
        await kv_drop(self._kv, f"{base_key(rollout_id)}.>")
        await kv_drop(self._kv, f"{changes_prefix(rollout_id)}>")

    async def mutate(self, rollout_id: str, change: Change) -> RolloutRecord:
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
            await asyncio.wait_for(
                self._kv.create(_active_key(service), rollout_id.encode()), KV_TIMEOUT
            )
            return
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            conflict = exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV claim of {service} failed: {exc!r}") from exc
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
                await asyncio.wait_for(
                    self._kv.update(_active_key(service), rollout_id.encode(), last=entry.revision),
                    KV_TIMEOUT,
                )
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass  # another took it meanwhile: a conflict like any other
            except (nats.errors.Error, TimeoutError) as exc:
                raise BrokerError(f"KV claim of {service} failed: {exc!r}") from exc
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
            await kv_drop(self._kv, _active_key(service))


def _active_key(service: str) -> str:
    return f"active.{service}"


def _untidy(known: Stored) -> bool:
    return known.apart and len(known.parts.changes) >= TIDY_AFTER_CHANGES


def _rebase_due(known: Stored) -> bool:
    changes = known.parts.changes
    big = known.changes_size >= max(REBASE_AFTER_BYTES, known.base_size)
    return len(changes) >= REBASE_AFTER_CHANGES or big


def _part_name(revision: int) -> str:
    """A new part's name: the header revision it is written on, and a random tail, so
    two writers on the same revision never write the same entry."""
    return f"{revision}-{secrets.token_hex(4)}"


def _changed(
    hosts: Mapping[str, HostRecord], known: Mapping[str, HostRecord]
) -> dict[str, HostRecord]:
    """The entries of ``hosts`` that differ from what is on record."""
    candidates = replaced(hosts, known)
    if candidates is None:  # other hosts: each looked up
        candidates = [host for host in hosts if known.get(host) is not hosts[host]]
    return {host: hosts[host] for host in candidates if known.get(host) != hosts[host]}
