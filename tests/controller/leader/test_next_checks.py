"""Pre-flight checks queued by a pass go one per answer to a check, in order, and stop
when the queue is emptied; the checks sent that way are handed to the next pass.

The controller's own sending over a real nats-server; the host's side is a plain
subscriber that answers every check ready (no agent: what is checked is what the
controller sends, and when).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controller.broker import NatsServer
from controller.leader.checks import queue_next_checks
from controller.leader.dispatch import Dispatch
from controller.leader.executor import Executor
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from controller.settings import ControllerSettings
from controller.state.rollout_store import RolloutStore
from controller.state.store import open_buckets
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import PrepareCommand, PrepareReply, utc_now
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
HOSTS = ("h1", "h2", "h3", "h4")


def in_preflight() -> RolloutRecord:
    """h1's check in flight as cmd-1; the others pending."""
    hosts = {host: HostRecord(since=NOW) for host in HOSTS}
    hosts["h1"] = HostRecord(phase=HostPhase.PREPARING, since=NOW, command_id="cmd-1")
    return web_rollout(hosts, NOW)


@dataclass
class Hosts:
    """Every host's side: each check is noted (host, command id), then answered ready
    once ``answering`` is set."""

    checked: list[tuple[str, str]] = field(default_factory=list)
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first check has come."""
    not_ready: frozenset[str] = frozenset({"h2"})
    """Hosts that answer not ready (their slot is free all the same)."""
    wrong: list[str] = field(default_factory=list)
    """Kinds of anything sent that is not a check."""

    async def on_command(self, msg: Msg) -> None:
        command = decode(msg.data)
        if not isinstance(command, PrepareCommand):
            self.wrong.append(command.kind)
            return
        self.checked.append((command.host, command.id))
        self.reached.set()
        await self.answering.wait()
        ready = command.host not in self.not_ready
        reply = PrepareReply(
            sender=command.host, in_reply_to=command.id, service="web", ready=ready
        )
        await msg.respond(encode(reply))


async def settled(dispatch: Dispatch) -> None:
    """Until no send is in flight: each answer that starts another is waited for too."""
    while sending := dispatch.sending():
        await asyncio.wait_for(asyncio.gather(*sending), 10)


@pytest.fixture
async def fleet(client: Client, nats_server: NatsServer) -> AsyncIterator[tuple[Hosts, Dispatch]]:
    """The hosts' side subscribed, and the controller's sending to them."""
    hosts = Hosts()
    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=hosts.on_command)
    settings = ControllerSettings(nats_url=(nats_server.url,))
    dispatch = Dispatch(client, settings, asyncio.Event(), {})
    try:
        yield hosts, dispatch
    finally:
        hosts.answering.set()
        await settled(dispatch)
        await subscription.unsubscribe()


async def test_each_answer_to_a_check_sends_the_next_queued_check_in_order(
    fleet: tuple[Hosts, Dispatch],
) -> None:
    hosts, dispatch = fleet
    hosts.answering.set()
    record = in_preflight()

    dispatch.queue_checks(record, ["h2", "h3"])
    dispatch.ensure(record, "h1", "cmd-1")
    await settled(dispatch)

    # h1's answer sent h2's check, h2's (not ready) sent h3's; none was queued for h4.
    assert hosts.wrong == []
    assert [host for host, _ in hosts.checked] == ["h1", "h2", "h3"]
    sent = dispatch.checks_sent(record.id)
    assert sent == {host: command for host, command in hosts.checked[1:]}
    assert len(set(sent.values())) == 2
    dispatch.checks_recorded(record.id, sent)
    assert dispatch.checks_sent(record.id) == {}


@pytest.mark.parametrize(
    "state",
    [{"paused": True}, {"aborted": True}, {"status": RolloutStatus.RUNNING}],
    ids=["paused", "aborted", "past pre-flight"],
)
async def test_a_pass_queues_no_checks_unless_its_rollout_is_in_pre_flight_and_going_on(
    fleet: tuple[Hosts, Dispatch], state: dict[str, object]
) -> None:
    hosts, dispatch = fleet
    hosts.answering.set()
    going_on = in_preflight()
    queue_next_checks(dispatch, going_on)  # h2, h3 and h4: the pending hosts, in order
    record = going_on.model_copy(update=state)

    queue_next_checks(dispatch, record)
    dispatch.ensure(record, "h1", "cmd-1")
    await settled(dispatch)

    assert [host for host, _ in hosts.checked] == ["h1"]


async def test_a_queue_emptied_by_a_pass_sends_nothing_more(
    fleet: tuple[Hosts, Dispatch],
) -> None:
    hosts, dispatch = fleet
    record = in_preflight()

    dispatch.queue_checks(record, ["h2", "h3"])
    dispatch.ensure(record, "h1", "cmd-1")
    await asyncio.wait_for(hosts.reached.wait(), 10)
    dispatch.queue_checks(record, ())  # a pass found the rollout paused
    hosts.answering.set()
    await settled(dispatch)

    assert [host for host, _ in hosts.checked] == ["h1"]
    assert dispatch.checks_sent(record.id) == {}


@dataclass
class SlowHosts:
    """Every host's side for a whole pre-flight: each check answered ready after a
    short, varied delay (so answers come during the leader's writes), with the checks
    each host is running at once counted as the hosts see them."""

    delays: random.Random = field(default_factory=lambda: random.Random(7))
    ids: dict[str, set[str]] = field(default_factory=dict)
    running: int = 0
    most_at_once: int = 0
    wrong: list[str] = field(default_factory=list)
    all_checked: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    async def on_command(self, msg: Msg) -> None:
        asyncio.get_running_loop().create_task(self._check(msg))

    async def _check(self, msg: Msg) -> None:
        command = decode(msg.data)
        if not isinstance(command, PrepareCommand):
            self.wrong.append(command.kind)
            return
        self.ids.setdefault(command.host, set()).add(command.id)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(self.delays.choice((0.0, 0.001, 0.005, 0.02)))  # its own work
        self.running -= 1
        if len(self.ids) == self.expected and self.running == 0:
            self.all_checked.set()
        reply = PrepareReply(sender=command.host, in_reply_to=command.id, service="web", ready=True)
        await msg.respond(encode(reply))


async def test_a_leaders_pre_flight_checks_every_host_once_within_its_parallelism(
    client: Client, nats_server: NatsServer
) -> None:
    # README: pre-flight checks at most preflight_parallelism hosts at a time, each once;
    # a check queued by a pass goes as an answer frees a slot.
    parallelism, count = 3, 150
    names = [f"h{i:02d}" for i in range(count)]
    hosts = SlowHosts(expected=count)
    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=hosts.on_command)
    now = utc_now()  # a rollout started now: its progress deadline is far off
    record = web_rollout({h: HostRecord(since=now) for h in names}, now).model_copy(
        update={"spec": RolloutSpec(preflight_parallelism=parallelism)}
    )
    store = RolloutStore((await open_buckets(client.jetstream(timeout=5)))[0])
    await store.claim_service(record.service, record.id)
    await store.create(record)
    settings = ControllerSettings(nats_url=(nats_server.url,), controller_id="leader")
    stop = asyncio.Event()
    leading = asyncio.create_task(Executor(client, settings).run(stop))
    try:
        await asyncio.wait_for(hosts.all_checked.wait(), 60)
    finally:
        stop.set()
        await asyncio.wait_for(leading, 30)
        await subscription.unsubscribe()

    assert hosts.wrong == []
    assert {host: len(ids) for host, ids in hosts.ids.items()} == dict.fromkeys(names, 1)
    assert hosts.most_at_once <= parallelism
    assert hosts.most_at_once == parallelism  # the bound was reached, not just kept
