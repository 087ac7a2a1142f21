"""What the engine shows while an update probes: the old container is never removed before
the new one is healthy, and a restore brings back that same container."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import OperationOutcome, OperationReply, UpdatePhase, UpdateProgress
from protocol.spec import ServiceSpec, UpdateOrder
from tests.support.events import EventRecorder
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
STOP_FIRST, START_FIRST = UpdateOrder.STOP_FIRST, UpdateOrder.START_FIRST


def ordered(spec: ServiceSpec, order: UpdateOrder) -> ServiceSpec:
    return spec.model_copy(update={"update_order": order})


def phase_of(operation_id: str, phase: UpdatePhase) -> Callable[[Any], bool]:
    return lambda m: (
        isinstance(m, UpdateProgress) and m.operation_id == operation_id and m.phase is phase
    )


def state(docker_client: docker.DockerClient, name: str) -> dict[str, Any] | None:
    try:
        attrs: dict[str, Any] = docker_client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    return attrs


async def engine_while_probing(
    agent: AgentHandle, docker_client: docker.DockerClient, spec: ServiceSpec
) -> tuple[OperationReply, dict[str, dict[str, Any] | None], list[UpdatePhase]]:
    """Apply ``spec``; when the agent reports probing the new container, read the engine's
    view of the service's containers. Returns the reply, that view and the phases."""
    main = agent.agent.updater.main_name("web")
    names = (main, f"{main}--prev", f"{main}--next")
    command = agent.apply(spec)
    subject = subjects.host_event_subject(agent.host, "update_progress")
    async with EventRecorder(agent.client, subject) as events:
        replying = asyncio.create_task(agent.request(command))
        try:
            await events.wait_for(phase_of(command.id, UpdatePhase.PROBING), timeout=60)
            seen = {name: state(docker_client, name) for name in names}
            # Still probing when the engine was read: the new one had not proven healthy.
            assert not events.matching(phase_of(command.id, UpdatePhase.SOAKING))
            assert not events.matching(phase_of(command.id, UpdatePhase.DONE))
        finally:
            reply = await replying
    assert isinstance(reply, OperationReply), reply
    phases = [
        m.phase
        for m in events.matching(lambda m: isinstance(m, UpdateProgress))
        if isinstance(m, UpdateProgress) and m.operation_id == command.id
    ]
    return reply, seen, phases


@pytest.mark.parametrize("order", [STOP_FIRST, START_FIRST])
async def test_while_the_new_container_probes_the_old_one_still_exists_as_the_order_says(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    order: UpdateOrder,
) -> None:
    agent = await agent_factory()
    old_port, new_port = reserve_loopback_port(), reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), old_port))
    main = agent.agent.updater.main_name("web")
    old_id = docker_client.api.inspect_container(main)["Id"]
    port = new_port if order is START_FIRST else old_port
    slow = ordered(demo_spec(local_stack.demo_image("3.0.2-slow"), port, deadline=30), order)

    reply, seen, phases = await engine_while_probing(agent, docker_client, slow)

    assert reply.outcome is OperationOutcome.DONE, reply
    if order is STOP_FIRST:  # stopped and set aside, not removed
        aside = seen[f"{main}--prev"]
        assert aside is not None
        assert aside["Id"] == old_id
        assert not aside["State"]["Running"]
        replacement = seen[main]
        assert replacement is not None
        assert replacement["Id"] != old_id
        assert phases.index(UpdatePhase.STOPPING_OLD) < phases.index(UpdatePhase.STARTING_NEW)
    else:  # still serving, the new copy running beside it
        serving, candidate = seen[main], seen[f"{main}--next"]
        assert serving is not None
        assert candidate is not None
        assert serving["Id"] == old_id
        assert serving["State"]["Running"]
        assert candidate["State"]["Running"]
        assert seen[f"{main}--prev"] is None
        assert phases.index(UpdatePhase.PROBING) < phases.index(UpdatePhase.STOPPING_OLD)
    after = docker_client.api.inspect_container(main)
    assert after["Id"] != old_id
    assert state(docker_client, old_id) is None  # removed once the new one proved healthy


@pytest.mark.parametrize("order", [STOP_FIRST, START_FIRST])
async def test_a_failed_update_restores_the_same_old_container(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    order: UpdateOrder,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    main = agent.agent.updater.main_name("web")
    before = docker_client.api.inspect_container(main)
    new_port = reserve_loopback_port() if order is START_FIRST else port  # side by side
    unhealthy = local_stack.demo_image("3.0.1-unhealthy")
    bad = ordered(demo_spec(unhealthy, new_port, deadline=6), order)
    reply = await agent.request(agent.apply(bad))
    assert isinstance(reply, OperationReply), reply
    assert reply.outcome is OperationOutcome.ROLLED_BACK, reply
    assert reply.failure is not None
    assert reply.failure.reason.code == "update_failed"
    assert any("500" in result.output for result in reply.failure.probe_results)
    after = docker_client.api.inspect_container(main)
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"]
    for leftover in (f"{main}--prev", f"{main}--next"):
        assert state(docker_client, leftover) is None
    if order is START_FIRST:  # never stopped: the same run of the same container
        assert after["State"]["StartedAt"] == before["State"]["StartedAt"]


async def test_a_stubborn_old_container_is_killed_with_137_after_its_grace_period(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    stubborn = demo_spec(local_stack.demo_image("3.0.3-stubborn"), port, grace=1)
    await apply_ok(agent, stubborn)
    main = agent.agent.updater.main_name("web")
    slow = demo_spec(local_stack.demo_image("3.0.2-slow"), port, grace=1, deadline=30)
    old = docker_client.api.inspect_container(main)["Id"]

    with KillWatch(docker_client, old) as watch:
        reply, seen, _ = await engine_while_probing(agent, docker_client, slow)
        kills = await watch.first(2)

    assert reply.outcome is OperationOutcome.DONE, reply
    aside = seen[f"{main}--prev"]
    assert aside is not None
    assert aside["Config"]["Labels"]["io.fleetwave.image"].endswith("3.0.3-stubborn")
    assert aside["State"]["ExitCode"] == 137  # it ignored SIGTERM and was killed
    assert aside["Id"] == old
    # The engine's own record: SIGTERM first, SIGKILL only after the 1 s grace period.
    assert [signal for signal, _ in kills] == ["15", "9"], kills
    waited = (kills[1][1] - kills[0][1]) / 1e9
    # The 1 s grace, not the 30 s health deadline or any other timeout in play.
    assert 1 <= waited < 10, kills


class KillWatch:
    """Each signal the engine sends one container (its `kill` events, with when in ns),
    followed live: the engine keeps only its last 256 events, and the health checks of
    other containers push older ones out before a query after the fact could read them."""

    def __init__(self, docker_client: docker.DockerClient, container_id: str) -> None:
        self._stream = docker_client.events(
            filters={"container": container_id, "event": "kill"}, decode=True
        )
        self._seen: list[tuple[str, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        # The SDK's stream ends quietly when it is closed under the reader.
        for event in self._stream:
            self._seen.append((event["Actor"]["Attributes"]["signal"], event["timeNano"]))

    def __enter__(self) -> KillWatch:
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()
        self._reader.join(timeout=10)

    async def first(self, count: int) -> list[tuple[str, int]]:
        """The first ``count`` signals; fewer if the engine sent no more within 30 s."""

        async def seen() -> list[tuple[str, int]]:
            return list(self._seen)

        with contextlib.suppress(AssertionError):  # the caller's assertion names what was sent
            await eventually(seen, lambda kills: len(kills) >= count, "signalled", deadline=30)
        return list(self._seen)
