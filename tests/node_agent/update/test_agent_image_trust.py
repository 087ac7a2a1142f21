"""The agent's own image checks: a pinned tag that moved, and its registry allowlist.

The tag is moved for real: the test pushes a new image over it in the local registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, demo_spec
from fleet_lab.stack import LocalStack
from protocol.image_ref import parse_image_reference
from protocol.models import ErrorReply, PrepareReply
from tests.support.registry_digest import registry_digest

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


def push_as(client: docker.DockerClient, source: str, target: str) -> None:
    """Point tag ``target`` at the image ``source`` in the registry (a `docker push`)."""
    ref = parse_image_reference(target)
    client.images.get(source).tag(ref.name, ref.tag)
    for line in client.images.push(ref.name, tag=ref.tag, stream=True, decode=True):
        assert "error" not in line, line


async def test_a_tag_that_moved_after_it_was_pinned_is_refused_by_digest(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    agent = await agent_factory()
    moving = local_stack.demo_image(f"moving-{test_id}")
    push_as(docker_client, local_stack.demo_image("1.0.0"), moving)
    vetted = await registry_digest(moving)
    pinned = f"{moving}@{vetted}"
    spec = demo_spec(pinned, reserve_loopback_port())

    ready = await agent.request(agent.prepare(spec))
    assert isinstance(ready, PrepareReply)
    assert ready.ready, ready.reasons
    assert ready.digest == vetted

    # Someone pushes another build over the vetted tag.
    push_as(docker_client, local_stack.demo_image("1.1.0"), moving)
    assert await registry_digest(moving) != vetted
    refused = await agent.request(agent.prepare(spec))
    assert isinstance(refused, PrepareReply)
    assert not refused.ready
    assert [r.code for r in refused.reasons] == ["digest_mismatch"]
    assert f"moved to {await registry_digest(moving)}" in refused.reasons[0].text
    assert f"pinned to {vetted}" in refused.reasons[0].text


async def test_an_image_from_a_registry_off_the_agents_allowlist_is_neither_pulled_nor_run(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory(allowed_registries=(local_stack.auth_registry,))
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())

    prepared = await agent.request(agent.prepare(spec))
    assert isinstance(prepared, PrepareReply)
    assert not prepared.ready
    assert [r.code for r in prepared.reasons] == ["registry_not_allowed"]
    assert local_stack.registry in prepared.reasons[0].text

    # Even though the image is already in the engine, Apply refuses it.
    applied = await agent.request(agent.apply(spec))
    assert isinstance(applied, ErrorReply)
    assert applied.code == "registry_not_allowed"
    name = agent.agent.settings.container_name(spec.name)
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
