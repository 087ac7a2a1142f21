"""Pre-flight checks queued by a pass go one per answer to a check, in order, and stop
when the queue is emptied; the checks sent that way are handed to the next pass.

The controller's own sending over a real nats-server; the host's side is a plain
subscriber that answers every check ready (no agent: what is checked is what the
controller sends, and when).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controller.broker import NatsServer
from controller.leader.dispatch import Dispatch
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord
from controller.settings import ControllerSettings
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import PrepareCommand, PrepareReply
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

    async def on_command(self, msg: Msg) -> None:
        command = decode(msg.data)
        assert isinstance(command, PrepareCommand)
        self.checked.append((command.host, command.id))
        self.reached.set()
        await self.answering.wait()
        reply = PrepareReply(sender=command.host, in_reply_to=command.id, service="web", ready=True)
        await msg.respond(encode(reply))


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connected = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield connected
    finally:
        await connected.close()


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

    # h1's answer sent h2's check, h2's sent h3's; nothing was queued for h4.
    assert [host for host, _ in hosts.checked] == ["h1", "h2", "h3"]
    sent = dispatch.checks_sent(record.id)
    assert sent == {host: command for host, command in hosts.checked[1:]}
    assert len(set(sent.values())) == 2
    dispatch.checks_recorded(record.id, sent)
    assert dispatch.checks_sent(record.id) == {}


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
