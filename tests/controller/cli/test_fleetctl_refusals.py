"""`fleetctl rollout start` refuses an image the real local registry cannot resolve (exit 3).

A host is live (a real agent), so only the image stands between the command and a
started rollout; after each refusal no rollout exists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from controller.broker import NatsServer, reserve_loopback_port
from fleet_lab.agent_client import AgentHandle
from fleet_lab.stack import LocalStack
from tests.support.fleet import fleet_spec
from tests.support.terminal import Ran, run_piped

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
REFUSED = 3  # the README's exit code for a refused rollout


async def fleetctl(url: str, *args: str) -> Ran:
    return await asyncio.to_thread(run_piped, *args, FLEET_NATS_URL=url)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("repository", "image_not_found"),
        ("tag", "image_not_found"),
        ("registry", "registry_unreachable"),
    ],
)
async def test_an_image_the_registry_cannot_resolve_is_refused_with_exit_3(
    kind: str,
    reason: str,
    agent_factory: AgentFactory,
    nats_server: NatsServer,
    local_stack: LocalStack,
    tmp_path: Path,
    test_id: str,
) -> None:
    await agent_factory()
    image = {
        "repository": f"{local_stack.registry}/fleetwave/no-such-repository-{test_id}:1.0.0",
        "tag": local_stack.demo_image(f"no-such-tag-{test_id}"),
        # A loopback port with nothing listening: a registry host that is not there.
        "registry": f"127.0.0.1:{reserve_loopback_port()}/{local_stack.demo_repository}:1.0.0",
    }[kind]
    spec = tmp_path / "web.json"
    spec.write_text(fleet_spec(local_stack.demo_image("1.0.0")).model_dump_json())

    refused = await fleetctl(
        nats_server.url, "rollout", "start", "web", "--spec", str(spec), "--image", image
    )

    assert refused.code == REFUSED, refused
    assert len(refused.error_lines) <= 2, refused.stderr
    assert "the rollout is refused" in refused.error_lines[0]
    assert f"{reason}: " in refused.stderr
    assert "Traceback" not in refused.stderr
    listed = await fleetctl(nats_server.url, "rollout", "status", "-o", "json")
    assert listed.code == 0, listed
    assert json.loads(listed.stdout) == []


async def test_the_same_spec_with_an_image_the_registry_has_is_not_refused(
    agent_factory: AgentFactory,
    nats_server: NatsServer,
    local_stack: LocalStack,
    tmp_path: Path,
) -> None:
    """The control for the refusals above: they are about the image, nothing else."""
    await agent_factory()
    spec = tmp_path / "web.json"
    spec.write_text(fleet_spec(local_stack.demo_image("1.0.0")).model_dump_json())

    started = await fleetctl(
        nats_server.url, "rollout", "start", "web", "--spec", str(spec), "--dry-run"
    )

    assert started.code == 0, started
