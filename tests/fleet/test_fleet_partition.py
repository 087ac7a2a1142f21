"""A real network partition: one host of the fleet lives in its own network namespace,
and the test cuts its only link in the middle of its update.

Nothing is closed when the link goes: packets are dropped, as on a real network. The
agent notices by its NATS keepalive (FLEET_NATS_PING_INTERVAL), keeps working on what
it already had, and catches up when the link is back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import docker
import pytest

from controller.broker import NatsServer
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import UpdatePhase, UpdateProgress, utc_now
from tests.conftest import FleetFactory
from tests.support.events import EventRecorder, progress_of
from tests.support.netns import IsolatedHost, isolated_host

pytestmark = pytest.mark.integration


@pytest.fixture
async def island(
    nats_server: NatsServer, local_stack: LocalStack, test_id: str
) -> AsyncIterator[IsolatedHost]:
    registry_port = int(local_stack.registry.rpartition(":")[2])
    async with isolated_host(f"fw-{test_id}", nats_server.port, registry_port) as host:
        yield host


def running_image(client: docker.DockerClient, container: str) -> str:
    """The image (as the spec named it) of ``container``, if it runs; asked of the engine."""
    attrs = client.containers.get(container).attrs
    image = attrs["Config"]["Labels"].get("io.fleetwave.image", "")
    return str(image) if attrs["State"]["Running"] else ""


async def test_a_host_cut_off_mid_update_finishes_alone_and_the_rollout_completes_once_healed(
    fleet_factory: FleetFactory, island: IsolatedHost, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(
        3, islands={0: island}, agent_env={0: {"FLEET_NATS_PING_INTERVAL": "1"}}
    )
    cut_off, *others = fleet.agents
    host = cut_off.api.host  # sorts first, so the rolling update starts with it
    async with EventRecorder(others[0].api.client, subjects.EVENTS_WILDCARD) as events:
        rolling = asyncio.create_task(fleet.roll("1.1.0", "--max-unavailable", "1", "-w"))
        await events.wait_for(progress_of(host, UpdatePhase.STOPPING_OLD, "1.1.0"), timeout=120)
        await island.cut()
        cut_at = utc_now()

        # Cut off, the host still finishes the update it had: the engine shows 1.1.0.
        for _ in range(150):
            image = await asyncio.to_thread(running_image, docker_client, cut_off.container("web"))
            if ":1.1.0" in image:
                break
            await asyncio.sleep(0.2)
        assert ":1.1.0" in image, image
        await cut_off.process.wait_logged("disconnected from NATS", 60)  # noticed by its keepalive
        # Its update still holds the whole budget: nobody else has started.
        for agent in others:
            image = await asyncio.to_thread(running_image, docker_client, agent.container("web"))
            assert ":1.0.0" in image, (agent.api.host, image)
        assert not rolling.done()

        await island.heal()
        healed_at = utc_now()
        result = await asyncio.wait_for(rolling, 240)
        assert result.code == 0, (result, fleet.controller.log_text())

    assert set((await fleet.versions()).values()) == {"1.1.0"}
    await cut_off.process.wait_logged("reconnected to NATS", 60)
    # The reply the dead link swallowed was sent again on the new connection: the
    # controller got it then, instead of waiting out the command's timeout to retry.
    assert re.search(r"re-sending [1-9]\d* recent replies", cut_off.process.log_text())
    assert f"{host}: no answer within" not in fleet.controller.log_text()
    # The update ran once: a retried command got the recorded outcome, not a second run.
    started = events.matching(progress_of(host, UpdatePhase.STARTING_NEW, "1.1.0"))
    assert len({m.operation_id for m in started if isinstance(m, UpdateProgress)}) == 1
    # What the host reported while cut off was kept, and arrived once the link was back.
    # (A live subscriber may see a re-sent event twice; the stream stores it once.)
    done = events.matching(progress_of(host, UpdatePhase.DONE, "1.1.0"))
    assert len({m.id for m in done}) == 1, done
    assert cut_at < done[0].sent_at < healed_at
