"""The agent is SIGKILLed in each phase of Apply and started again: the service survives.

The kill comes from the agent itself (``FLEET_FAILPOINT=<phase>``): right after the phase
is journaled and before it happens, which is the worst moment the journal has to cover.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import docker
import pytest

from controller.broker import reserve_loopback_port
from protocol.models import OperationOutcome, OperationReply
from protocol.spec import ServiceSpec, UpdateOrder
from tests.conftest import SpawnedAgent
from tests.support.agent import apply_ok, demo_spec, wait_until_serving
from tests.support.http import wait_for_http
from tests.support.stack import LocalStack

pytestmark = pytest.mark.integration
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]
MARKER = "written-before-the-update"
ENV = {"GREETING": "kept"}


async def start_serving(spawn: SpawnAgent, **env: str) -> SpawnedAgent:
    agent = await spawn(**env)
    await wait_until_serving(agent.api)
    return agent


async def restart(agent: SpawnedAgent, **env: str) -> None:
    await agent.process.start(**env)
    await wait_until_serving(agent.api, deadline_s=120)


def volume_marker(docker_client: docker.DockerClient, container: str) -> str:
    output = docker_client.containers.get(container).exec_run(["cat", "/data/marker"]).output
    return bytes(output).decode().strip()


def service_containers(docker_client: docker.DockerClient, prefix: str) -> list[str]:
    return sorted(c.name for c in docker_client.containers.list(all=True, filters={"name": prefix}))


@pytest.mark.parametrize(
    ("phase", "tag", "order"),
    [
        ("snapshotting", "1.1.0", UpdateOrder.STOP_FIRST),
        ("stopping_old", "1.1.0", UpdateOrder.STOP_FIRST),
        ("starting_new", "1.1.0", UpdateOrder.STOP_FIRST),
        ("probing", "1.1.0", UpdateOrder.STOP_FIRST),
        ("soaking", "1.1.0", UpdateOrder.STOP_FIRST),
        ("done", "1.1.0", UpdateOrder.STOP_FIRST),
        ("restoring", "3.0.0-crash", UpdateOrder.STOP_FIRST),
        ("probing", "1.1.0", UpdateOrder.START_FIRST),
        ("stopping_old", "1.1.0", UpdateOrder.START_FIRST),
    ],
)
async def test_an_agent_killed_in_any_phase_leaves_the_service_healthy_after_restart(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    phase: str,
    tag: str,
    order: UpdateOrder,
) -> None:
    agent = await start_serving(agent_process_factory, FLEET_FAILPOINT="never")
    old_port, new_port = reserve_loopback_port(), reserve_loopback_port()
    volume = f"t{test_id}-data"
    old_spec = demo_spec(
        local_stack.demo_image("1.0.0"), old_port, volume=volume, deadline=10, env=ENV
    )
    await apply_ok(agent.api, old_spec)
    main = f"t{test_id}-p0-web"
    docker_client.containers.get(main).exec_run(["sh", "-c", f"echo {MARKER} > /data/marker"])

    assert await agent.process.stop() == 0
    await restart(agent, FLEET_FAILPOINT=phase)
    new_port_for_order = new_port if order is UpdateOrder.START_FIRST else old_port
    new_spec: ServiceSpec = demo_spec(
        local_stack.demo_image(tag), new_port_for_order, volume=volume, deadline=10, env=ENV
    ).model_copy(update={"update_order": order})
    command = agent.api.apply(new_spec)
    await agent.api.send(command)
    assert await agent.process.wait(timeout=90) == -signal.SIGKILL

    await restart(agent, FLEET_FAILPOINT="never")
    recorded = await agent.api.request(command)
    assert isinstance(recorded, OperationReply), recorded
    assert recorded.outcome in {OperationOutcome.DONE, OperationOutcome.ROLLED_BACK}, recorded

    serving_port = new_port_for_order if recorded.outcome is OperationOutcome.DONE else old_port
    serving_tag = tag if recorded.outcome is OperationOutcome.DONE else "1.0.0"
    answer = await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{serving_port}/version", 200)
    assert answer.body == serving_tag
    assert recorded.status.image == local_stack.demo_image(serving_tag)
    assert volume_marker(docker_client, main) == MARKER
    assert "GREETING=kept" in docker_client.containers.get(main).attrs["Config"]["Env"]
    assert service_containers(docker_client, f"t{test_id}-p0-") == [main]
    if tag.startswith("3.0.0"):
        assert recorded.outcome is OperationOutcome.ROLLED_BACK
