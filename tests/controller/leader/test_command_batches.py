"""A wave's commands go out in batches as they are built, not all after the last one.

The controller's own sending over a real nats-server; the hosts' side is a plain
subscriber that answers every command done. What goes on the wire is seen where the
client writes it to its socket: that is the moment a batch leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controller.broker import NatsServer
from controller.leader import dispatch as dispatch_module
from controller.leader.dispatch import SEND_BATCH, Dispatch
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutStatus
from controller.settings import ControllerSettings
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import ApplyCommand, Command
from tests.support.polling import eventually
from tests.support.records import done, web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
WAVE = 10 * SEND_BATCH
COMMAND_SUBJECT = f"{subjects.PREFIX}.cmd.".encode()


def updating(count: int) -> RolloutRecord:
    """A wave of ``count`` hosts whose updates the pass just started (one id each)."""
    hosts = {
        f"h{i:04d}": HostRecord(phase=HostPhase.UPDATING, since=NOW, command_id=f"cmd-{i:04d}")
        for i in range(count)
    }
    return web_rollout(hosts, NOW, RolloutStatus.RUNNING)


class CountingDispatch(Dispatch):
    """The controller's dispatch, counting the commands it has built."""

    built = 0

    def _build(
        self, record: RolloutRecord, host: str, command_id: str, check: bool
    ) -> tuple[Command, float]:
        self.built += 1
        return super()._build(record, host, command_id, check)


@dataclass
class Wire:
    """Each write of the controller's client to its socket: how many commands had been
    built by then, and how many commands the write carries."""

    writes: list[tuple[int, int]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)

    async def answer(self, msg: Msg) -> None:
        command = decode(msg.data)
        assert isinstance(command, ApplyCommand), command
        self.received.append(command.id)
        await msg.respond(encode(done(command.host, command.id)))


@pytest.fixture
async def sending(
    nats_server: NatsServer, client: Client
) -> AsyncIterator[tuple[CountingDispatch, Wire]]:
    """The controller's dispatch on a client of its own whose socket writes are seen,
    and the hosts answering."""
    wire = Wire()
    subscription = await client.subscribe(f"{subjects.PREFIX}.cmd.*", cb=wire.answer)
    await client.flush()
    controller = await nats.connect(nats_server.url, connect_timeout=5)
    dispatch = CountingDispatch(
        controller, ControllerSettings(nats_url=(nats_server.url,)), asyncio.Event(), {}
    )
    # nats-py's transport is private; wrapping its writes is how a test sees when a
    # command leaves the process.
    transport = controller._transport
    assert transport is not None
    write = transport.writelines

    def seen(payload: Iterable[bytes]) -> None:
        chunks = list(payload)
        carried = sum(chunk.count(b"PUB " + COMMAND_SUBJECT) for chunk in chunks)
        if carried:
            wire.writes.append((dispatch.built, carried))
        write(chunks)

    transport.writelines = seen  # type: ignore[method-assign]
    try:
        yield dispatch, wire
    finally:
        await settled(dispatch)
        await controller.close()
        await subscription.unsubscribe()


def start_all(dispatch: Dispatch, record: RolloutRecord) -> None:
    """What a pass does once it has written the wave: each host's command started."""
    for host, entry in record.hosts.items():
        assert entry.command_id is not None
        dispatch.ensure(record, host, entry.command_id)


async def settled(dispatch: Dispatch) -> None:
    while in_flight := dispatch.sending():
        await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), 10)


async def test_the_first_commands_of_a_wave_leave_before_the_rest_are_built(
    sending: tuple[CountingDispatch, Wire],
) -> None:
    dispatch, wire = sending
    record = updating(WAVE)
    start_all(dispatch, record)
    await settled(dispatch)

    # Every command went, once, and was answered.
    assert sorted(wire.received) == sorted(f"cmd-{i:04d}" for i in range(WAVE))
    assert sum(carried for _, carried in wire.writes) == WAVE
    # The first batch left when it alone was built, and no write carried more than a
    # batch: the wave went out as it was built (all at the end, it would be one write
    # of WAVE commands made once all WAVE were built).
    first_built, first_carried = wire.writes[0]
    assert first_built == first_carried == SEND_BATCH
    assert max(carried for _, carried in wire.writes) <= SEND_BATCH
    assert len(wire.writes) >= WAVE // SEND_BATCH


async def test_a_command_cancelled_while_waiting_its_turn_is_never_sent(
    sending: tuple[CountingDispatch, Wire],
) -> None:
    dispatch, wire = sending
    record = updating(3 * SEND_BATCH)
    start_all(dispatch, record)
    # Its pass wrote nothing after all (a conflict): the later commands are called off
    # before their turn came.
    called_off = [f"cmd-{i:04d}" for i in range(SEND_BATCH, 3 * SEND_BATCH, 2)]
    await asyncio.sleep(0)  # the tasks have started and wait for their turns
    dispatch.cancel(called_off)
    await asyncio.wait_for(dispatch.all_sent(), 10)  # the called off count as gone
    await settled(dispatch)

    sent = set(wire.received)
    assert sent.isdisjoint(called_off)
    expected = {f"cmd-{i:04d}" for i in range(3 * SEND_BATCH)} - set(called_off)
    assert sent == expected  # the others all went, their turns not taken by the cancelled
    assert dispatch.built == len(expected)


async def test_all_sent_returns_once_every_command_started_has_been_built(
    sending: tuple[CountingDispatch, Wire],
) -> None:
    dispatch, wire = sending
    record = updating(3 * SEND_BATCH)
    start_all(dispatch, record)
    assert not dispatch.idle()  # commands wait for their turns
    await asyncio.wait_for(dispatch.all_sent(), 10)
    # What the leader's next pass waits for: none of this wave is left to build.
    assert dispatch.built == 3 * SEND_BATCH
    await settled(dispatch)
    assert len(wire.received) == 3 * SEND_BATCH


async def test_the_dispatch_is_idle_only_once_answers_are_folded_and_none_came_for_a_while(
    sending: tuple[CountingDispatch, Wire], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch_module, "QUIET_AFTER", 1.0)
    dispatch, _ = sending
    record = updating(SEND_BATCH)
    start_all(dispatch, record)
    await settled(dispatch)
    assert len(dispatch.pending(record.id)) == SEND_BATCH
    assert not dispatch.idle()  # the answers wait for a pass
    dispatch.folded(record.id, SEND_BATCH)
    assert not dispatch.idle()  # folded, but answers came a moment ago: more may follow

    async def idle() -> bool:
        return dispatch.idle()

    await eventually(idle, bool, "idle", deadline=10)  # a second after the last answer


async def test_all_sent_waits_only_for_the_commands_started_before_it_was_called(
    sending: tuple[CountingDispatch, Wire],
) -> None:
    # A pass waits for its own commands, not for checks that answers keep sending.
    dispatch, _ = sending
    total = 12 * SEND_BATCH
    wave = updating(total)
    hosts = list(wave.hosts)
    for host in hosts[: 2 * SEND_BATCH]:  # the pass's own commands
        dispatch.ensure(wave, host, command_of(wave, host))
    waiting = asyncio.create_task(dispatch.all_sent())
    built_when_done: list[int] = []
    waiting.add_done_callback(lambda _: built_when_done.append(dispatch.built))
    await asyncio.sleep(0)  # it has taken note of what is unsent now
    for host in hosts[2 * SEND_BATCH :]:  # started after: checks that answers send
        dispatch.ensure(wave, host, command_of(wave, host))
    await asyncio.wait_for(waiting, 10)
    await settled(dispatch)
    assert 2 * SEND_BATCH <= built_when_done[0] < total
    assert dispatch.built == total


def command_of(record: RolloutRecord, host: str) -> str:
    command_id = record.hosts[host].command_id
    assert command_id is not None
    return command_id
