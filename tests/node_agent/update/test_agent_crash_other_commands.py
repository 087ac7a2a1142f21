"""The agent SIGKILLed in Prepare, Rollback and blue-green Stage, Switch and Retire: each
pins the one right state after a restart and the controller's retry of the same command.

The kill comes from the agent itself (``FLEET_FAILPOINT``), at the worst moment of each:
mid-pull, mid-probe, between a switch's two renames, between a retire's stop and remove.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import apply_ok, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol.models import (
    Command,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    RetireCommand,
    StageCommand,
    SwitchCommand,
)
from protocol.spec import BlueGreen, Colour, ServiceSpec
from tests.conftest import SpawnedAgent
from tests.support.crash import killed_at
from tests.support.http import wait_for_http

pytestmark = pytest.mark.integration
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]
DONE, ROLLED_BACK = OperationOutcome.DONE, OperationOutcome.ROLLED_BACK


async def version_on(port: int) -> str:
    answer = await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/version", 200)
    return answer.body


def running(docker_client: docker.DockerClient, name: str) -> dict[str, Any]:
    attrs: dict[str, Any] = docker_client.api.inspect_container(name)
    assert attrs["State"]["Running"], name
    return attrs


def absent(docker_client: docker.DockerClient, name: str) -> bool:
    return not docker_client.containers.list(all=True, filters={"name": f"^/{name}$"})


async def test_prepare_killed_mid_pull_is_ready_when_retried_and_touched_nothing(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_process_factory(FLEET_FAILPOINT="never")
    await wait_until_serving(agent.api)
    port = reserve_loopback_port()
    await apply_ok(agent.api, demo_spec(local_stack.demo_image("1.0.0"), port))
    main = f"t{test_id}-p0-web"
    before = running(docker_client, main)
    prepare = agent.api.prepare(demo_spec(local_stack.demo_image("1.1.0"), port))

    await killed_at(agent, "pulling", prepare)

    retried = await agent.api.request(prepare)
    assert isinstance(retried, PrepareReply), retried
    assert retried.ready, retried.reasons
    after = running(docker_client, main)
    assert (after["Id"], after["State"]["StartedAt"]) == (
        before["Id"],
        before["State"]["StartedAt"],
    )
    assert await version_on(port) == "1.0.0"


@pytest.mark.parametrize(
    ("failpoint", "expected", "serving"),
    [
        ("stopping_old", ROLLED_BACK, "1.1.0"),  # 1.1.0 not yet stopped: it stays
        ("probing", DONE, "1.0.0"),  # 1.0.0 started and healthy: the rollback goes on
    ],
)
async def test_a_rollback_killed_midway_ends_as_its_phase_requires(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    failpoint: str,
    expected: OperationOutcome,
    serving: str,
) -> None:
    agent = await agent_process_factory(FLEET_FAILPOINT="never")
    await wait_until_serving(agent.api)
    port = reserve_loopback_port()
    for tag in ("1.0.0", "1.1.0"):
        await apply_ok(agent.api, demo_spec(local_stack.demo_image(tag), port))
    rollback = agent.api.rollback("web")

    await killed_at(agent, failpoint, rollback)

    recorded = await agent.api.request(rollback)
    assert isinstance(recorded, OperationReply), recorded
    assert recorded.outcome is expected, recorded
    assert await version_on(port) == serving
    assert recorded.status.image == local_stack.demo_image(serving)


def blue_green_spec(stack: LocalStack, tag: str, blue: int, green: int) -> ServiceSpec:
    spec = demo_spec(stack.demo_image(tag), blue)
    return spec.model_copy(update={"blue_green": BlueGreen(port=blue, alternate_port=green)})


def stage(agent: SpawnedAgent, spec: ServiceSpec, colour: Colour) -> StageCommand:
    return StageCommand(service=spec, colour=colour, **agent.api.command_fields())


def switch(agent: SpawnedAgent, colour: Colour) -> SwitchCommand:
    return SwitchCommand(service="web", colour=colour, **agent.api.command_fields())


def retire(agent: SpawnedAgent, colour: Colour) -> RetireCommand:
    return RetireCommand(service="web", colour=colour, **agent.api.command_fields())


async def outcome(agent: SpawnedAgent, command: Command) -> OperationReply:
    reply = await agent.api.request(command)
    assert isinstance(reply, OperationReply), reply
    return reply


@pytest.mark.parametrize("failpoint", ["stage_probing", "switch_half_renamed", "retire_stopped"])
async def test_a_blue_green_step_killed_midway_is_finished_by_its_retry(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    failpoint: str,
) -> None:
    agent = await agent_process_factory(FLEET_FAILPOINT="never")
    await wait_until_serving(agent.api)
    blue, green = reserve_loopback_port(), reserve_loopback_port()
    main, standby = f"t{test_id}-p0-web", f"t{test_id}-p0-web--standby"
    await apply_ok(agent.api, blue_green_spec(local_stack, "1.0.0", blue, green))
    blue_id = running(docker_client, main)["Id"]
    green_spec = blue_green_spec(local_stack, "1.1.0", blue, green)
    if failpoint == "stage_probing":
        command: Command = stage(agent, green_spec, "green")
    else:
        assert (await outcome(agent, stage(agent, green_spec, "green"))).outcome is DONE
        if failpoint == "switch_half_renamed":
            command = switch(agent, "green")
        else:
            assert (await outcome(agent, switch(agent, "green"))).outcome is DONE
            command = retire(agent, "blue")

    await killed_at(agent, failpoint, command)

    assert (await outcome(agent, command)).outcome is DONE
    if failpoint == "stage_probing":  # blue kept serving throughout; green staged anew
        assert running(docker_client, main)["Id"] == blue_id
        running(docker_client, standby)
        assert await version_on(blue) == "1.0.0"
        assert await version_on(green) == "1.1.0"
    elif failpoint == "switch_half_renamed":  # green serves, blue waits as the standby
        assert running(docker_client, main)["Id"] != blue_id
        assert running(docker_client, standby)["Id"] == blue_id
        assert absent(docker_client, f"{main}--switching")
        assert await version_on(green) == "1.1.0"
    else:  # blue is gone, green serves
        assert absent(docker_client, standby)
        assert absent(docker_client, blue_id)
        assert running(docker_client, main)["Id"] != blue_id
        assert await version_on(green) == "1.1.0"
