"""20,000 random and mutated messages to a real agent: every one is answered, with a typed
error where it must be refused, no traceback, and the managed container untouched."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import docker
import msgpack
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.models import (
    ApplyCommand,
    Command,
    ErrorReply,
    InspectReply,
    OperationReply,
    Reply,
    utc_now,
)
from protocol.signing import CommandSigner, generate_key
from tests.conftest import SpawnedAgent

pytestmark = pytest.mark.integration
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]

MESSAGES = 20_000
IN_FLIGHT = 64
SEED = 20261129
KINDS = ("apply", "prepare", "inspect", "rollback", "stage", "switch", "retire", "config")
TYPED_CODES = frozenset(
    {
        # decoding
        "payload_too_large",
        "malformed_payload",
        "unsupported_schema_version",
        "unknown_kind",
        "invalid_message",
        "not_a_command",
        # refused unread
        "unsigned",
        "unknown_key",
        "bad_signature",
        "non_canonical",
        "not_yet_valid",
        "replayed",
        "expired",
        "wrong_host",
    }
)
"""The README's refusals: anything else (internal_error above all) is a handler fault."""


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(11 if depth < 3 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice((True, False))
    if choice == 2:
        return rng.randint(-(2**63), 2**64 - 1)
    if choice == 3:
        return rng.uniform(-1e300, 1e300)
    if choice == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if choice == 5:
        return rng.randbytes(rng.randrange(64))
    if choice == 6:
        return "x" * rng.choice((0, 1, 64, 65, 128, 129, 4096, 100_000))
    if choice == 7:
        return rng.choice((*KINDS, "", "prepare_reply", "error", "ümlaut", "a" * 500))
    if choice == 8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        str(random_value(rng, 3)): random_value(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def mutate(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    """One change to a real command's fields: a value replaced or removed, or a key added,
    at the top or one level down. Never a no-op: a signed command left whole would run."""
    while (mutated := _mutated_once(rng, fields)) == fields:
        pass
    return mutated


def _mutated_once(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    mutated = dict(fields)
    target = mutated
    nested = [k for k, v in mutated.items() if isinstance(v, dict)]
    if nested and rng.random() < 0.4:
        key = rng.choice(nested)
        target = mutated[key] = dict(mutated[key])
    action = rng.randrange(3)
    if action == 0 and target:
        target[rng.choice(sorted(target))] = random_value(rng)
    elif action == 1 and target:
        del target[rng.choice(sorted(target))]
    else:
        target[str(random_value(rng, 3))] = random_value(rng)
    return mutated


class Fuzzer:
    def __init__(self, rng: random.Random, agent: SpawnedAgent, signer: CommandSigner) -> None:
        self.rng = rng
        self.agent = agent
        self.signer = signer
        self.spec = demo_spec("127.0.0.1:5000/demo/web:1.0.0", reserve_loopback_port())
        self.replayable = encode(signer.sign(agent.api.inspect("web")))
        self.deployed: ApplyCommand | None = None
        self.other_image = ""
        """An image the duplicate asks for, which would replace the container if run."""
        """The Apply that deployed the service: its id, sent again with other content."""
        self.kinds: Counter[str] = Counter()

    def real_command(self) -> Command:
        api = self.agent.api
        made: Command = self.rng.choice(
            (
                lambda: api.apply(self.spec),
                lambda: api.prepare(self.spec),
                lambda: api.inspect("web"),
                lambda: api.rollback("web"),
            )
        )()
        return made

    def message(self) -> bytes:
        kind = self.rng.choice(
            (
                "random_bytes",
                "random_msgpack",
                "mutated_unsigned",
                "mutated_signed",
                "wrong_host",
                "expired",
                "replayed",
                "foreign_key",
                "duplicate_id",
            )
        )
        self.kinds[kind] += 1
        made: Callable[[], bytes] = getattr(self, kind)
        return made()

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 7, 100, 5000)))

    def random_msgpack(self) -> bytes:
        return bytes(msgpack.packb(random_value(self.rng), use_bin_type=True))

    def mutated_unsigned(self) -> bytes:
        fields = msgpack.unpackb(encode(self.real_command()), timestamp=3)
        return bytes(msgpack.packb(mutate(self.rng, fields), datetime=True))

    def mutated_signed(self) -> bytes:
        fields = msgpack.unpackb(encode(self.signer.sign(self.real_command())), timestamp=3)
        return bytes(msgpack.packb(mutate(self.rng, fields), datetime=True))

    def wrong_host(self) -> bytes:
        api = self.agent.api
        command = api.inspect("web").model_copy(
            update={"host": f"other-{self.rng.randrange(10**9)}"}
        )
        return encode(self.signer.sign(command))

    def expired(self) -> bytes:
        past = utc_now() - timedelta(seconds=self.rng.randrange(1, 10**6))
        return encode(self.signer.sign(self.agent.api.apply(self.spec, expires_at=past)))

    def replayed(self) -> bytes:
        return self.replayable

    def foreign_key(self) -> bytes:
        return encode(CommandSigner(generate_key()[0]).sign(self.real_command()))

    def duplicate_id(self) -> bytes:
        """The deploying Apply's id on a new, validly signed command for another image
        (a new signature, so not a replay): it must get the recorded outcome, run nothing."""
        assert self.deployed is not None
        other = self.spec.model_copy(update={"image": self.other_image})
        # Expired ones too: a retry gets its recorded outcome even after it expired.
        expires = utc_now() + timedelta(
            seconds=self.rng.choice((-1, 1)) * self.rng.randrange(60, 3600)
        )
        again = self.deployed.model_copy(update={"service": other, "expires_at": expires})
        return encode(self.signer.sign(again))


async def test_twenty_thousand_random_and_mutated_commands_are_each_answered_safely(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    private, public = generate_key()
    signer = CommandSigner(private)
    agent = await agent_process_factory(FLEET_TRUSTED_COMMAND_KEYS=json.dumps([public]))
    await wait_until_serving(agent.api)
    fuzzer = Fuzzer(random.Random(SEED), agent, signer)
    fuzzer.spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    fuzzer.other_image = local_stack.demo_image("1.1.0")
    fuzzer.deployed = signer.sign(agent.api.apply(fuzzer.spec))
    deployed = await agent.api.request(fuzzer.deployed)
    assert isinstance(deployed, OperationReply), deployed
    first = await agent.api.request_raw(fuzzer.replayable)
    assert isinstance(first, InspectReply), first  # from now on, a replay
    main = f"t{test_id}-p0-web"
    before = docker_client.containers.get(main).attrs

    codes: Counter[str] = Counter()
    subject = subjects.command_subject(agent.api.host)
    pending = [fuzzer.message() for _ in range(MESSAGES)]
    for start in range(0, MESSAGES, IN_FLIGHT):
        batch = pending[start : start + IN_FLIGHT]
        replies = await asyncio.gather(
            *(agent.api.client.request(subject, data, timeout=30) for data in batch)
        )
        for reply in replies:
            try:
                message = decode(reply.data)
            except ProtocolError as exc:
                raise AssertionError(f"the agent sent an undecodable reply: {exc}") from exc
            if isinstance(message, Reply) and message.in_reply_to == fuzzer.deployed.id:
                # The recorded outcome, nothing run (a refusal would fail here too).
                assert message == deployed, message
                codes["recorded outcome"] += 1
                continue
            assert isinstance(message, ErrorReply), message
            codes[message.code] += 1

    assert sum(codes.values()) == MESSAGES  # every request got its reply
    assert set(codes) <= TYPED_CODES | {"recorded outcome"}, codes
    assert min(fuzzer.kinds.values()) > MESSAGES // 16, fuzzer.kinds  # every kind was sent
    for reached in ("invalid_message", "malformed_payload", "unknown_kind", "bad_signature"):
        assert codes[reached] > 100, codes  # the mutations reached the checks past decoding
    assert codes["replayed"] > 1000, codes
    assert codes["expired"] > 1000, codes
    assert codes["recorded outcome"] > 1000, codes
    after = docker_client.containers.get(main).attrs
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["State"]["Running"]
    log = agent.process.log_path.read_text(errors="replace")
    assert "Traceback" not in log
