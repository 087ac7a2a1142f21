"""A write that fails half-way, on a real nats-server.

A pass writes the hosts it changed into a part of their own, then compare-and-sets the
header that names it. A reader in between reads the record as it was, whole; a write
whose part fails changes nothing; a header write that fails, or that landed though its
answer never came, loses nothing either.
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
from controller.state.store import StaleRecord, kv_keys
from protocol.errors import BrokerError
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=1)


def rollout(hosts: int) -> RolloutRecord:
    return web_rollout({f"host-{i:05d}": HostRecord(since=NOW) for i in range(hosts)}, NOW)


def failed(record: RolloutRecord, host: str) -> RolloutRecord:
    entry = HostRecord(phase=HostPhase.FAILED, since=LATER, detail="failed: unhealthy")
    return record.model_copy(
        update={"hosts": {**record.hosts, host: entry}, "updated_at": LATER, "paused": True}
    )


class FailingWrites(KeyValue):
    """The bucket with writes of keys starting with ``prefix`` held until ``release`` is
    set, and then failed (``fail``) or, with ``after``, made and then failed: the answer
    lost on its way back."""

    def __init__(
        self, kv: KeyValue, prefix: str, *, fail: bool = True, after: bool = False
    ) -> None:
        super().__init__(kv._name, kv._stream, kv._pre, kv._js, kv._direct)
        self.prefix, self.fail, self.after = prefix, fail, after
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def _held(self, key: str) -> bool:
        """Whether this write of ``key`` is to fail."""
        if not key.startswith(self.prefix):
            return False
        self.holding.set()
        await self.release.wait()
        return self.fail

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        if await self._held(key) and not self.after:
            raise nats.errors.TimeoutError
        revision = await super().put(key, value, validate_keys)
        if key.startswith(self.prefix) and self.fail and self.after:
            raise nats.errors.TimeoutError
        return revision

    async def update(
        self, key: str, value: bytes, last: int | None = None, validate_keys: bool = True
    ) -> int:
        if await self._held(key) and not self.after:
            raise nats.errors.TimeoutError
        revision = await super().update(key, value, last, validate_keys)
        if key.startswith(self.prefix) and self.fail and self.after:
            raise nats.errors.TimeoutError
        return revision


async def test_a_reader_between_a_part_and_its_header_reads_the_record_as_it_was(
    bucket: KeyValue,
) -> None:
    held = FailingWrites(bucket, "rollout.", fail=False)
    leader = RolloutStore(held)
    created = await leader.create(rollout(10))
    held.release.clear()
    paused = failed(created.record, "host-00003")
    writing = asyncio.create_task(leader.update(paused, created.revision))
    await asyncio.wait_for(held.holding.wait(), 10)  # the part is written, no header yet
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 1

    before = await asyncio.wait_for(RolloutStore(bucket).get("web-r2"), 5)
    held.release.set()
    await asyncio.wait_for(writing, 10)
    after = await RolloutStore(bucket).get("web-r2")

    assert before is not None
    assert after is not None
    assert before.record == created.record
    assert after.record == paused


@pytest.mark.parametrize("failing", ["hosts.", "rollout."], ids=["its part", "its header"])
async def test_a_write_that_fails_changes_nothing_and_the_next_one_goes_on(
    bucket: KeyValue, failing: str
) -> None:
    held = FailingWrites(bucket, failing)
    leader = RolloutStore(held)
    created = await leader.create(rollout(10))

    with pytest.raises(BrokerError, match="KV write of rollout web-r2 failed"):
        await leader.update(failed(created.record, "host-00003"), created.revision)

    fresh = await RolloutStore(bucket).get("web-r2")
    assert fresh is not None
    assert (fresh.record, fresh.revision) == (created.record, created.revision)
    held.fail = False
    retried = failed(created.record, "host-00004")
    await leader.update(retried, created.revision)
    final = await RolloutStore(bucket).get("web-r2")
    assert final is not None
    assert final.record == retried


async def test_a_header_write_whose_answer_was_lost_is_read_back_whole(bucket: KeyValue) -> None:
    held = FailingWrites(bucket, "rollout.", after=True)
    leader = RolloutStore(held)
    created = await leader.create(rollout(10))
    landed = failed(created.record, "host-00003")

    with pytest.raises(BrokerError, match="KV write of rollout web-r2 failed"):
        await leader.update(landed, created.revision)

    # It took effect: every reader, the leader too, reads it with its hosts; a plan the
    # leader made on the revision before is refused.
    held.fail = False
    fresh = await RolloutStore(bucket).get("web-r2")
    assert fresh is not None
    assert fresh.record == landed
    with pytest.raises(StaleRecord):
        await leader.update(failed(created.record, "host-00004"), created.revision)
    again = await leader.get("web-r2")
    assert again is not None
    assert again.record == landed
