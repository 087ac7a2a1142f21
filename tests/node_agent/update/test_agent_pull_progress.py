"""Pull progress from a real multi-layer image, large enough for progress in between."""

from __future__ import annotations

import io
import random
import re
import tarfile
from collections.abc import Awaitable, Callable
from contextlib import suppress

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, demo_spec
from fleet_lab.stack import LocalStack
from protocol.models import PrepareReply, UpdatePhase, UpdateProgress
from tests.support.events import EventRecorder
from tests.support.image_build import build_image_from_context
from tests.support.tcp_forward import TcpForwarder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]

LAYERS = 3
LAYER_BYTES = 16 * 1024 * 1024
LINK_BYTES_PER_SECOND = 12e6
"""The registry is reached over a slow link, as from a real host: a pull takes seconds."""
TAG = "1.2.0-layers"
"""Built from seeded bytes: the same digests every run, so the registry keeps one copy."""


def build_context(base: str) -> bytes:
    """A Dockerfile adding LAYERS incompressible files to ``base``, one layer each."""
    rng = random.Random(20261129)
    steps = [f"FROM {base}"] + [f"COPY blob{i} /blobs/{i}" for i in range(LAYERS)]
    files = {"Dockerfile": "\n".join(steps).encode() + b"\n"}
    files |= {f"blob{i}": rng.randbytes(LAYER_BYTES) for i in range(LAYERS)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def pushed_big_image(docker_client: docker.DockerClient, stack: LocalStack) -> str:
    """The multi-layer image, in the registry and not on this engine (so it is pulled)."""
    image = stack.demo_image(TAG)
    repository = image.rsplit(":", 1)[0]
    build_image_from_context(docker_client, build_context(stack.demo_image("1.0.0")), image)
    for line in docker_client.api.push(repository, tag=TAG, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(image, force=True)
    return image


async def test_prepare_reports_progress_between_zero_and_one_while_pulling_many_layers(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    pushed = pushed_big_image(docker_client, local_stack)
    host, port = local_stack.registry.rsplit(":", 1)
    link = TcpForwarder(("127.0.0.1", 0), (host, int(port)), bytes_per_second=LINK_BYTES_PER_SECOND)
    await link.start()
    image = pushed.replace(local_stack.registry, f"127.0.0.1:{link.port}", 1)
    agent = await agent_factory()
    digest: str | None = None
    try:
        async with EventRecorder(agent.client, f"fleet.evt.{agent.host}.update_progress") as ev:
            reply = await agent.request(agent.prepare(demo_spec(image, reserve_loopback_port())))
            assert isinstance(reply, PrepareReply), reply
            digest = reply.digest
            assert reply.ready, reply.reasons
        pulling = [
            m
            for m in ev.matching(lambda m: isinstance(m, UpdateProgress))
            if isinstance(m, UpdateProgress)
            and m.phase is UpdatePhase.PULLING
            and m.progress is not None
        ]
        fractions = [m.progress for m in pulling]
        assert fractions[-1] == 1.0
        between = {f for f in fractions if f is not None and 0.0 < f < 1.0}
        assert len(between) >= 2, fractions  # progress reported along the way, not just ends
        assert fractions[0] is not None
        assert fractions[0] < 0.5, fractions  # a pull that has just begun does not read as done
        assert all(f is not None and f < 1.0 for f in fractions[:-1]), fractions
        layer_counts = [re.match(r"(\d+)/(\d+) layers", m.detail) for m in pulling[:-1]]
        totals = {int(found.group(2)) for found in layer_counts if found}
        assert totals, [m.detail for m in pulling]
        assert max(totals) >= LAYERS  # every added layer was counted
    finally:  # the pulled copy goes (by digest, as the agent pulled it); the registry keeps it
        if digest is not None:
            with suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(f"{image.rsplit(':', 1)[0]}@{digest}", force=True)
        await link.close()
