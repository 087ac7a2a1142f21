"""The update journal is written off the event loop, one record per phase reported.

README: each phase is journaled (fsynced) in the state dir before it happens; issue 14:
those fsyncs do not block the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from node_agent.update.journal import Journal
from protocol import subjects
from protocol.models import (
    AnyMessage,
    OperationOutcome,
    OperationReply,
    UpdatePhase,
    UpdateProgress,
)
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
DONE = UpdatePhase.DONE


async def test_every_phase_is_journaled_in_a_worker_thread_in_the_order_reported(
    agent_factory: AgentFactory, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await agent_factory()
    journaled: list[tuple[UpdatePhase, int]] = []
    record = Journal.record

    def spied(self: Journal, service: str, phase: UpdatePhase, **updates: Any) -> Any:
        journaled.append((phase, threading.get_ident()))
        return record(self, service, phase, **updates)

    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    monkeypatch.setattr(Journal, "record", spied)
    command = agent.apply(demo_spec(local_stack.demo_image("1.1.0"), port))

    def of_command(message: AnyMessage) -> bool:
        return isinstance(message, UpdateProgress) and message.operation_id == command.id

    subject = subjects.host_event_subject(agent.host, "update_progress")
    async with EventRecorder(agent.client, subject) as events:
        reply = await agent.request(command)
        assert isinstance(reply, OperationReply), reply
        assert reply.outcome is OperationOutcome.DONE, reply
        await events.wait_for(
            lambda m: of_command(m) and isinstance(m, UpdateProgress) and m.phase is DONE
        )
        reported = [m.phase for m in events.matching(of_command) if isinstance(m, UpdateProgress)]

    phases = [phase for phase, _ in journaled]
    assert UpdatePhase.STOPPING_OLD in phases  # it replaced a container
    assert phases == [p for p in reported if p is not UpdatePhase.PULLING], (phases, reported)
    loop_thread = threading.get_ident()
    assert [thread for _, thread in journaled if thread == loop_thread] == []
