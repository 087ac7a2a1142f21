"""Rollout records in KV, kept in parts: a pass writes what changed, and every reader
(another controller, fleetctl) reads back exactly the record that was written.

A real nats-server; each reader that stands for another process is a store of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.js.kv import KeyValue

from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutStatus,
)
from controller.state.rollout_encoding import decode_record, encode_record
from controller.state.rollout_store import RolloutStore
from controller.state.store import StaleRecord, kv_keys
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


async def test_a_pass_writes_only_the_hosts_it_changed_and_others_read_the_whole_record(
    bucket: KeyValue,
) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(50))
    assert await kv_keys(bucket, "host.web-r2.") == []

    changed = updating(created.record, "host-00003", "host-00017")
    written = await leader.update(changed, created.revision)

    assert await kv_keys(bucket, "host.web-r2.") == [
        "host.web-r2.host-00003",
        "host.web-r2.host-00017",
    ]
    assert await read_fresh(bucket, "web-r2") == changed
    again = updating(changed, "host-00003", "host-00040")  # 00003 is as it was
    await leader.update(again, written.revision)
    assert len(await kv_keys(bucket, "host.web-r2.")) == 3
    assert await read_fresh(bucket, "web-r2") == again


async def test_a_plan_made_before_an_operators_write_is_refused_and_writes_no_host(
    bucket: KeyValue,
) -> None:
    leader, operator = RolloutStore(bucket), RolloutStore(bucket)
    created = await leader.create(rollout(10))
    paused = await operator.mutate("web-r2", lambda r: r.model_copy(update={"paused": True}))

    with pytest.raises(StaleRecord):
        await leader.update(updating(created.record, "host-00001"), created.revision)

    assert await kv_keys(bucket, "host.web-r2.") == []
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
    bucket: KeyValue,
) -> None:
    leader = RolloutStore(bucket)
    created = await leader.create(rollout(20))
    running = await leader.update(updating(created.record, "host-00002"), created.revision)
    done = {h: HostRecord(phase=HostPhase.DONE, since=NOW) for h in running.record.hosts}
    complete = running.record.model_copy(update={"hosts": done, "status": RolloutStatus.COMPLETE})

    await leader.update(complete, running.revision)

    entry = await bucket.get("rollout.web-r2")
    assert entry.value is not None
    assert decode_record(entry.value) == complete
    assert await kv_keys(bucket, "host.web-r2.") == []
    assert await kv_keys(bucket, "base.web-r2") == []
    assert await RolloutStore(bucket).all() == [complete]


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

    assert len(await kv_keys(bucket, "host.web-r2.")) == 3000
    assert await read_fresh(bucket, "web-r2") == every


async def test_a_store_that_did_not_read_a_record_writes_all_of_it(bucket: KeyValue) -> None:
    older = rollout(10)
    await bucket.create("rollout.web-r2", encode_record(older))
    read = await RolloutStore(bucket).get("web-r2")
    assert read is not None

    changed = updating(older, "host-00004")
    await RolloutStore(bucket).update(changed, read.revision)  # remembers nothing of it

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
