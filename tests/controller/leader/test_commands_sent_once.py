"""A command goes to its host once: an answer that came while a pass was writing (so not
yet in the record the pass planned from) keeps that pass from sending it again.

The controller's own sending over a real nats-server; the host's side is a plain
subscriber that answers (no agent: what is checked is what the controller sends).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.msg import Msg

from controller.broker import NatsServer
from controller.leader.dispatch import Dispatch
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord
from controller.rollouts.transitions import reply_news
from controller.settings import ControllerSettings
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import Command
from tests.support.records import done, web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def updating(**commands: str) -> RolloutRecord:
    return web_rollout(
        {
            host: HostRecord(phase=HostPhase.UPDATING, since=NOW, command_id=command)
            for host, command in commands.items()
        },
        NOW,
    )


async def test_a_command_answered_but_not_yet_written_is_not_sent_again(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    received: asyncio.Queue[str] = asyncio.Queue()

    async def host_side(msg: Msg) -> None:
        command = decode(msg.data)
        assert isinstance(command, Command)
        await received.put(command.id)
        await msg.respond(encode(done(command.host, command.id)))

    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=host_side)
    settings = ControllerSettings(nats_url=(nats_server.url,))
    dispatch = Dispatch(client, settings, asyncio.Event(), facts={})
    record = updating(h1="cmd-a", h2="cmd-b")
    try:
        answer = reply_news("h1", "cmd-a", done("h1", "cmd-a"), NOW, blue_green=False)
        dispatch.record(record.id, answer)  # came while the pass was writing

        dispatch.ensure(record, "h1", "cmd-a")
        dispatch.ensure(record, "h2", "cmd-b")

        assert await asyncio.wait_for(received.get(), 10) == "cmd-b"
        # Every send made is answered by now (a host puts what it got before answering):
        # had cmd-a gone too, in whatever order, it would be here.
        await asyncio.wait_for(asyncio.gather(*dispatch.sending()), 10)
        assert received.empty(), received.get_nowait()
        # Once its answer is written, the same id may go again (a retry after silence).
        dispatch.folded(record.id, 1)
        dispatch.ensure(record, "h1", "cmd-a")
        assert await asyncio.wait_for(received.get(), 10) == "cmd-a"
    finally:
        await asyncio.gather(*dispatch.sending(), return_exceptions=True)
        await subscription.unsubscribe()
        await client.close()
