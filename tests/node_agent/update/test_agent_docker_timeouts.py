"""A Docker call that times out but took effect in the engine: the agent reconciles.

README, "Updates": a call the engine does not answer within `docker_timeout` fails the
step; what the engine did anyway is put right before the reply. The engine here answers
the first of one chosen call 4 s late (after the agent's 1 s timeout) but carries it out at once.

The one right outcome per call and order:
- create or start of the new container: the update is rolled back; the old container,
  the same one, serves again, and the late new container does not linger;
- stop of the old container, in either order: the container is read back, found stopped,
  and the update goes on as if the answer had come: done, the old container removed.
Afterwards, with the engine answering in time again, the same update goes through.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol.models import OperationOutcome, OperationReply
from protocol.spec import UpdateOrder
from tests.support.slow_engine import SlowEngine

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
CALLS = {
    "create": re.compile(rb"^POST /v[\d.]+/containers/create"),
    "start": re.compile(rb"^POST /v[\d.]+/containers/[^/ ]+/start"),
    "stop": re.compile(rb"^POST /v[\d.]+/containers/[^/ ]+/stop"),
}
CASES = [
    ("create", UpdateOrder.STOP_FIRST, OperationOutcome.ROLLED_BACK),
    ("create", UpdateOrder.START_FIRST, OperationOutcome.ROLLED_BACK),
    ("start", UpdateOrder.STOP_FIRST, OperationOutcome.ROLLED_BACK),
    ("start", UpdateOrder.START_FIRST, OperationOutcome.ROLLED_BACK),
    ("stop", UpdateOrder.STOP_FIRST, OperationOutcome.DONE),
    ("stop", UpdateOrder.START_FIRST, OperationOutcome.DONE),
]


@pytest.fixture
async def engine(local_stack: LocalStack, tmp_path: Path) -> AsyncIterator[SlowEngine]:
    target = Path(local_stack.docker_host.removeprefix("unix://"))
    slow = await SlowEngine(tmp_path / "engine.sock", target, delay=4.0).start()
    try:
        yield slow
    finally:
        await slow.close()


@pytest.mark.parametrize(
    ("call", "order", "outcome"), CASES, ids=[f"{c} {o.value}" for c, o, _ in CASES]
)
async def test_a_docker_call_answered_too_late_is_reconciled_before_the_reply(
    call: str,
    order: UpdateOrder,
    outcome: OperationOutcome,
    engine: SlowEngine,
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
) -> None:
    agent = await agent_factory(docker_host=f"unix://{engine.listen}", docker_timeout=1.0)
    port = reserve_loopback_port()
    old_spec = demo_spec(local_stack.demo_image("1.0.0"), port, grace=1)
    await apply_ok(agent, old_spec.model_copy(update={"update_order": order}))
    main = agent.agent.updater.main_name("web")
    old_id = docker_client.api.inspect_container(main)["Id"]
    # Start-first runs both copies at once: on the host's network, each its own port.
    new_port = reserve_loopback_port() if order is UpdateOrder.START_FIRST else port
    new_spec = demo_spec(local_stack.demo_image("1.1.0"), new_port, grace=1)
    new_spec = new_spec.model_copy(update={"update_order": order})

    engine.slow = CALLS[call]
    reply = await agent.request(agent.apply(new_spec))
    engine.slow = None

    # That one call was made, carried out, and answered after the agent had given up.
    held = await engine.released()
    assert [CALLS[call].search(h.request_line) is not None for h in held] == [True], held
    assert held[0].client_gave_up, held
    assert isinstance(reply, OperationReply), reply
    assert reply.outcome is outcome, reply
    serving = docker_client.api.inspect_container(main)
    assert serving["State"]["Running"]
    if outcome is OperationOutcome.ROLLED_BACK:
        assert serving["Id"] == old_id  # the same container, not a copy
    else:
        assert serving["Config"]["Image"].endswith("1.1.0")
    prefix = main.removesuffix("web")
    left = docker_client.containers.list(all=True, filters={"name": prefix})
    assert [c.name for c in left] == [main]  # nothing the late call made lingers
    if outcome is OperationOutcome.ROLLED_BACK:
        await apply_ok(agent, new_spec)  # and the update goes through with a prompt engine
