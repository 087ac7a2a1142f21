"""A wave larger than one pass starts goes out whole at once, by the passes that follow,
and never past max_unavailable.

A real leader (the executor) over a real nats-server; the hosts' side is a plain
subscriber that notes each update and never answers it, so nothing but the leader's own
passes can start more hosts. Its tick is a minute: a wave finished only at the next tick
would fail the wait below.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controller.broker import NatsServer
from controller.leader.executor import Executor
from controller.rollouts import budget
from controller.rollouts.budget import STARTS_PER_PASS
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from controller.settings import ControllerSettings
from controller.state import rollout_store
from controller.state.rollout_store import RolloutStore
from controller.state.store import kv_keys, open_buckets
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import ApplyCommand, utc_now
from protocol.spec import ServiceSpec
from tests.support.heartbeats import heartbeat
from tests.support.polling import eventually
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
FLEET, AT_ONCE = 450, 250
"""More hosts than one wave, and a wave more than one pass starts."""


@dataclass
class SilentHosts:
    updates: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    async def on_command(self, msg: Msg) -> None:
        command = decode(msg.data)
        if isinstance(command, ApplyCommand):
            self.updates.append(command.host)
        else:
            self.wrong.append(command.kind)


async def ready_rollout(
    client: Client, names: list[str], at_once: int
) -> tuple[RolloutRecord, RolloutStore]:
    """A running rollout whose hosts are all online, serving and pre-flighted."""
    now = utc_now()
    rollouts_kv, _, hosts_kv = await open_buckets(client.jetstream(timeout=5))
    running = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")
    for name in names:  # every host online and serving: each may start at once
        await hosts_kv.put(name, encode(heartbeat(name, {}, running, now)))
    ready = {h: HostRecord(phase=HostPhase.READY, since=now) for h in names}
    record = web_rollout(ready, now, RolloutStatus.RUNNING).model_copy(
        update={"spec": RolloutSpec(max_unavailable=at_once)}
    )
    store = RolloutStore(rollouts_kv)
    await store.claim_service(record.service, record.id)
    await store.create(record)
    return record, store


async def test_a_wave_larger_than_a_pass_starts_goes_out_whole_at_once_and_no_more(
    client: Client, nats_server: NatsServer
) -> None:
    assert STARTS_PER_PASS < AT_ONCE  # else one pass starts the wave and this proves nothing
    names = [f"h{i:03d}" for i in range(FLEET)]
    hosts = SilentHosts()
    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=hosts.on_command)
    record, store = await ready_rollout(client, names, AT_ONCE)
    settings = ControllerSettings(nats_url=(nats_server.url,), controller_id="leader", tick=60)
    executor = Executor(client, settings)
    collecting = gc.get_threshold()
    stop = asyncio.Event()
    leading = asyncio.create_task(executor.run(stop))
    try:

        async def started() -> int:
            return len(hosts.updates)

        await eventually(started, lambda n: n >= AT_ONCE, f"{AT_ONCE} updates", deadline=30)

        async def idle() -> bool:  # every pass it wanted ran and sent what it started
            return executor.dispatch.idle()

        await eventually(idle, bool, "the leader idle", deadline=30)
    finally:
        stop.set()
        await asyncio.wait_for(leading, 30)
        await subscription.unsubscribe()

    # The README's max_unavailable: that many at once, in host order, each once; and the
    # record says the same.
    assert hosts.wrong == []
    assert sorted(hosts.updates) == names[:AT_ONCE]
    stored = await store.get(record.id)
    assert stored is not None
    assert stored.record.in_phase(HostPhase.UPDATING) == tuple(names[:AT_ONCE])
    assert stored.record.in_phase(HostPhase.READY) == tuple(names[AT_ONCE:])
    # The leader handed garbage collection back as it found it.
    assert gc.get_threshold() == collecting
    assert gc.get_freeze_count() == 0


async def test_a_leader_with_nothing_to_do_puts_a_rollouts_many_changes_into_one_base(
    client: Client, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twenty passes of two starts each: twenty changes on the base, "many" from two.
    monkeypatch.setattr(budget, "STARTS_PER_PASS", 2)
    monkeypatch.setattr(rollout_store, "TIDY_AFTER_CHANGES", 2)
    names = [f"t{i:02d}" for i in range(40)]
    hosts = SilentHosts()
    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=hosts.on_command)
    record, _ = await ready_rollout(client, names, len(names))
    executor = Executor(client, ControllerSettings(nats_url=(nats_server.url,), tick=0.5))
    tidied: list[str] = []
    tidy = RolloutStore.tidy

    async def noting_tidy(self: RolloutStore, rollout_id: str) -> bool:
        done = await tidy(self, rollout_id)
        if done:
            tidied.append(rollout_id)
        return done

    monkeypatch.setattr(RolloutStore, "tidy", noting_tidy)
    stop = asyncio.Event()
    leading = asyncio.create_task(executor.run(stop))
    try:

        async def started() -> int:
            return len(hosts.updates)

        await eventually(started, lambda n: n == len(names), "every update sent", deadline=30)

        async def untidy() -> list[str]:
            return executor.rollouts.untidy()

        await eventually(untidy, lambda left: left == [], "the changes tidied", deadline=30)
    finally:
        stop.set()
        await asyncio.wait_for(leading, 30)
        await subscription.unsubscribe()

    # Tidied by the leader, and every host read back from the new base and the changes
    # since (fewer than "many") as the leader left them.
    assert tidied != []
    assert set(tidied) == {record.id}
    rollouts_kv, _, _ = await open_buckets(client.jetstream(timeout=5))
    assert await kv_keys(rollouts_kv, f"base.{record.id}.") != []
    assert len(await kv_keys(rollouts_kv, f"hosts.{record.id}.")) < 2
    read = await RolloutStore(rollouts_kv).get(record.id)
    assert read is not None
    assert read.record.in_phase(HostPhase.UPDATING) == tuple(names)
