"""Image retention on the real engine: after each successful update the agent removes the
service's images beyond the newest ``images.keep`` (README, "Image retention"), never the
one a rollback needs, never one a container uses.

Each test builds its own images (the demo image with a label of the test's: distinct
ids, no layers of their own), tagged only in a repository of the test's, so removing
them touches nothing any other test uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol.models import (
    ImagesPruned,
    OperationOutcome,
    OperationReply,
    StageCommand,
    SwitchCommand,
)
from protocol.spec import BlueGreen, Colour, ImageRetention, ServiceSpec
from tests.conftest import TEST_LABEL
from tests.support.events import EventRecorder
from tests.support.image_build import build_image

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
VERSIONS = 5


@pytest.fixture
def own_images(
    docker_client: docker.DockerClient, local_stack: LocalStack, test_id: str
) -> Iterator[list[str]]:
    """VERSIONS images of the test's own, oldest first; all removed afterwards."""
    base = local_stack.demo_image("1.0.0")
    tags = [f"127.0.0.1:5000/t{test_id}/keep:1.0.{n}" for n in range(VERSIONS)]
    for n, tag in enumerate(tags):
        dockerfile = f"FROM {base}\nLABEL {TEST_LABEL}={test_id} fleetwave.test.n={n}\n"
        build_image(docker_client, dockerfile, tag)
    try:
        yield tags
    finally:
        for tag in tags:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag, force=True)


def present(docker_client: docker.DockerClient, tags: list[str]) -> list[bool]:
    found = []
    for tag in tags:
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            found.append(False)
        else:
            found.append(True)
    return found


def spec_of(tag: str, port: int, keep: int) -> ServiceSpec:
    spec = demo_spec(tag, port, volume=None)
    return spec.model_copy(update={"images": ImageRetention(keep=keep)})


async def test_images_beyond_the_newest_kept_go_and_the_one_a_rollback_needs_stays(
    agent_factory: AgentFactory, docker_client: docker.DockerClient, own_images: list[str]
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    v0, v1, v2, _, _ = own_images
    async with EventRecorder(agent.client, f"fleet.evt.{agent.host}.images_pruned") as events:
        for tag in (v0, v1):
            await apply_ok(agent, spec_of(tag, port, keep=1))
        # Keep 1: v0 is beyond it, but it is what a rollback of v1 goes back to.
        assert present(docker_client, [v0, v1]) == [True, True]

        await apply_ok(agent, spec_of(v2, port, keep=1))
        # v1 is the rollback's now; v0 is nobody's.
        assert present(docker_client, [v0, v1, v2]) == [False, True, True]
        pruned = await events.wait_for(lambda m: isinstance(m, ImagesPruned))
        assert isinstance(pruned, ImagesPruned)
        assert (pruned.host, pruned.service, pruned.removed) == (agent.host, "web", (v0,))

        # The rollback finds its image here (these images are in no registry: a pull
        # would fail), and once back on v1 the image of v2 is the rollback's.
        back = await agent.request(agent.rollback("web"))
        assert isinstance(back, OperationReply)
        assert back.outcome is OperationOutcome.DONE, back.reasons
        assert present(docker_client, [v0, v1, v2]) == [False, True, True]


async def test_an_image_a_container_uses_stays_and_the_others_beyond_the_newest_go(
    agent_factory: AgentFactory,
    docker_client: docker.DockerClient,
    own_images: list[str],
    cleanup_containers: str,
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    _, v1, v2, _, _ = own_images
    # A container of someone else's, stopped, made from the oldest.
    docker_client.containers.create(own_images[0], labels={TEST_LABEL: cleanup_containers})
    async with EventRecorder(agent.client, f"fleet.evt.{agent.host}.images_pruned") as events:
        for tag in own_images:
            await apply_ok(agent, spec_of(tag, port, keep=2))

        # The newest two stay (v3 is also the rollback's), v0 is used; v1 and v2 went,
        # each after the update that put it beyond the newest two.
        assert present(docker_client, own_images) == [True, False, False, True, True]
        pruned = await events.wait_for_many(lambda m: isinstance(m, ImagesPruned), 2)
    assert [m.removed for m in pruned if isinstance(m, ImagesPruned)] == [(v1,), (v2,)]


async def test_an_image_another_service_would_roll_back_to_stays(
    agent_factory: AgentFactory, docker_client: docker.DockerClient, own_images: list[str]
) -> None:
    agent = await agent_factory()
    web_port, worker_port = reserve_loopback_port(), reserve_loopback_port()
    v0, v1, v2, v3, _ = own_images
    worker = [
        spec_of(tag, worker_port, keep=1).model_copy(update={"name": "worker"}) for tag in (v0, v1)
    ]
    for spec in worker:  # worker would roll back to v0, which no container runs now
        await apply_ok(agent, spec)
    for tag in (v0, v2, v3):  # web ran v0 too, and keeps only its newest
        await apply_ok(agent, spec_of(tag, web_port, keep=1))

    # v0 is beyond web's newest and not web's rollback (v2), but it is worker's (and v1
    # is what worker runs): all stay.
    assert present(docker_client, own_images[:4]) == [True, True, True, True]
    back = await agent.request(agent.rollback("worker"))
    assert isinstance(back, OperationReply)
    assert back.outcome is OperationOutcome.DONE, back.reasons


async def test_a_blue_green_switch_removes_what_neither_colour_runs_or_goes_back_to(
    agent_factory: AgentFactory, docker_client: docker.DockerClient, own_images: list[str]
) -> None:
    agent = await agent_factory()
    blue_port, green_port = reserve_loopback_port(), reserve_loopback_port()
    blue_green = BlueGreen(port=blue_port, alternate_port=green_port)
    v0, v1, v2, _, _ = own_images

    def spec(tag: str) -> ServiceSpec:
        return spec_of(tag, blue_port, keep=1).model_copy(update={"blue_green": blue_green})

    async def stage_and_switch(tag: str, colour: Colour) -> None:
        staged = await agent.request(
            StageCommand(service=spec(tag), colour=colour, **agent.command_fields())
        )
        assert isinstance(staged, OperationReply)
        assert staged.outcome is OperationOutcome.DONE, staged.reasons
        switched = await agent.request(
            SwitchCommand(service="web", colour=colour, **agent.command_fields())
        )
        assert isinstance(switched, OperationReply)
        assert switched.outcome is OperationOutcome.DONE, switched.reasons

    await apply_ok(agent, spec(v0))  # blue
    await stage_and_switch(v1, "green")
    # Keep 1, but blue (v0) is the switch-back's, and its copy is there.
    assert present(docker_client, [v0, v1]) == [True, True]

    await stage_and_switch(v2, "blue")  # blue's copy now runs v2
    # v1 is green's (the switch-back's); v0 is nobody's any more.
    assert present(docker_client, [v0, v1, v2]) == [False, True, True]
