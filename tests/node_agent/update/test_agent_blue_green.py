"""One host's blue-green commands against the real engine, with host networking and HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol.models import (
    ErrorReply,
    OperationOutcome,
    OperationReply,
    RetireCommand,
    StageCommand,
    SwitchCommand,
)
from protocol.spec import BlueGreen, Colour, ServiceSpec
from tests.support.http import wait_for_http

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


async def version_on(port: int) -> str:
    answer = await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/version", 200)
    return answer.body


def stage(agent: AgentHandle, spec: ServiceSpec, colour: Colour) -> StageCommand:
    return StageCommand(service=spec, colour=colour, **agent.command_fields())


def switch(agent: AgentHandle, colour: Colour) -> SwitchCommand:
    return SwitchCommand(service="web", colour=colour, **agent.command_fields())


def retire(agent: AgentHandle, colour: Colour) -> RetireCommand:
    return RetireCommand(service="web", colour=colour, **agent.command_fields())


async def outcome(agent: AgentHandle, command: Any) -> OperationReply:
    reply = await agent.request(command)
    assert isinstance(reply, OperationReply), reply
    return reply


async def refused(agent: AgentHandle, command: Any) -> str:
    reply = await agent.request(command)
    assert isinstance(reply, ErrorReply), reply
    return reply.code


async def test_a_host_stages_switches_and_retires_colours_and_finishes_an_interrupted_switch(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    blue_port, green_port = reserve_loopback_port(), reserve_loopback_port()
    blue_green = BlueGreen(port=blue_port, alternate_port=green_port)

    def spec(tag: str) -> ServiceSpec:
        base = demo_spec(local_stack.demo_image(tag), blue_port)
        return base.model_copy(update={"blue_green": blue_green})

    await apply_ok(agent, spec("1.0.0"))  # runs before blue-green: it counts as blue
    main = f"t{test_id}-0-web"
    original = docker_client.containers.get(main).id

    staged = await outcome(agent, stage(agent, spec("1.1.0"), "green"))
    assert staged.outcome is OperationOutcome.DONE, staged
    assert staged.status.colour == "green"
    # Both colours answer at once, each on its own port; blue still has the service's name.
    assert await version_on(blue_port) == "1.0.0"
    assert await version_on(green_port) == "1.1.0"
    assert docker_client.containers.get(main).id == original
    assert await refused(agent, stage(agent, spec("1.1.0"), "blue")) == "colour_serving"

    # An agent killed between the renames of a switch: green is still the standby and
    # blue was already moved aside. Repeating the switch finishes it.
    docker_client.containers.get(main).rename(f"{main}--switching")
    switched = await outcome(agent, switch(agent, "green"))
    assert switched.outcome is OperationOutcome.DONE, switched
    assert switched.status.colour == "green"
    assert docker_client.containers.get(f"{main}--standby").id == original
    assert docker_client.containers.list(all=True, filters={"name": f"{main}--switching"}) == []
    again = await outcome(agent, switch(agent, "green"))  # a second switch changes nothing
    assert again.status.container_id == switched.status.container_id

    assert await refused(agent, retire(agent, "green")) == "colour_serving"
    retired = await outcome(agent, retire(agent, "blue"))
    assert retired.outcome is OperationOutcome.DONE
    assert docker_client.containers.list(all=True, filters={"name": f"{main}--standby"}) == []
    assert await refused(agent, switch(agent, "blue")) == "colour_missing"
    assert await version_on(green_port) == "1.1.0"

    # A bad new colour is dropped; the serving one is never touched.
    bad = await outcome(agent, stage(agent, spec("3.0.1-unhealthy"), "blue"))
    assert bad.outcome is OperationOutcome.ROLLED_BACK
    assert bad.failure is not None
    assert bad.failure.probe_results
    assert docker_client.containers.list(all=True, filters={"name": f"{main}--standby"}) == []
    assert docker_client.containers.get(main).id == switched.status.container_id
    assert await version_on(green_port) == "1.1.0"


async def test_a_spec_without_blue_green_settings_cannot_be_staged(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    plain = demo_spec(local_stack.demo_image("1.1.0"), reserve_loopback_port())
    assert await refused(agent, stage(agent, plain, "green")) == "not_blue_green"
