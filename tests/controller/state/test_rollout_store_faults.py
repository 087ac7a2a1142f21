"""The window between a pass's header and its host entries, on a real nats-server.

The leader compare-and-sets a rollout's header, then writes the hosts that pass changed.
A reader that comes in between must not take the header with the hosts of the pass
before (an operator's `resume` would count the failures wrong); a writer that fails in
between leaves a record that is still read, with those hosts as they were, and that the
next pass writes whole again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats
import nats.errors
import pytest
from nats.js.kv import KeyValue

from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord
from controller.state.rollout_store import RolloutStore
from controller.state.store import kv_latest
from protocol.errors import BrokerError
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=1)
PATIENCE = 0.5
"""How long a reader here waits for hosts that never come (the product waits 6 s)."""


def rollout(hosts: int) -> RolloutRecord:
    return web_rollout({f"host-{i:05d}": HostRecord(since=NOW) for i in range(hosts)}, NOW)


def failed(record: RolloutRecord, host: str) -> RolloutRecord:
    entry = HostRecord(phase=HostPhase.FAILED, since=LATER, detail="failed: unhealthy")
    return record.model_copy(
        update={"hosts": {**record.hosts, host: entry}, "updated_at": LATER, "paused": True}
    )


class HeldHostWrites(KeyValue):
    """The bucket with every write of a host entry held until ``release`` is set, and
    then made (or, with ``fail``, timed out): a writer between header and hosts."""

    def __init__(self, kv: KeyValue, *, fail: bool = False) -> None:
        super().__init__(kv._name, kv._stream, kv._pre, kv._js, kv._direct)
        self.fail = fail
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        if key.startswith("host."):
            self.holding.set()
            await self.release.wait()
            if self.fail:
                raise nats.errors.TimeoutError
        return await super().put(key, value, validate_keys)


class HeaderReadsSeen(KeyValue):
    """The bucket as a reader uses it, telling when it has read a header ``reads`` times."""

    def __init__(self, kv: KeyValue, reads: int) -> None:
        super().__init__(kv._name, kv._stream, kv._pre, kv._js, kv._direct)
        self._left = reads
        self.seen = asyncio.Event()

    async def get(
        self, key: str, revision: int | None = None, validate_keys: bool = True
    ) -> KeyValue.Entry:
        entry = await super().get(key, revision, validate_keys)
        if key.startswith("rollout."):
            self._left -= 1
            if self._left <= 0:
                self.seen.set()
        return entry


async def test_a_reader_between_a_header_and_its_hosts_waits_for_the_hosts(
    bucket: KeyValue,
) -> None:
    held = HeldHostWrites(bucket)
    leader = RolloutStore(held)
    created = await leader.create(rollout(10))
    paused = failed(created.record, "host-00003")
    writing = asyncio.create_task(leader.update(paused, created.revision))
    await asyncio.wait_for(held.holding.wait(), 10)  # the header is written, no host yet

    # Seven rounds of two header reads (the record's, and the check that it did not
    # change meanwhile), over a second of waiting: the writer is slow, not gone.
    watched = HeaderReadsSeen(bucket, reads=14)
    reading = asyncio.create_task(RolloutStore(watched).get("web-r2"))
    await asyncio.wait_for(watched.seen.wait(), 10)
    held.release.set()
    read, _ = await asyncio.wait_for(asyncio.gather(reading, writing), 10)

    assert read is not None
    assert read.record.hosts["host-00003"].phase is HostPhase.FAILED
    assert read.record == paused


async def test_a_pass_whose_host_writes_failed_is_read_with_those_hosts_as_they_were(
    bucket: KeyValue,
) -> None:
    held = HeldHostWrites(bucket, fail=True)
    held.release.set()
    leader = RolloutStore(held, unwritten_patience=600.0)  # it must never wait here
    created = await leader.create(rollout(10))

    with pytest.raises(BrokerError, match="KV write failed"):
        await leader.update(failed(created.record, "host-00003"), created.revision)

    # The header of that pass stands; its host was never written and is as it was.
    torn = created.record.model_copy(update={"updated_at": LATER, "paused": True})
    reader = RolloutStore(bucket, unwritten_patience=PATIENCE)
    fresh = await reader.get("web-r2")
    assert fresh is not None
    assert (fresh.record, fresh.torn) == (torn, True)
    assert await reader.get("web-r2") is fresh  # known torn: not waited for again
    # The leader forgot what it meant to write and reads the same, without waiting for
    # hosts it knows it did not write (its patience would outlast the test); its next
    # pass writes every host again, after its header: a fresh reader gets all of it.
    again = await asyncio.wait_for(leader.get("web-r2"), 10)
    assert again is not None
    assert (again.record, again.torn) == (torn, True)
    held.fail = False
    retried = failed(torn, "host-00003")
    written = await leader.update(retried, again.revision)
    entries = await kv_latest(bucket, "host.web-r2.")
    assert len(entries) == 10
    assert min(e.revision for e in entries.values()) > written.revision
    final = await RolloutStore(bucket).get("web-r2")
    assert final is not None
    assert final.record == retried
