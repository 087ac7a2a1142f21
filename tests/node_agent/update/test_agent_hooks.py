"""pre_update and post_update hooks around one host's update: real agent, real engine.

The hooks write into the service's volume, so what the test reads there was written by
the container the hook ran in (its DEMO_VERSION says which).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import (
    HookName,
    HookRun,
    OperationOutcome,
    OperationReply,
    UpdatePhase,
    UpdateProgress,
)
from protocol.spec import Hook, HookPlace, Hooks, ServiceSpec
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


def in_container(script: str, timeout: float = 20.0) -> Hook:
    return Hook(command=("sh", "-c", script), timeout=timeout)


def with_hooks(spec: ServiceSpec, **hooks: Hook) -> ServiceSpec:
    return spec.model_copy(update={"hooks": Hooks(**hooks)})


async def failed_update(agent: AgentHandle, spec: ServiceSpec) -> OperationReply:
    reply = await agent.request(agent.apply(spec))
    assert isinstance(reply, OperationReply), reply
    assert reply.outcome is OperationOutcome.ROLLED_BACK, reply
    assert reply.failure is not None
    return reply


async def test_pre_update_runs_in_the_old_container_and_post_update_in_the_new_one(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    port, volume = reserve_loopback_port(), f"t{test_id}-hooks"
    log = 'echo "$FLEET_HOOK by $DEMO_VERSION: $FLEET_OLD_IMAGE -> $FLEET_IMAGE" >> /data/hooks'
    hooks = {"pre_update": in_container(log), "post_update": in_container(log)}
    first = with_hooks(demo_spec(local_stack.demo_image("1.0.0"), port, volume=volume), **hooks)
    await apply_ok(agent, first)  # a first deploy: no container yet for pre_update
    second = with_hooks(demo_spec(local_stack.demo_image("1.1.0"), port, volume=volume), **hooks)
    async with EventRecorder(agent.client, subjects.host_events_wildcard(agent.host)) as events:
        await apply_ok(agent, second)
    web = docker_client.containers.get(f"t{test_id}-0-web")
    written = web.exec_run(["cat", "/data/hooks"]).output.decode().splitlines()
    old, new = local_stack.demo_image("1.0.0"), local_stack.demo_image("1.1.0")
    assert written == [
        f"post_update by 1.0.0:  -> {old}",
        f"pre_update by 1.0.0: {old} -> {new}",
        f"post_update by 1.1.0: {old} -> {new}",
    ]
    runs = [m for _, m in events.messages if isinstance(m, HookRun)]
    assert [(r.result.hook, r.result.ok, r.result.exit_code) for r in runs] == [
        (HookName.PRE_UPDATE, True, 0),
        (HookName.POST_UPDATE, True, 0),
    ]
    # pre_update before the old container was stopped, post_update before it was removed.
    order = [
        m.result.hook.value if isinstance(m, HookRun) else m.phase.value
        for _, m in events.messages
        if isinstance(m, HookRun | UpdateProgress)
    ]
    assert order.index("pre_update") < order.index("stopping_old")
    assert order.index("post_update") < order.index("done")


async def test_a_failing_pre_update_stops_the_update_before_anything_is_touched(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    before = docker_client.containers.get(f"t{test_id}-0-web").id
    refusing = in_container('echo "draining: 3 sessions still open"; exit 3')
    newer = with_hooks(demo_spec(local_stack.demo_image("1.1.0"), port), pre_update=refusing)
    async with EventRecorder(agent.client, subjects.host_events_wildcard(agent.host)) as events:
        reply = await failed_update(agent, newer)
    assert reply.failure is not None
    assert reply.failure.reason.code == "pre_update_failed"
    assert reply.failure.reason.text == (
        "the pre_update hook exited 3: draining: 3 sessions still open"
    )
    (hook,) = reply.failure.hooks
    assert (hook.hook, hook.ok, hook.exit_code, hook.timed_out) == (
        HookName.PRE_UPDATE,
        False,
        3,
        False,
    )
    web = docker_client.containers.get(f"t{test_id}-0-web")
    assert (web.id, web.status) == (before, "running")  # the same container, untouched
    assert web.attrs["RestartCount"] == 0
    phases = {m.phase for _, m in events.messages if isinstance(m, UpdateProgress)}
    assert UpdatePhase.STOPPING_OLD not in phases
    assert UpdatePhase.STARTING_NEW not in phases
    assert [m.result.exit_code for _, m in events.messages if isinstance(m, HookRun)] == [3]


async def test_a_hook_past_its_timeout_is_killed_and_fails_the_update(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    hanging = in_container("sleep 300; true", timeout=1.0)  # sh stays, sleep is its child
    newer = with_hooks(demo_spec(local_stack.demo_image("1.1.0"), port), pre_update=hanging)
    reply = await failed_update(agent, newer)
    assert reply.failure is not None
    (hook,) = reply.failure.hooks
    assert (hook.timed_out, hook.exit_code) == (True, None)
    assert (
        reply.failure.reason.text
        == "the pre_update hook timed out: ran longer than 1s and was killed"
    )
    web = docker_client.containers.get(f"t{test_id}-0-web")
    # Killed, the shell and what it started, not left running in the container.
    assert web.exec_run(["pidof", "sleep"]).exit_code == 1


async def test_a_failing_post_update_restores_the_old_container(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    tmp_path: Path,
) -> None:
    agent = await agent_factory(allow_host_hooks=True)
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    before = docker_client.containers.get(f"t{test_id}-0-web").id
    seen = tmp_path / "seen"
    on_host = Hook(
        command=("sh", "-c", f'echo "$FLEET_SERVICE $FLEET_HOST" > {seen}; exit 1'),
        run_in=HookPlace.HOST,
    )
    newer = with_hooks(demo_spec(local_stack.demo_image("1.1.0"), port), post_update=on_host)
    reply = await failed_update(agent, newer)
    assert reply.failure is not None
    assert reply.failure.reason.text == "the post_update hook exited 1"
    assert [h.hook for h in reply.failure.hooks] == [HookName.POST_UPDATE]
    assert seen.read_text() == f"web {agent.host}\n"  # on the host, with its environment
    web = docker_client.containers.get(f"t{test_id}-0-web")
    assert (web.id, web.status) == (before, "running")  # the old container is back
    assert reply.status.image == local_stack.demo_image("1.0.0")


async def test_a_hook_on_the_host_is_refused_unless_the_host_allows_them(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    tmp_path: Path,
) -> None:
    agent = await agent_factory()  # FLEET_ALLOW_HOST_HOOKS unset: off
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    before = docker_client.containers.get(f"t{test_id}-0-web").id
    ran = tmp_path / "ran"
    on_host = Hook(command=("touch", str(ran)), run_in=HookPlace.HOST)
    newer = with_hooks(demo_spec(local_stack.demo_image("1.1.0"), port), pre_update=on_host)
    reply = await failed_update(agent, newer)
    assert reply.failure is not None
    assert reply.failure.reason.text == (
        "the pre_update hook could not run: "
        "hooks on the host are off here (the agent's FLEET_ALLOW_HOST_HOOKS)"
    )
    assert not ran.exists()
    assert docker_client.containers.get(f"t{test_id}-0-web").id == before
