"""Pre-flight reasons, idempotency, busy services and bad input, over the real bus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import msgpack
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, demo_spec
from fleet_lab.stack import LocalStack
from fleet_registry.credentials import RegistryCredential
from protocol import SCHEMA_VERSION, subjects
from protocol.codec import decode, encode
from protocol.models import (
    ErrorReply,
    InspectReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    utc_now,
)

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


async def prepare_codes(agent: AgentHandle, image: str, **extra: object) -> set[str]:
    reply = await agent.request(agent.prepare(demo_spec(image, reserve_loopback_port()), **extra))
    assert isinstance(reply, PrepareReply), reply
    assert reply.ready is (not reply.reasons)
    return {reason.code for reason in reply.reasons}


async def test_prepare_tells_network_auth_missing_tag_and_tls_failures_apart(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    unreachable = "127.0.0.1:5999/demo/web:1.1.0"
    auth_image = local_stack.demo_image("1.1.0", registry=local_stack.auth_registry)
    assert await prepare_codes(agent, unreachable) == {"registry_unreachable"}
    assert await prepare_codes(agent, auth_image) == {"registry_auth"}
    assert await prepare_codes(agent, local_stack.demo_image("9.9.9-missing")) == {
        "image_not_found"
    }
    strict = await agent_factory(loopback_registries_insecure=False)
    assert await prepare_codes(strict, local_stack.demo_image("1.1.0")) == {"registry_tls"}


async def test_prepare_with_the_auth_registrys_credentials_is_ready(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    credential = RegistryCredential(username=local_stack.auth_user, password="wrong")
    wrong = await agent_factory(registry_credentials={local_stack.auth_registry: credential})
    image = local_stack.demo_image("1.1.0", registry=local_stack.auth_registry)
    assert await prepare_codes(wrong, image) == {"registry_auth"}
    right = await agent_factory(
        registry_credentials={
            local_stack.auth_registry: RegistryCredential(
                username=local_stack.auth_user, password=local_stack.auth_password
            )
        }
    )
    assert await prepare_codes(right, image) == set()


async def test_prepare_is_not_ready_when_memory_or_disk_is_below_the_threshold(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory(min_free_memory=2**50, min_free_disk=2**50)
    codes = await prepare_codes(agent, local_stack.demo_image("1.1.0"))
    assert codes == {"insufficient_memory", "insufficient_disk"}


async def test_prepare_refuses_a_downgrade_and_a_major_jump_unless_allowed(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    reply = await agent.request(agent.apply(demo_spec(local_stack.demo_image("1.1.0"), port)))
    assert isinstance(reply, OperationReply)
    assert reply.outcome is OperationOutcome.DONE
    assert await prepare_codes(agent, local_stack.demo_image("1.0.0")) == {"version_downgrade"}
    assert await prepare_codes(agent, local_stack.demo_image("2.0.0")) == {"version_major_jump"}
    assert await prepare_codes(agent, local_stack.demo_image("2.0.0"), allow_major=True) == set()


async def test_the_same_command_id_twice_runs_once_and_replies_the_same(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    command = agent.apply(demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port()))
    first = await agent.request(command)
    second = await agent.request(command)
    assert isinstance(first, OperationReply)
    assert first.outcome is OperationOutcome.DONE
    assert second == first
    status = await agent.request(agent.inspect("web"))
    assert isinstance(status, InspectReply)
    assert status.status.container_id == first.status.container_id
    # A retry that arrives after the command expired still gets the recorded outcome.
    late = command.model_copy(update={"expires_at": utc_now() - timedelta(seconds=1)})
    assert await agent.request(late) == first


async def test_a_second_operation_on_a_busy_service_gets_a_busy_reply(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    slow = agent.apply(demo_spec(local_stack.demo_image("3.0.2-slow"), port, deadline=30))
    running = asyncio.create_task(agent.request(slow))
    await asyncio.sleep(1.0)
    second = await agent.request(agent.apply(demo_spec(local_stack.demo_image("1.0.0"), port)))
    assert isinstance(second, ErrorReply)
    assert second.code == "busy"
    first = await running
    assert isinstance(first, OperationReply)
    assert first.outcome is OperationOutcome.DONE


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00garbage\xff", "malformed_payload"),
        (b"\x93\x01\x02", "malformed_payload"),
        (
            msgpack.packb({"schema_version": SCHEMA_VERSION + 1, "kind": "apply"}),
            "unsupported_schema_version",
        ),
        (msgpack.packb({"schema_version": 1, "kind": "format_disks"}), "unknown_kind"),
    ],
)
# Oversize payloads cannot reach the agent: nats-server enforces the codec's 1 MiB limit
# itself; the codec's own refusal is tested in tests/protocol/test_codec.py.
async def test_bad_bytes_on_the_command_subject_get_a_typed_error_and_the_agent_stays_up(
    agent_factory: AgentFactory, payload: bytes, code: str
) -> None:
    agent = await agent_factory()
    reply = await agent.request_raw(payload)
    assert isinstance(reply, ErrorReply)
    assert reply.code == code
    assert reply.in_reply_to is None
    alive = await agent.request(agent.inspect("web"))
    assert isinstance(alive, InspectReply)


async def test_expired_misaddressed_invalid_and_unknown_commands_are_refused(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    expired = agent.apply(spec, expires_at=utc_now() - timedelta(seconds=1))
    other_host = agent.apply(spec, host="someone-else")
    invalid_image = msgpack.unpackb(encode(agent.apply(spec)), timestamp=3)
    invalid_image["service"]["image"] = "Not A/Valid:Image"
    for data, code in (
        (encode(expired), "expired"),
        (encode(other_host), "wrong_host"),
        (msgpack.packb(invalid_image, datetime=True), "invalid_message"),
    ):
        reply = await agent.request_raw(data)
        assert isinstance(reply, ErrorReply), reply
        assert reply.code == code
    status = await agent.request(agent.inspect("never-deployed"))
    assert isinstance(status, InspectReply)
    assert status.status.state.value == "absent"


async def test_a_commands_outcome_is_stored_as_an_event_before_its_reply_is_sent(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    # Whatever the controller does on a reply (switch colours, start the next batch) must
    # land in the event stream after the outcome that caused it.
    agent = await agent_factory()
    stream = agent.client.jetstream()
    spec = demo_spec(local_stack.demo_image("9.9.9-missing"), reserve_loopback_port())
    for command in (
        agent.prepare(spec),
        agent.inspect("web"),
        agent.prepare(spec),
        agent.apply(spec, host="someone-else"),
        agent.inspect("web"),
    ):
        reply = await agent.request(command)
        subject = subjects.host_event_subject(
            agent.host, "command_rejected" if isinstance(reply, ErrorReply) else reply.kind
        )
        stored = await stream.get_last_msg(subjects.EVENTS_STREAM, subject)
        assert stored.data is not None
        assert decode(stored.data) == reply
