"""The agent updates one host's service safely, over NATS, against the real engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol.models import (
    ContainerState,
    ErrorReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
)
from protocol.spec import PortMapping, UpdateOrder
from tests.support.http import wait_for_http

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


async def answers(port: int, path: str, status: int = 200) -> str:
    answer = await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}{path}", status)
    return answer.body


async def test_an_update_keeps_volume_data_env_ports_limits_and_restart_policy(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    volume = f"t{test_id}-data"
    env = {"GREETING": "hello"}
    ports = (PortMapping(container_port=port),)
    await apply_ok(
        agent,
        demo_spec(local_stack.demo_image("1.0.0"), port, volume=volume, env=env, ports=ports),
    )
    assert await answers(port, "/version") == "1.0.0"
    name = f"t{test_id}-0-web"
    before = docker_client.containers.get(name).attrs

    new_spec = demo_spec(local_stack.demo_image("1.1.0"), port, volume=volume, env=env, ports=ports)
    prepared = await agent.request(agent.prepare(new_spec))
    assert isinstance(prepared, PrepareReply)
    assert prepared.ready, prepared.reasons
    assert prepared.digest is not None
    pinned = new_spec.model_copy(update={"image": f"{new_spec.image}@{prepared.digest}"})
    reply = await apply_ok(agent, pinned)

    assert await answers(port, "/version") == "1.1.0"
    after = docker_client.containers.get(name).attrs
    assert after["Id"] != before["Id"]
    assert reply.status.digest == prepared.digest
    env_before, env_after = set(before["Config"]["Env"]), set(after["Config"]["Env"])
    assert {f"PORT={port}", "GREETING=hello"} <= env_after
    assert "DEMO_VERSION=1.1.0" in env_after, "the new image's own defaults apply"
    assert env_before - {"DEMO_VERSION=1.0.0"} <= env_after
    for key in ("RestartPolicy", "Memory", "NanoCpus", "NetworkMode", "Mounts"):
        assert after["HostConfig"][key] == before["HostConfig"][key], key
    assert after["Config"]["ExposedPorts"] == before["Config"]["ExposedPorts"]
    container = docker_client.containers.get(name)
    marker = container.exec_run(["cat", "/data/marker"]).output.decode()
    assert marker.startswith("created by 1.0.0")
    assert docker_client.containers.list(all=True, filters={"name": f"{name}--prev"}) == []


@pytest.mark.parametrize(
    ("tag", "exit_code", "log_text"),
    [("3.0.0-crash", 3, "crashes on start"), ("3.0.1-unhealthy", None, "starting on port")],
)
async def test_a_bad_version_is_rolled_back_and_the_old_one_answers_again(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    tag: str,
    exit_code: int | None,
    log_text: str,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port, volume=None))
    reply = await agent.request(
        agent.apply(demo_spec(local_stack.demo_image(tag), port, deadline=6))
    )
    assert isinstance(reply, OperationReply)
    assert reply.outcome is OperationOutcome.ROLLED_BACK
    assert reply.failure is not None
    assert reply.failure.exit_code == exit_code
    assert any(log_text in line for line in reply.failure.last_log_lines)
    assert await answers(port, "/version") == "1.0.0"
    assert await answers(port, "/health") == "ok"
    if tag.endswith("unhealthy"):
        assert any("500" in result.output for result in reply.failure.probe_results)


async def test_the_slow_version_passes_within_its_deadline_and_fails_a_shorter_one(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    slow = local_stack.demo_image("3.0.2-slow")
    short = await agent.request(agent.apply(demo_spec(slow, port, deadline=4)))
    assert isinstance(short, OperationReply)
    assert short.outcome is OperationOutcome.ROLLED_BACK
    assert await answers(port, "/version") == "1.0.0"
    long = await agent.request(agent.apply(demo_spec(slow, port, deadline=30)))
    assert isinstance(long, OperationReply)
    assert long.outcome is OperationOutcome.DONE
    assert await answers(port, "/version") == "3.0.2-slow"


async def test_a_stubborn_old_version_is_killed_after_the_grace_period(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("3.0.3-stubborn"), port, grace=1))
    await answers(port, "/health")
    reply = await apply_ok(agent, demo_spec(local_stack.demo_image("1.1.0"), port, grace=1))
    assert await answers(port, "/version") == "1.1.0"
    assert reply.status.image == local_stack.demo_image("1.1.0")


async def test_start_first_runs_the_new_copy_alongside_before_stopping_the_old(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    old_port, new_port = reserve_loopback_port(), reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), old_port))
    spec = demo_spec(local_stack.demo_image("1.1.0"), new_port).model_copy(
        update={"update_order": UpdateOrder.START_FIRST}
    )
    await apply_ok(agent, spec)
    assert await answers(new_port, "/version") == "1.1.0"


async def test_rollback_returns_to_the_previous_recorded_version(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.1.0"), port))
    reply = await agent.request(agent.rollback("web"))
    assert isinstance(reply, OperationReply)
    assert reply.outcome is OperationOutcome.DONE
    assert await answers(port, "/version") == "1.0.0"


async def test_rollback_with_no_recorded_previous_version_is_refused(
    agent_factory: AgentFactory,
) -> None:
    agent = await agent_factory()
    reply = await agent.request(agent.rollback("web"))
    assert isinstance(reply, ErrorReply)
    assert reply.code == "no_previous_version"


async def test_remove_stops_and_removes_the_service_and_the_agent_forgets_it(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    lock = tmp_path / "web.lock"
    agent = await agent_factory(update_lock_path=str(tmp_path / "{service}.lock"))
    port = reserve_loopback_port()
    applied = await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port, grace=1))
    assert applied.status.container_id is not None
    lock.touch()  # the application holds its update lock: not now
    deferred = await agent.request(agent.remove("web"))
    assert isinstance(deferred, OperationReply), deferred
    assert deferred.outcome is OperationOutcome.DEFERRED
    assert [reason.code for reason in deferred.reasons] == ["locked"]
    assert docker_client.containers.get(applied.status.container_id).status == "running"
    lock.unlink()
    for _ in range(2):  # removing what is already gone is done as well
        removed = await agent.request(agent.remove("web"))
        assert isinstance(removed, OperationReply), removed
        assert removed.outcome is OperationOutcome.DONE
        assert removed.status.state is ContainerState.ABSENT
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(applied.status.container_id)
    facts = await agent.agent.host_facts()
    assert [s.name for s in facts.services] == []  # no longer managed, no longer reported
