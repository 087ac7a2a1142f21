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
from fleet_lab.agent_client import apply_ok, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import OperationOutcome, OperationReply, UpdatePhase, UpdateProgress
from protocol.spec import ServiceSpec, UpdateOrder
from tests.conftest import SpawnedAgent
from tests.support.events import EventRecorder
from tests.support.http import wait_for_http

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


DONE, ROLLED_BACK = OperationOutcome.DONE, OperationOutcome.ROLLED_BACK
STOP_FIRST, START_FIRST = UpdateOrder.STOP_FIRST, UpdateOrder.START_FIRST
ROLLOUT = "web-r7"


# The one right outcome per phase, from the README: an agent killed at any point finishes
# the update when the new container is healthy, else restores the old one (the same
# container). The kill comes right after the phase is journaled, before it happens.
@pytest.mark.parametrize(
    ("phase", "tag", "order", "expected"),
    [
        ("snapshotting", "1.1.0", STOP_FIRST, ROLLED_BACK),  # nothing touched yet
        ("stopping_old", "1.1.0", STOP_FIRST, ROLLED_BACK),  # old not yet stopped
        ("starting_new", "1.1.0", STOP_FIRST, ROLLED_BACK),  # old set aside, no new one
        ("probing", "1.1.0", STOP_FIRST, DONE),  # new one started and healthy
        ("probing", "3.0.0-crash", STOP_FIRST, ROLLED_BACK),  # new one started, unhealthy
        ("soaking", "1.1.0", STOP_FIRST, DONE),
        ("done", "1.1.0", STOP_FIRST, DONE),
        ("concluded", "1.1.0", STOP_FIRST, DONE),  # outcome stored, journal still open
        ("restoring", "3.0.0-crash", STOP_FIRST, ROLLED_BACK),
        ("snapshotting", "1.1.0", START_FIRST, ROLLED_BACK),
        ("starting_new", "1.1.0", START_FIRST, ROLLED_BACK),  # the copy was never created
        ("probing", "1.1.0", START_FIRST, DONE),  # the copy runs beside the old, healthy
        ("probing", "3.0.0-crash", START_FIRST, ROLLED_BACK),
        ("soaking", "1.1.0", START_FIRST, DONE),
        ("stopping_old", "1.1.0", START_FIRST, DONE),  # the copy proved healthy
        ("done", "1.1.0", START_FIRST, DONE),
    ],
)
async def test_an_agent_killed_in_each_phase_finishes_or_restores_as_that_phase_requires(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    phase: str,
    tag: str,
    order: UpdateOrder,
    expected: OperationOutcome,
) -> None:
    agent = await start_serving(agent_process_factory, FLEET_FAILPOINT="never")
    old_port, new_port = reserve_loopback_port(), reserve_loopback_port()
    volume = f"t{test_id}-data"
    old_spec = demo_spec(
        local_stack.demo_image("1.0.0"), old_port, volume=volume, deadline=10, env=ENV
    )
    await apply_ok(agent.api, old_spec)
    main = f"t{test_id}-p0-web"
    old_id = docker_client.containers.get(main).id
    docker_client.containers.get(main).exec_run(["sh", "-c", f"echo {MARKER} > /data/marker"])

    assert await agent.process.stop() == 0
    await restart(agent, FLEET_FAILPOINT=phase)
    new_port_for_order = new_port if order is START_FIRST else old_port
    new_spec: ServiceSpec = demo_spec(
        local_stack.demo_image(tag), new_port_for_order, volume=volume, deadline=10, env=ENV
    ).model_copy(update={"update_order": order})
    command = agent.api.apply(new_spec, rollout_id=ROLLOUT)
    await agent.api.send(command)
    assert await agent.process.wait(timeout=90) == -signal.SIGKILL

    progress_subject = subjects.host_event_subject(agent.api.host, "update_progress")
    async with EventRecorder(agent.api.client, progress_subject) as events:
        await restart(agent, FLEET_FAILPOINT="never")
        recorded = await agent.api.request(command)
        assert isinstance(recorded, OperationReply), recorded
        assert recorded.outcome is expected, recorded
        again = await agent.api.request(command)
    assert again == recorded  # the recorded outcome; nothing ran a second time

    serving_port = new_port_for_order if expected is DONE else old_port
    serving_tag = tag if expected is DONE else "1.0.0"
    answer = await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{serving_port}/version", 200)
    assert answer.body == serving_tag
    assert recorded.status.image == local_stack.demo_image(serving_tag)
    restored_or_new = docker_client.containers.get(main).id
    if expected is ROLLED_BACK:
        assert restored_or_new == old_id  # the same container, not a copy of it
    else:
        assert restored_or_new != old_id
    assert volume_marker(docker_client, main) == MARKER
    assert "GREETING=kept" in docker_client.containers.get(main).attrs["Config"]["Env"]
    assert service_containers(docker_client, f"t{test_id}-p0-") == [main]
    # What recovery reported belongs to the rollout that sent the command.
    recovered = [
        m
        for _, m in events.messages
        if isinstance(m, UpdateProgress) and m.operation_id == command.id
    ]
    assert recovered, "recovery published no progress"
    assert {m.rollout_id for m in recovered} == {ROLLOUT}
    # The update was started once, before the kill: recovery never starts it again.
    assert not [m for m in recovered if m.phase is UpdatePhase.SNAPSHOTTING]
    if expected is DONE:  # the agent still knows what came before: a rollback returns
        back = await agent.api.request(agent.api.rollback("web"))
        assert isinstance(back, OperationReply), back
        assert back.outcome is DONE, back
        assert back.status.image == local_stack.demo_image("1.0.0")
