"""An agent that trusts a controller key runs only commands signed by it, fresh and unseen.

"Nothing runs" is checked on the engine: the service's container must not exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import docker
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentClient, AgentHandle, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.codec import decode, encode
from protocol.models import (
    AnyMessage,
    ApplyCommand,
    ErrorReply,
    InspectReply,
    OperationOutcome,
    OperationReply,
    utc_now,
)
from protocol.signing import CommandSigner, generate_key
from tests.conftest import SpawnedAgent
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


@pytest.fixture
def controller_key() -> tuple[CommandSigner, str]:
    private, public = generate_key()
    return CommandSigner(private), public


def apply_of(agent: AgentClient, stack: LocalStack, service: str, **extra: Any) -> ApplyCommand:
    spec = demo_spec(stack.demo_image("1.0.0"), reserve_loopback_port(), name=service)
    return agent.apply(spec, **extra)


def container_exists(client: docker.DockerClient, name: str) -> bool:
    return bool(client.containers.list(all=True, filters={"name": f"^{name}$"}))


def same_fields_other_bytes(command: ApplyCommand) -> bytes:
    """The command's msgpack with `force` packed as an integer instead of a boolean."""
    assert command.force is False
    fields = msgpack.unpackb(encode(command), timestamp=3)
    fields["force"] = 0
    recoded: bytes = msgpack.packb(fields, datetime=True)
    assert decode(recoded) == command
    return recoded


def rejected_with(code: str) -> Callable[[AnyMessage], bool]:
    return lambda m: isinstance(m, ErrorReply) and m.code == code


async def test_only_a_fresh_command_signed_by_a_trusted_key_runs(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    controller_key: tuple[CommandSigner, str],
) -> None:
    signer, public = controller_key
    stranger = CommandSigner(generate_key()[0])
    agent = await agent_factory(trusted_command_keys=(public,))
    prefix = agent.agent.settings.container_prefix
    now = utc_now()
    signed_then_changed = signer.sign(apply_of(agent, local_stack, "tampered")).model_copy(
        update={"force": True}
    )
    cases: dict[str, ApplyCommand | bytes] = {
        "unsigned": apply_of(agent, local_stack, "unsigned"),
        "unknown_key": stranger.sign(apply_of(agent, local_stack, "stranger")),
        "bad_signature": signed_then_changed,
        "expired": signer.sign(
            apply_of(agent, local_stack, "expired", expires_at=now - timedelta(seconds=1))
        ),
        "not_yet_valid": signer.sign(
            apply_of(agent, local_stack, "future", sent_at=now + timedelta(minutes=5))
        ),
        # Validly signed, but `force: false` sent as the integer 0: it decodes to the very
        # fields that were signed, so only the check of the exact bytes can refuse it.
        "non_canonical": same_fields_other_bytes(
            signer.sign(apply_of(agent, local_stack, "recoded"))
        ),
    }
    async with EventRecorder(
        agent.client, subjects.host_event_subject(agent.host, "command_rejected")
    ) as events:
        for code, command in cases.items():
            wire = command if isinstance(command, bytes) else encode(command)
            reply = await agent.request_raw(wire)
            assert isinstance(reply, ErrorReply), (code, reply)
            assert reply.code == code
            await events.wait_for(rejected_with(code))
    for name in ("unsigned", "stranger", "tampered", "expired", "future", "recoded"):
        assert not container_exists(docker_client, f"{prefix}{name}")

    good = await agent.request(signer.sign(apply_of(agent, local_stack, "good")))
    assert isinstance(good, OperationReply)
    assert good.outcome is OperationOutcome.DONE
    assert container_exists(docker_client, f"{prefix}good")


async def test_a_replayed_command_is_refused_also_after_an_agent_restart_but_a_resend_is_answered(
    agent_process_factory: Callable[..., Awaitable[SpawnedAgent]],
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    controller_key: tuple[CommandSigner, str],
) -> None:
    signer, public = controller_key
    agent = await agent_process_factory(FLEET_TRUSTED_COMMAND_KEYS=json.dumps([public]))
    api = agent.api
    await wait_until_serving(api, deadline_s=60)
    command = signer.sign(apply_of(api, local_stack, "web"))
    wire = encode(command)
    first = await api.request_raw(wire)
    assert isinstance(first, OperationReply)
    assert first.outcome is OperationOutcome.DONE
    started = docker_client.api.inspect_container(agent.container("web"))["State"]["StartedAt"]

    replayed = await api.request_raw(wire)
    assert isinstance(replayed, ErrorReply)
    assert replayed.code == "replayed"
    assert await agent.process.stop() == 0
    await agent.process.start()
    await wait_until_serving(api, deadline_s=60)
    after_restart = await api.request_raw(wire)
    assert isinstance(after_restart, ErrorReply)
    assert after_restart.code == "replayed"

    # The controller's resend of the same command id is signed afresh: it gets the outcome.
    resent = signer.sign(command.model_copy(update={"sent_at": utc_now()}))
    answer = await api.request(resent)
    assert isinstance(answer, OperationReply)
    assert answer.in_reply_to == command.id
    now_started = docker_client.api.inspect_container(agent.container("web"))["State"]
    assert now_started["StartedAt"] == started, "a replay ran the update again"


fields = st.sampled_from(["service", "host", "expires_at", "id", "force", "sent_at", "key_id"])


@pytest.fixture
async def fuzz_target(
    agent_factory: AgentFactory, caplog: pytest.LogCaptureFixture
) -> tuple[AgentHandle, CommandSigner]:
    """One agent for every example of the fuzz test, trusting one key.

    Its warning per refused command is silenced: thousands of them would bury the
    report of a failing example."""
    caplog.set_level(logging.ERROR, logger="fleet-agent")
    private, public = generate_key()
    return await agent_factory(trusted_command_keys=(public,)), CommandSigner(private)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    garbage=st.binary(max_size=300),
)
async def test_random_and_mutated_envelopes_run_nothing_and_the_agent_stays_up(
    fuzz_target: tuple[AgentHandle, CommandSigner],
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    data: st.DataObject,
    garbage: bytes,
) -> None:
    agent, signer = fuzz_target
    base = signer.sign(apply_of(agent, local_stack, "fuzzed"))
    wire = bytearray(encode(base))
    position = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    wire[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    field = data.draw(fields)
    values = {
        "service": base.service.model_copy(update={"image": local_stack.demo_image("1.1.0")}),
        "host": "someone-else",
        "expires_at": base.expires_at + timedelta(hours=1),
        "id": "forged",
        "force": True,
        "sent_at": base.sent_at - timedelta(seconds=1),
        "key_id": "0" * 16,
    }
    mutated = base.model_copy(update={field: values[field]})
    for payload in (bytes(wire), garbage, encode(mutated)):
        reply = await agent.request_raw(payload, timeout=10)
        assert isinstance(reply, ErrorReply), reply
    name = f"{agent.agent.settings.container_prefix}fuzzed"
    assert not container_exists(docker_client, name)
    alive = await agent.request(signer.sign(agent.inspect("fuzzed")), timeout=10)
    assert isinstance(alive, InspectReply)
