"""One host's blue-green commands against the real engine, with host networking and HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
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
from protocol.spec import BlueGreen, Colour, ServiceSpec, coloured
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
    unhealthy = spec("3.0.1-unhealthy")
    assert unhealthy.health is not None
    quick = unhealthy.health.model_copy(update={"healthy_deadline": 3.0})  # never healthy
    bad = await outcome(agent, stage(agent, unhealthy.model_copy(update={"health": quick}), "blue"))
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


def plain_then_coloured(
    local_stack: LocalStack, hook: tuple[str, ...] | None = None
) -> tuple[Callable[[str], ServiceSpec], int, int]:
    """Specs of demo/web with blue-green settings (and ``hook`` as the switch hook)."""
    blue_port, green_port = reserve_loopback_port(), reserve_loopback_port()
    blue_green = BlueGreen(port=blue_port, alternate_port=green_port, switch_hook=hook)

    def spec(tag: str) -> ServiceSpec:
        base = demo_spec(local_stack.demo_image(tag), blue_port)
        return base.model_copy(update={"blue_green": blue_green})

    return spec, blue_port, green_port


async def test_a_switch_back_to_the_copy_from_before_blue_green_puts_the_record_back_on_its_spec(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    spec, blue_port, _ = plain_then_coloured(local_stack)
    await apply_ok(agent, spec("1.0.0"))  # before blue-green: no colour, counts as blue
    assert (await outcome(agent, stage(agent, spec("1.1.0"), "green"))).outcome.value == "done"
    forward = await outcome(agent, switch(agent, "green"))
    assert forward.outcome is OperationOutcome.DONE, forward
    assert agent.agent.services.current("web") == coloured(spec("1.1.0"), "green")

    back = await outcome(agent, switch(agent, "blue"))
    assert back.outcome is OperationOutcome.DONE, back
    # What the agent reports it runs is what serves again: the plain 1.0.0 spec, so
    # convergence sees this host on the accepted revision, not on the undone one.
    assert agent.agent.services.current("web") == spec("1.0.0")
    assert back.status.colour is None
    assert await version_on(blue_port) == "1.0.0"


async def test_a_colour_applied_in_place_takes_the_place_of_a_stale_copy_and_runs_the_hook(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    tmp_path: Path,
) -> None:
    told = tmp_path / "switched"
    hook = ("sh", "-c", f'echo "$FLEET_ACTIVE_COLOUR $FLEET_ACTIVE_PORT" > {told}')
    spec, blue_port, green_port = plain_then_coloured(local_stack, hook)
    agent = await agent_factory()
    main = f"t{test_id}-0-web"
    # A host that missed the switch: blue (from before blue-green) serves, its green
    # copy was staged, and the fleet then switched to green without it.
    await apply_ok(agent, spec("1.0.0"))
    assert (await outcome(agent, stage(agent, spec("1.1.0"), "green"))).outcome.value == "done"
    stale = docker_client.containers.get(f"{main}--standby").id

    # Convergence applies the accepted revision in the serving colour, in place.
    green = coloured(spec("1.1.0"), "green")
    done = await apply_ok(agent, green)
    assert done.status.colour == "green"
    assert agent.agent.services.current("web") == green
    assert await version_on(green_port) == "1.1.0"
    serving = docker_client.containers.get(main)
    assert serving.labels["io.fleetwave.colour"] == "green"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(stale)
    assert docker_client.containers.list(all=True, filters={"name": f"{main}--standby"}) == []
    assert told.read_text() == f"green {green_port}\n"
    with pytest.raises(ConnectionRefusedError):  # nothing serves on blue's port any more
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", blue_port), 1)

    # A switch hook that fails is a failed update, like a failing post_update hook: the
    # copy that served before is put back, and the agent's record stays on it.
    failing_hook = BlueGreen(port=blue_port, alternate_port=green_port, switch_hook=("false",))
    failing = coloured(spec("2.0.0").model_copy(update={"blue_green": failing_hook}), "green")
    failed = await outcome(agent, agent.apply(failing))
    assert failed.outcome is OperationOutcome.ROLLED_BACK, failed
    assert failed.failure is not None
    assert failed.failure.reason.text == "the switch hook exited 1: "
    assert docker_client.containers.get(main).id == serving.id
    assert agent.agent.services.current("web") == green
    assert await version_on(green_port) == "1.1.0"
