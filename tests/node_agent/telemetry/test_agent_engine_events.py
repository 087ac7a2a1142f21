"""The agent follows the engine's events for its containers and publishes them."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import (
    AnyMessage,
    ContainerAction,
    ContainerEvent,
    Health,
)
from protocol.spec import RestartPolicy
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
MEMORY_HOG = 'a=$(head -c 200000000 /dev/zero | tr "\\0" x); echo ${#a}'


def container_event(action: ContainerAction, **expected: object) -> Callable[[AnyMessage], bool]:
    def match(message: AnyMessage) -> bool:
        return (
            isinstance(message, ContainerEvent)
            and message.action is action
            and all(getattr(message, key) == value for key, value in expected.items())
        )

    return match


async def test_a_crash_an_oom_a_policy_restart_and_health_changes_are_published(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    spec = demo_spec(
        local_stack.demo_image("1.0.0"),
        reserve_loopback_port(),
        restart_policy=RestartPolicy(name="on-failure", max_retries=5),
    )
    async with EventRecorder(agent.client, f"fleet.evt.{agent.host}.>") as events:
        await apply_ok(agent, spec)
        container = docker_client.containers.get(f"t{test_id}-0-web")
        healthy = await events.wait_for(
            container_event(ContainerAction.HEALTH_STATUS, health=Health.HEALTHY)
        )
        assert isinstance(healthy, ContainerEvent)
        assert healthy.service == "web"
        assert healthy.container_id == container.id

        # A crash from outside: the engine sees exit 137 and its policy restarts it.
        os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
        await events.wait_for(container_event(ContainerAction.DIE, exit_code=137))
        await events.wait_for(container_event(ContainerAction.RESTART, restarted_by_policy=True))

        await asyncio.to_thread(container.exec_run, ["sh", "-c", MEMORY_HOG])
        await events.wait_for(container_event(ContainerAction.OOM, service="web"))

        await asyncio.to_thread(container.restart, timeout=1)
        await events.wait_for(container_event(ContainerAction.RESTART, restarted_by_policy=False))

    subjects_seen = {subject for subject, _ in events.messages}
    for action in ("die", "oom", "restart", "health_status"):
        assert subjects.host_event_subject(agent.host, f"container_{action}") in subjects_seen
    # The agent's own start of the new container during Apply is not a policy restart.
    policy_restarts = events.matching(
        container_event(ContainerAction.RESTART, restarted_by_policy=True)
    )
    assert len(policy_restarts) == 1


async def test_containers_of_another_agent_on_the_same_engine_are_not_reported(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    ours = await agent_factory()
    theirs = await agent_factory()
    async with (
        EventRecorder(ours.client, f"fleet.evt.{ours.host}.>") as our_events,
        EventRecorder(theirs.client, f"fleet.evt.{theirs.host}.>") as their_events,
    ):
        await apply_ok(theirs, demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port()))
        await their_events.wait_for(
            container_event(ContainerAction.HEALTH_STATUS, health=Health.HEALTHY)
        )
    assert our_events.matching(lambda message: isinstance(message, ContainerEvent)) == []
