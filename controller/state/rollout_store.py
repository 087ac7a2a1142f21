"""Rollout records in KV ``fleet_rollouts``: read whole, written by what changed.

Callers see a whole ``RolloutRecord``; the store keeps a rollout in progress as a header,
the hosts as it began and one entry per host changed since (rollout_encoding.py). Every
write compare-and-sets the header first, so a plan made on a record someone else changed
(an operator's verb) is refused before any host entry is touched; then the changed hosts
are written. Only the leader changes hosts, and it always writes the header with them,
so a record read at a header revision it wrote itself is the one it remembers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from controller.rollouts.model import (
    TERMINAL,
    Change,
    HostRecord,
    RolloutRecord,
    RolloutStatus,
)
from controller.state.rollout_encoding import (
    base_key,
    decode_header,
    decode_host,
    decode_hosts,
    encode_header,
    encode_host,
    encode_hosts,
    encode_record,
    header_key,
    host_key,
    hosts_prefix,
)
from controller.state.store import (
    CAS_ATTEMPTS,
    KV_TIMEOUT,
    NotFound,
    RolloutConflict,
    StaleRecord,
    kv_drop,
    kv_get,
    kv_keys,
    kv_latest,
    kv_put_many,
)
from protocol.errors import BrokerError

CHANGING_READS = 3
"""Reads of a record whose header changes while it is read, before it is given as read."""
UNWRITTEN_PATIENCE = KV_TIMEOUT + 1.0
"""Seconds a reader waits for the hosts a header names to land: a live writer's host
writes land, or time out and are never sent, within KV_TIMEOUT of its header. Past that,
the writer failed between the two."""
FIRST_WAIT, LONGEST_WAIT = 0.02, 0.5


@dataclass(frozen=True)
class ReadHosts:
    records: dict[str, HostRecord]
    revisions: dict[str, int]
    """Each host entry's revision (hosts as they began have none)."""

    def missing(self, changed: frozenset[str], header_revision: int) -> frozenset[str]:
        """The hosts a header's write changed whose entries have not landed after it."""
        return frozenset(host for host in changed if self.revisions.get(host, 0) <= header_revision)


@dataclass(frozen=True)
class Stored:
    record: RolloutRecord
    revision: int
    """The header's revision: compare-and-set against it."""
    apart: bool = True
    """Its hosts are kept apart from the header (False: the header holds them all)."""
    torn: bool = False
    """Some hosts its header names were never written (their writer failed): they are as
    they were before, and the next write writes every host."""


class RolloutStore:
    def __init__(self, kv: KeyValue, unwritten_patience: float = UNWRITTEN_PATIENCE) -> None:
        self._kv = kv
        self._patience = unwritten_patience
        self._decoded: dict[str, Stored] = {}
        """The last record read or written of each unfinished rollout: the leader reads
        its rollouts on every pass, and a large fleet's hosts are most of a pass."""
        self._bases: dict[str, dict[str, HostRecord]] = {}
        """Each unfinished rollout's hosts as it began: written once, read once."""
        self._failed: dict[str, int] = {}
        """Header revisions whose host writes failed here: not waited for."""

    async def get(self, rollout_id: str) -> Stored | None:
        """The record as it stands. Its hosts are read after its header. A read during
        which the header changed is made again (a few times: a rollout changed many times
        a second is then given as read, hosts a pass newer than the header). A read that
        finds a host the header's write changed not written yet waits for it; when it
        never comes (the writer failed half-way; not waited for when that writer was this
        store), the record is given ``torn``, with that host as it was before."""
        latest: Stored | None = None
        changes, pause, loop = 0, FIRST_WAIT, asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        failed_here = self._failed.get(rollout_id)
        while changes < CHANGING_READS:
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
            try:
                hosts = await self._hosts(rollout_id)
            except BrokerError:
                if await self._changed(rollout_id, revision):
                    changes += 1
                    continue  # finished meanwhile: its parts were purged
                raise
            if hosts is None:
                changes += 1
                continue
            record = header.record.model_copy(update={"hosts": hosts.records})
            latest = Stored(record, revision)
            if await self._changed(rollout_id, revision):
                changes += 1
                continue
            if not hosts.missing(header.changed, revision):
                return self._remember(latest)
            if revision == failed_here or loop.time() >= deadline:
                # They never come: remembered as such, so it is not waited for again.
                return self._remember(dataclasses.replace(latest, torn=True))
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_WAIT)
        if latest is None:
            raise RolloutConflict(f"rollout {rollout_id} kept changing while it was read")
        return latest

    async def _changed(self, rollout_id: str, revision: int) -> bool:
        entry = await kv_get(self._kv, header_key(rollout_id))
        return entry is None or entry.revision != revision

    async def _hosts(self, rollout_id: str) -> ReadHosts | None:
        base = self._bases.get(rollout_id)
        if base is None:
            entry = await kv_get(self._kv, base_key(rollout_id))
            if entry is None or not entry.value:
                return None
            base = self._bases[rollout_id] = decode_hosts(entry.value)
        prefix = hosts_prefix(rollout_id)
        changed = await kv_latest(self._kv, prefix)
        hosts = dict(base)
        revisions: dict[str, int] = {}
        for key, latest in changed.items():
            host = key.removeprefix(prefix)
            hosts[host] = decode_host(latest.value)
            revisions[host] = latest.revision
        return ReadHosts(hosts, revisions)

    def _remember(self, stored: Stored) -> Stored:
        if stored.record.status in TERMINAL:
            self._forget(stored.record.id)
        else:
            self._decoded[stored.record.id] = stored
        return stored

    def _forget(self, rollout_id: str) -> None:
        self._decoded.pop(rollout_id, None)
        self._bases.pop(rollout_id, None)
        self._failed.pop(rollout_id, None)

    async def create(self, record: RolloutRecord) -> Stored:
        """The hosts first, then the header: a header is never without its hosts."""
        if await kv_get(self._kv, header_key(record.id)) is not None:
            raise RolloutConflict(f"rollout {record.id} already exists")
        try:
            await asyncio.wait_for(
                self._kv.put(base_key(record.id), encode_hosts(record.hosts)), KV_TIMEOUT
            )
            revision = await asyncio.wait_for(
                self._kv.create(header_key(record.id), encode_header(record)), KV_TIMEOUT
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RolloutConflict(f"rollout {record.id} already exists") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {record.id} failed: {exc!r}") from exc
        return self._remember(Stored(record, revision))

    async def update(self, record: RolloutRecord, revision: int) -> Stored:
        """Compare-and-set: fails with StaleRecord if anyone wrote since ``revision``."""
        known = self._decoded.get(record.id)
        if known is None or known.revision != revision or known.torn:
            known = None  # not read here at that revision (or torn): every host written
        if record.status in TERMINAL:
            new_revision = await self._set_header(record.id, encode_record(record), revision)
            await self.drop_parts(record.id)
            return self._remember(Stored(record, new_revision, apart=False))
        if known is None:  # every host is written below; a base is only needed at all
            await self._ensure_base(record.id, record.hosts)  # if the record was whole
        elif not known.apart:  # kept whole until now: its hosts become the base
            await self._put_base(record.id, known.record.hosts)
        before = known.record.hosts if known is not None else {}
        changed = {
            host: entry
            for host, entry in record.hosts.items()
            if before.get(host) is not entry and before.get(host) != entry
        }
        new_revision = await self._set_header(record.id, encode_header(record, changed), revision)
        entries = {host_key(record.id, host): encode_host(e) for host, e in changed.items()}
        try:
            await kv_put_many(self._kv, entries)
        except BrokerError:
            self._forget(record.id)  # some hosts may be unwritten: read them all again,
            self._failed[record.id] = new_revision  # without waiting for them
            raise
        return self._remember(Stored(record, new_revision))

    async def _set_header(self, rollout_id: str, data: bytes, revision: int) -> int:
        try:
            return await asyncio.wait_for(
                self._kv.update(header_key(rollout_id), data, last=revision), KV_TIMEOUT
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise StaleRecord(f"rollout {rollout_id} changed since revision {revision}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {rollout_id} failed: {exc!r}") from exc

    async def _put_base(self, rollout_id: str, hosts: dict[str, HostRecord]) -> None:
        await kv_put_many(self._kv, {base_key(rollout_id): encode_hosts(hosts)})
        self._bases[rollout_id] = hosts

    async def _ensure_base(self, rollout_id: str, hosts: dict[str, HostRecord]) -> None:
        """A base if there is none, never replacing one: this write's header may yet be
        refused, and the base stands for the hosts of the header that is there."""
        self._bases.pop(rollout_id, None)
        try:
            await asyncio.wait_for(
                self._kv.create(base_key(rollout_id), encode_hosts(hosts)), KV_TIMEOUT
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            return
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of rollout {rollout_id} failed: {exc!r}") from exc

    async def drop_parts(self, rollout_id: str) -> None:
        """A finished rollout's header holds it whole: its parts are of no more use (again
        by the leader once it finished, in case a crash came between)."""
        await kv_drop(self._kv, base_key(rollout_id))
        await kv_drop(self._kv, f"{hosts_prefix(rollout_id)}>")

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
