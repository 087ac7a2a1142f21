"""The agent's command handler never dies and never forgets, over the real bus and engine."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import msgpack
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import (
    ErrorReply,
    InspectReply,
    OperationOutcome,
    OperationReply,
)
from tests.conftest import SpawnedAgent
from tests.support.events import EventRecorder
from tests.support.tcp_forward import UnixSocketForwarder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]

NOT_TOKENS = (
    "é" * 300,  # once reached the file system as a name too long for it
    "../../outcomes/x",
    "a.b",
    "a b",
    "a" * 129,
    "",
)


async def test_a_command_id_that_is_not_a_token_is_refused_and_the_handler_keeps_serving(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    for bad_id in NOT_TOKENS:
        fields = msgpack.unpackb(encode(agent.apply(spec)), timestamp=3)
        fields["id"] = bad_id
        reply = await agent.request_raw(msgpack.packb(fields, datetime=True))
        assert isinstance(reply, ErrorReply), reply
        assert (reply.code, reply.in_reply_to) == ("invalid_message", None)
        assert "id" in reply.message
    still = await agent.request(agent.inspect("web"))
    assert isinstance(still, InspectReply), still
    assert still.status.state.value == "absent"  # nothing was applied
    outcomes = agent.agent.settings.state_dir / "outcomes"
    assert [path.name for path in outcomes.iterdir() if not path.name.endswith(".msgpack")] == []


async def test_a_fault_inside_the_agent_is_an_internal_error_reply_and_a_command_failed_event(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    journal = agent.agent.settings.state_dir / "journal"
    shutil.rmtree(journal)
    journal.write_text("not a directory")  # every journal write now fails with OSError
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    command = agent.apply(spec)
    failed_subject = subjects.host_event_subject(agent.host, "command_failed")
    async with EventRecorder(agent.client, failed_subject) as events:
        reply = await agent.request(command)
        assert isinstance(reply, ErrorReply), reply
        assert (reply.code, reply.in_reply_to) == ("internal_error", command.id)
        event = await events.wait_for(lambda m: isinstance(m, ErrorReply), timeout=10)
    assert event == reply
    stored = await agent.client.jetstream().get_last_msg(subjects.EVENTS_STREAM, failed_subject)
    assert stored.data is not None
    assert decode(stored.data) == reply

    journal.unlink()
    journal.mkdir()
    done = await agent.request(agent.apply(spec))  # the handler lives on
    assert isinstance(done, OperationReply), done
    assert done.outcome is OperationOutcome.DONE, done


async def test_an_unsettled_crash_blocks_new_operations_until_a_retried_recovery_settles_it(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    test_id: str,
) -> None:
    engine_socket = local_stack.docker_host.removeprefix("unix://")
    engine = UnixSocketForwarder(tmp_path / "engine.sock", Path(engine_socket))
    await engine.start()
    try:
        agent = await agent_process_factory(
            f"--docker-host=unix://{engine.listen}", FLEET_FAILPOINT="never"
        )
        await wait_until_serving(agent.api)
        port = reserve_loopback_port()
        await apply_ok(agent.api, demo_spec(local_stack.demo_image("1.0.0"), port))
        main = f"t{test_id}-p0-web"
        old_id = docker_client.containers.get(main).id

        # Killed with the old container set aside and no new one yet.
        assert await agent.process.stop() == 0
        await agent.process.start(FLEET_FAILPOINT="starting_new")
        await wait_until_serving(agent.api, deadline_s=60)
        crashed = agent.api.apply(demo_spec(local_stack.demo_image("1.1.0"), port))
        await agent.api.send(crashed)
        assert await agent.process.wait(timeout=90) == -signal.SIGKILL
        assert docker_client.containers.get(f"{main}--prev").id == old_id

        # Restarted while the engine is away: recovery fails; no new operation may start.
        await engine.close()
        outcome_subject = subjects.host_event_subject(agent.api.host, "operation_reply")
        async with EventRecorder(agent.api.client, outcome_subject) as events:
            await agent.process.start(FLEET_FAILPOINT="never")
            await wait_until_serving(agent.api, deadline_s=60)
            newer = agent.api.apply(demo_spec(local_stack.demo_image("2.0.0"), port))
            refused = await agent.api.request(newer)
            assert isinstance(refused, ErrorReply), refused
            assert refused.code == "recovery_pending"
            assert docker_client.containers.get(f"{main}--prev").id == old_id

            # The engine returns: the agent's own retry settles the crashed operation.
            await engine.start()
            settled = await events.wait_for(
                lambda m: isinstance(m, OperationReply) and m.in_reply_to == crashed.id,
                timeout=90,
            )
        assert isinstance(settled, OperationReply)
        assert settled.outcome is OperationOutcome.ROLLED_BACK, settled
        assert docker_client.containers.get(main).id == old_id
        recorded = await agent.api.request(crashed)
        assert isinstance(recorded, OperationReply)
        assert recorded.outcome is OperationOutcome.ROLLED_BACK

        accepted = await agent.api.request(agent.api.apply(newer.service))
        assert isinstance(accepted, OperationReply), accepted
        assert accepted.outcome is OperationOutcome.DONE, accepted
        log = agent.process.log_path.read_text()
        assert "recovery of web failed" in log
        assert "Traceback" not in log
    finally:
        await engine.close()


async def test_applying_the_spec_that_already_runs_changes_nothing_and_a_changed_one_replaces(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory()
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    await apply_ok(agent, spec)
    main = agent.agent.updater.main_name("web")
    before = docker_client.containers.get(main).attrs

    again = await apply_ok(agent, spec)  # a new command id: the outcome store cannot answer
    assert [reason.code for reason in again.reasons] == ["unchanged"]
    after = docker_client.containers.get(main).attrs
    assert (after["Id"], after["State"]["StartedAt"]) == (
        before["Id"],
        before["State"]["StartedAt"],
    )

    # Stopped by hand: the same spec is applied for real, and the service runs again.
    docker_client.containers.get(main).stop(timeout=1)
    restarted = await apply_ok(agent, spec)
    assert restarted.reasons == ()
    assert docker_client.containers.get(main).attrs["State"]["Running"]
    assert docker_client.containers.get(main).id != before["Id"]

    changed = spec.model_copy(
        update={"container": spec.container.model_copy(update={"env": {"GREETING": "new"}})}
    )
    current = docker_client.containers.get(main).id
    replaced = await apply_ok(agent, changed)
    assert replaced.reasons == ()
    assert docker_client.containers.get(main).id != current
