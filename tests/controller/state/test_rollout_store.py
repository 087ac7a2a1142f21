"""Rollout records in KV, kept in parts: a pass writes what changed, and every reader
(another controller, fleetctl) reads back exactly the record that was written.

A real nats-server; each reader that stands for another process is a store of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.kv import KeyValue

from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutStatus,
)
from controller.state import rollout_store
from controller.state.rollout_encoding import decode_hosts, decode_record, encode_record
from controller.state.rollout_store import RolloutStore
from controller.state.store import StaleRecord, kv_keys, kv_latest
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def rollout(hosts: int) -> RolloutRecord:
    return web_rollout({f"host-{i:05d}": HostRecord(since=NOW) for i in range(hosts)}, NOW)


def updating(record: RolloutRecord, *hosts: str) -> RolloutRecord:
    later = NOW + timedelta(seconds=1)
    changed = {
        host: HostRecord(phase=HostPhase.UPDATING, since=later, command_id=f"cmd-{host}")
        for host in hosts
    }
    return record.model_copy(update={"hosts": {**record.hosts, **changed}, "updated_at": later})


async def read_fresh(bucket: KeyValue, rollout_id: str) -> RolloutRecord:
    """The record as another process reads it: a store with nothing remembered."""
    stored = await RolloutStore(bucket).get(rollout_id)
    assert stored is not None
    return stored.record


async def parts_of(bucket: KeyValue, prefix: str) -> dict[str, dict[str, HostRecord]]:
    """Every entry under ``prefix``, as the hosts it holds."""
    return {key: decode_hosts(e.value) for key, e in (await kv_latest(bucket, prefix)).items()}


async def test_a_pass_writes_only_the_hosts_it_changed_and_others_read_the_whole_record(
    bucket: KeyValue,
) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(50))
    assert await kv_keys(bucket, "hosts.web-r2.") == []

    changed = updating(created.record, "host-00003", "host-00017")
    written = await leader.update(changed, created.revision)

    [first] = (await parts_of(bucket, "hosts.web-r2.")).values()
    assert first == {h: changed.hosts[h] for h in ("host-00003", "host-00017")}
    assert await read_fresh(bucket, "web-r2") == changed
    again = updating(changed, "host-00003", "host-00040")  # 00003 is as it was
    await leader.update(again, written.revision)
    parts = list((await parts_of(bucket, "hosts.web-r2.")).values())
    assert first in parts
    assert {"host-00040": again.hosts["host-00040"]} in parts
    assert len(parts) == 2
    assert await read_fresh(bucket, "web-r2") == again


async def test_a_plan_made_before_an_operators_write_is_refused_and_its_hosts_are_not_read(
    bucket: KeyValue,
) -> None:
    leader, operator = RolloutStore(bucket), RolloutStore(bucket)
    created = await leader.create(rollout(10))
    paused = await operator.mutate("web-r2", lambda r: r.model_copy(update={"paused": True}))

    with pytest.raises(StaleRecord):
        await leader.update(updating(created.record, "host-00001"), created.revision)

    # Its hosts went into a part before its header was refused: no header names it.
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 1
    assert await read_fresh(bucket, "web-r2") == paused
    # The leader reads what the operator wrote, and plans again from it.
    current = await leader.get("web-r2")
    assert current is not None
    assert current.record == paused


async def test_a_leader_reads_again_the_hosts_another_leader_wrote_meanwhile(
    bucket: KeyValue,
) -> None:
    first, second = RolloutStore(bucket), RolloutStore(bucket)
    created = await first.create(rollout(10))
    assert (await first.get("web-r2")) == created
    taken = await second.get("web-r2")
    assert taken is not None
    by_second = updating(taken.record, "host-00005")
    await second.update(by_second, taken.revision)

    back = await first.get("web-r2")

    assert back is not None
    assert back.record == by_second


async def test_a_finished_rollout_is_kept_whole_in_its_header_and_its_parts_are_dropped(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_store, "REBASE_AFTER_CHANGES", 1)
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(20))
    running = await leader.update(updating(created.record, "host-00002"), created.revision)
    running = await leader.update(updating(running.record, "host-00003"), running.revision)
    running = await leader.update(updating(running.record, "host-00004"), running.revision)
    assert len(await kv_keys(bucket, "base.web-r2.")) == 1  # a later base, beside the first
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 1
    done = {h: HostRecord(phase=HostPhase.DONE, since=NOW) for h in running.record.hosts}
    complete = running.record.model_copy(update={"hosts": done, "status": RolloutStatus.COMPLETE})

    await leader.update(complete, running.revision)

    entry = await bucket.get("rollout.web-r2")
    assert entry.value is not None
    assert decode_record(entry.value) == complete
    assert await kv_keys(bucket, "hosts.web-r2.") == []
    assert await kv_keys(bucket, "base.web-r2.") == []
    assert "base.web-r2" not in await kv_keys(bucket, "")
    assert await RolloutStore(bucket).all() == [complete]


async def test_once_its_changes_are_many_a_write_puts_every_host_in_a_new_base(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_store, "REBASE_AFTER_CHANGES", 3)
    leader = RolloutStore(bucket)
    stored = await leader.create(rollout(10))
    for host in ("host-00001", "host-00002", "host-00003"):
        stored = await leader.update(updating(stored.record, host), stored.revision)
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 3
    assert await kv_keys(bucket, "base.web-r2.") == []

    fourth = updating(stored.record, "host-00004")
    await leader.update(fourth, stored.revision)

    # One base of all ten hosts as the fourth write left them; the changes it replaced
    # are purged, and a reader reads the base alone.
    [base] = (await parts_of(bucket, "base.web-r2.")).values()
    assert base == fourth.hosts
    assert await kv_keys(bucket, "hosts.web-r2.") == []
    assert await read_fresh(bucket, "web-r2") == fourth


async def test_tidy_puts_many_changes_into_a_new_base_and_leaves_a_few_alone(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_store, "TIDY_AFTER_CHANGES", 3)
    leader = RolloutStore(bucket)
    stored = await leader.create(rollout(10))
    for host in ("host-00001", "host-00002"):
        stored = await leader.update(updating(stored.record, host), stored.revision)

    # Two changes: not yet many.
    assert leader.untidy() == []
    assert await leader.tidy("web-r2") is False
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 2
    assert await kv_keys(bucket, "base.web-r2.") == []

    third = updating(stored.record, "host-00003")
    await leader.update(third, stored.revision)
    assert leader.untidy() == ["web-r2"]
    assert await leader.tidy("web-r2") is True

    [base] = (await parts_of(bucket, "base.web-r2.")).values()
    assert base == third.hosts
    assert await kv_keys(bucket, "hosts.web-r2.") == []
    assert leader.untidy() == []
    assert await read_fresh(bucket, "web-r2") == third
    # The leader goes on from the new base: its next write is one change on it.
    tidied = await leader.get("web-r2")
    assert tidied is not None
    fourth = updating(tidied.record, "host-00004")
    await leader.update(fourth, tidied.revision)
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 1
    assert len(await kv_keys(bucket, "base.web-r2.")) == 1
    assert await read_fresh(bucket, "web-r2") == fourth


async def test_tidy_after_another_writer_wrote_changes_nothing_and_reads_again(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_store, "TIDY_AFTER_CHANGES", 1)
    leader, operator = RolloutStore(bucket), RolloutStore(bucket)
    created = await leader.create(rollout(10))
    await leader.update(updating(created.record, "host-00001"), created.revision)
    taken = await operator.get("web-r2")
    assert taken is not None
    by_operator = updating(taken.record, "host-00002")
    await operator.update(by_operator, taken.revision)

    assert await leader.tidy("web-r2") is False

    # The operator's write stands: no base was put over it, or left beside it, and the
    # leader has nothing left to tidy until it reads the record again.
    assert await kv_keys(bucket, "base.web-r2.") == []
    assert leader.untidy() == []
    assert await read_fresh(bucket, "web-r2") == by_operator
    again = await leader.get("web-r2")
    assert again is not None
    assert again.record == by_operator


async def test_a_new_base_refused_because_another_wrote_first_is_not_left_behind(
    bucket: KeyValue,
) -> None:
    created = await RolloutStore(bucket).create(rollout(10))
    operator = RolloutStore(bucket)
    taken = await operator.get("web-r2")
    assert taken is not None
    await operator.update(updating(taken.record, "host-00003"), taken.revision)

    # A store that never read the record writes all of it: a new base, then the header.
    with pytest.raises(StaleRecord):
        await RolloutStore(bucket).update(updating(created.record, "host-00002"), created.revision)

    assert await kv_keys(bucket, "base.web-r2.") == []
    assert len(await kv_keys(bucket, "hosts.web-r2.")) == 1  # the operator's change


async def test_a_reader_whose_parts_are_replaced_while_it_reads_reads_the_record_again(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_store, "REBASE_AFTER_CHANGES", 1)
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(10))
    first = await leader.update(updating(created.record, "host-00001"), created.revision)
    second = updating(first.record, "host-00002")

    async def rebase() -> None:  # between the reader's header and the parts it names
        await leader.update(second, first.revision)

    reader = RolloutStore(RebaseBeforeBaseRead(bucket, rebase))
    read = await reader.get("web-r2")

    assert read is not None
    assert read.record == second


class RebaseBeforeBaseRead(KeyValue):
    """The bucket as a reader uses it, with ``rebase`` run once, just before the first
    read of a rollout's base: it purges the changes the header just read names."""

    def __init__(self, kv: KeyValue, rebase: Callable[[], Awaitable[None]]) -> None:
        super().__init__(kv._name, kv._stream, kv._pre, kv._js, kv._direct)
        self._rebase: Callable[[], Awaitable[None]] | None = rebase

    async def get(
        self, key: str, revision: int | None = None, validate_keys: bool = True
    ) -> KeyValue.Entry:
        if key.startswith("base.") and self._rebase is not None:
            rebase, self._rebase = self._rebase, None
            await rebase()
        return await super().get(key, revision, validate_keys)


async def test_a_reader_whose_rollout_finishes_while_it_reads_its_changes_reads_it_finished(
    bucket: KeyValue,
) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(10))
    running = await leader.update(updating(created.record, "host-00001"), created.revision)
    done = {h: HostRecord(phase=HostPhase.DONE, since=NOW) for h in running.record.hosts}
    complete = running.record.model_copy(update={"hosts": done, "status": RolloutStatus.COMPLETE})

    async def finish() -> None:  # its changes are purged before the reader gets to them
        await leader.update(complete, running.revision)

    js = FinishDuringRead(bucket._js._nc, finish)
    reader = RolloutStore(KeyValue(bucket._name, bucket._stream, bucket._pre, js, bucket._direct))
    # Well within the time a read waits for entries that never come (KV_TIMEOUT, 5 s):
    # it asks whether any are still coming instead.
    read = await asyncio.wait_for(reader.get("web-r2"), 4)

    assert js.finished
    assert read is not None
    assert read.record == complete


class FinishDuringRead(JetStreamContext):
    """The bucket's JetStream, running ``finish`` once, just after the first read of
    many entries at once (the changes a header names) has made its consumer: the
    consumer was told of entries that are purged before it sends them."""

    def __init__(self, client: Client, finish: Callable[[], Awaitable[None]]) -> None:
        super().__init__(client, timeout=5)
        self._finish: Callable[[], Awaitable[None]] | None = finish
        self.finished = False

    async def add_consumer(self, *args: Any, **kwargs: Any) -> ConsumerInfo:
        info = await super().add_consumer(*args, **kwargs)
        if self._finish is not None:
            finish, self._finish = self._finish, None
            await finish()
            self.finished = True
        return info


async def test_a_finish_whose_parts_cannot_be_purged_still_takes_effect(
    bucket: KeyValue,
) -> None:
    js = PurgesRefused(bucket._js._nc)
    leader = RolloutStore(KeyValue(bucket._name, bucket._stream, bucket._pre, js, bucket._direct))
    created = await leader.create(rollout(10))
    running = await leader.update(updating(created.record, "host-00001"), created.revision)
    complete = running.record.model_copy(update={"status": RolloutStatus.COMPLETE})

    written = await leader.update(complete, running.revision)  # no error: it is complete

    assert js.refused > 0
    assert written.record == complete
    assert await read_fresh(bucket, "web-r2") == complete
    await RolloutStore(bucket).drop_parts("web-r2")  # as the leader does again
    assert await kv_keys(bucket, "hosts.web-r2.") == []


class PurgesRefused(JetStreamContext):
    """The bucket's JetStream with every purge timing out."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, timeout=5)
        self.refused = 0

    async def purge_stream(self, *args: Any, **kwargs: Any) -> bool:
        self.refused += 1
        raise nats.errors.TimeoutError


async def test_a_record_kept_whole_by_an_older_controller_goes_on_in_parts(
    bucket: KeyValue,
) -> None:
    older = rollout(10)
    await bucket.create("rollout.web-r2", encode_record(older))
    leader = RolloutStore(bucket)
    read = await leader.get("web-r2")
    assert read is not None
    assert read.record == older

    changed = updating(older, "host-00009")
    await leader.update(changed, read.revision)

    assert await read_fresh(bucket, "web-r2") == changed


async def test_thousands_of_changed_hosts_are_all_read_back(bucket: KeyValue) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(3000))
    every = updating(created.record, *created.record.hosts)

    await leader.update(every, created.revision)

    [written] = (await parts_of(bucket, "hosts.web-r2.")).values()
    assert written == every.hosts
    assert await read_fresh(bucket, "web-r2") == every


async def test_a_store_that_did_not_read_a_record_writes_all_of_it(bucket: KeyValue) -> None:
    created = await RolloutStore(bucket).create(rollout(10))

    changed = updating(created.record, "host-00004")
    await RolloutStore(bucket).update(changed, created.revision)  # remembers nothing of it

    [base] = (await parts_of(bucket, "base.web-r2.")).values()
    assert base == changed.hosts
    assert await read_fresh(bucket, "web-r2") == changed


async def test_a_refused_write_of_a_store_that_did_not_read_the_record_changes_nothing(
    bucket: KeyValue,
) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(10))
    current = await leader.update(updating(created.record, "host-00001"), created.revision)
    stranger = updating(created.record, "host-00002", "host-00007")

    with pytest.raises(StaleRecord):  # planned on the first revision, by another store
        await RolloutStore(bucket).update(stranger, created.revision)

    assert await read_fresh(bucket, "web-r2") == current.record
