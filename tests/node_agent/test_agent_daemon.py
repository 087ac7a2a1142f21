"""The daemon around the updater: heartbeat, update lock, drain on SIGTERM, NATS outages."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from controller.broker import NatsServer, cluster_servers, reserve_loopback_port
from fleet_lab.agent_client import (
    AgentClient,
    AgentHandle,
    apply_ok,
    demo_spec,
    wait_until_serving,
)
from fleet_lab.agent_client import connect as connect_client
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.codec import decode
from protocol.models import (
    AnyMessage,
    ContainerState,
    HostFacts,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    UpdatePhase,
    UpdateProgress,
)
from tests.conftest import SpawnedAgent
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]


def phase_event(phase: UpdatePhase) -> Callable[[AnyMessage], bool]:
    return lambda message: isinstance(message, UpdateProgress) and message.phase is phase


async def read_host_facts(agent: AgentClient) -> HostFacts:
    kv = await agent.client.jetstream(timeout=5).key_value(subjects.HOSTS_BUCKET)
    entry = await kv.get(agent.host)
    assert entry.value is not None
    facts = decode(entry.value)
    assert isinstance(facts, HostFacts)
    return facts


async def test_the_heartbeat_writes_host_facts_with_labels_and_managed_services_to_kv(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory(labels={"role": "edge", "region": "eu"})
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port()))

    first = await read_host_facts(agent)
    while not first.services:  # the heartbeat after the update
        await asyncio.sleep(0.2)
        first = await read_host_facts(agent)
    assert first.host == agent.host
    assert first.labels == {"role": "edge", "region": "eu"}
    assert first.docker_version
    assert first.cpus >= 1
    assert 0 < first.memory_available <= first.memory_total
    assert 0 < first.disk_free <= first.disk_total
    (web,) = first.services
    assert web.name == "web"
    assert web.image == local_stack.demo_image("1.0.0")
    assert web.state is ContainerState.RUNNING
    assert web.digest is None or web.digest.startswith("sha256:")

    second = await read_host_facts(agent)
    while second.sent_at <= first.sent_at:
        await asyncio.sleep(0.2)
        second = await read_host_facts(agent)
    assert second.id != first.id


async def test_apply_is_deferred_while_the_application_holds_its_update_lock(
    agent_factory: AgentFactory, local_stack: LocalStack, tmp_path: Path
) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    agent = await agent_factory(update_lock_path=str(lock_dir / "{service}.lock"))
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    (lock_dir / "web.lock").touch()

    deferred = await agent.request(agent.apply(spec))
    assert isinstance(deferred, OperationReply)
    assert deferred.outcome is OperationOutcome.DEFERRED
    assert [reason.code for reason in deferred.reasons] == ["locked"]
    assert deferred.status.state is ContainerState.ABSENT

    forced = await agent.request(agent.apply(spec, force=True))
    assert isinstance(forced, OperationReply)
    assert forced.outcome is OperationOutcome.DONE

    (lock_dir / "web.lock").unlink()
    unlocked = await agent.request(agent.apply(spec))
    assert isinstance(unlocked, OperationReply)
    assert unlocked.outcome is OperationOutcome.DONE


async def test_prepare_reports_pull_progress_that_ends_at_one(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    async with EventRecorder(agent.client, f"fleet.evt.{agent.host}.>") as events:
        reply = await agent.request(
            agent.prepare(demo_spec(local_stack.demo_image("1.1.0"), reserve_loopback_port()))
        )
        assert isinstance(reply, PrepareReply)
        assert reply.ready, reply.reasons
    pulling = [
        message
        for message in events.matching(phase_event(UpdatePhase.PULLING))
        if isinstance(message, UpdateProgress) and message.progress is not None
    ]
    assert pulling
    fractions = [message.progress for message in pulling]
    assert fractions[-1] == 1.0
    assert all(0.0 <= (fraction or 0.0) <= 1.0 for fraction in fractions)


async def test_sigterm_lets_an_update_in_flight_finish_before_the_agent_exits(
    agent_process_factory: SpawnAgent, local_stack: LocalStack
) -> None:
    agent = await agent_process_factory()
    await wait_until_serving(agent.api)
    spec = demo_spec(
        local_stack.demo_image("3.0.2-slow"),
        reserve_loopback_port(),
        env={"SLOW_SECONDS": "3"},
    )
    async with EventRecorder(agent.api.client, f"fleet.evt.{agent.api.host}.>") as events:
        pending = asyncio.create_task(agent.api.request(agent.api.apply(spec)))
        await events.wait_for(phase_event(UpdatePhase.PROBING))
        agent.process.send(signal.SIGTERM)
        reply = await pending
    assert isinstance(reply, OperationReply)
    assert reply.outcome is OperationOutcome.DONE, reply
    assert await agent.process.wait() == 0
    assert "draining 1 command(s) in flight" in agent.process.log_text()


async def test_an_agent_started_while_nats_is_down_waits_quietly_and_serves_once_it_is_up(
    nats_server: NatsServer, local_stack: LocalStack, tmp_path: Path, test_id: str
) -> None:
    url = nats_server.url
    await nats_server.stop()
    host = f"offline-{test_id}"
    process = AgentProcess(
        args=agent_args(url, host, local_stack.docker_host, tmp_path / "agent", f"t{test_id}-"),
        log_path=tmp_path / "agent.log",
    )
    await process.start()
    try:
        await process.wait_logged("cannot reach NATS")
        assert process.running
        await nats_server.start()
        client = await connect_client(nats_server.url)
        try:
            await wait_until_serving(AgentClient(client=client, host=host), deadline_s=60)
        finally:
            await client.close()
    finally:
        assert await process.stop() == 0
    log = process.log_text()
    assert log.count("cannot reach NATS") == 1, log
    assert "connected to NATS" in log


async def test_sigterm_while_nats_is_down_exits_cleanly(
    local_stack: LocalStack, tmp_path: Path, test_id: str
) -> None:
    process = AgentProcess(
        args=agent_args(
            f"nats://127.0.0.1:{reserve_loopback_port()}",
            f"offline-{test_id}",
            local_stack.docker_host,
            tmp_path / "agent",
        ),
        log_path=tmp_path / "agent.log",
    )
    await process.start()
    try:
        await process.wait_logged("cannot reach NATS")
        assert process.running
        process.send(signal.SIGTERM)
        assert await process.wait(timeout=15) == 0
    finally:
        await process.stop()
    assert "Traceback" not in process.log_text()


async def test_an_agent_started_before_its_cluster_has_a_jetstream_leader_waits_then_serves(
    nats_server_binary: Path, local_stack: LocalStack, tmp_path: Path, test_id: str
) -> None:
    """Nodes and agents booting together: one node alone elects no JetStream leader, and
    two cannot place three replicas, so the agent cannot make its streams yet. It waits
    (one line per reason) instead of exiting, and serves once the peers are up."""
    nodes = cluster_servers(nats_server_binary, tmp_path / "cluster")
    urls = [node.url for node in nodes]
    host = f"early-{test_id}"
    process = AgentProcess(
        args=agent_args(urls, host, local_stack.docker_host, tmp_path / "agent", f"t{test_id}-"),
        log_path=tmp_path / "agent.log",
        env={"FLEET_STREAMS": json.dumps({"replicas": 3})},
    )
    try:
        await nodes[0].start()
        await process.start()
        await process.wait_logged("JetStream is not ready (no answer", deadline_s=60)
        await nodes[1].start()  # a leader now, but three replicas need a third node
        await process.wait_logged("(no suitable peers for placement)", deadline_s=60)
        assert process.running, process.log_text()
        await nodes[2].start()
        client = await connect_client(urls)
        try:
            await wait_until_serving(AgentClient(client=client, host=host), deadline_s=120)
        finally:
            await client.close()
        assert await process.stop() == 0, process.log_text()
    finally:
        await process.stop()
        for node in nodes:
            await node.stop()
    log = process.log_text()
    waits = [line.split(": ", 1)[1] for line in log.splitlines() if "is not ready" in line]
    assert len(waits) == len(set(waits)), log  # told once per reason, not once per retry
    assert "Traceback" not in log, log


async def test_sigterm_while_waiting_for_jetstream_exits_cleanly(
    nats_server_binary: Path, local_stack: LocalStack, tmp_path: Path, test_id: str
) -> None:
    nodes = cluster_servers(nats_server_binary, tmp_path / "cluster")
    process = AgentProcess(
        args=agent_args(
            [node.url for node in nodes],
            f"waiting-{test_id}",
            local_stack.docker_host,
            tmp_path / "agent",
        ),
        log_path=tmp_path / "agent.log",
    )
    try:
        await nodes[0].start()  # alone: no JetStream leader can be elected
        await process.start()
        await process.wait_logged("JetStream is not ready", deadline_s=60)
        process.send(signal.SIGTERM)
        assert await process.wait(timeout=15) == 0, process.log_text()
    finally:
        await process.stop()
        await nodes[0].stop()
    assert "Traceback" not in process.log_text()
