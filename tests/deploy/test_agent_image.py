"""The fleet-agent image (deploy/agent) runs the agent as a user would: the settings file,
the state directory and the Docker socket mounted, and a HEALTHCHECK that tells whether
the agent's heartbeats reach NATS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import docker
import nats
import nats.js.errors
import pytest
from docker.models.containers import Container

from controller.broker import NatsServer
from fleet_lab.stack import LocalStack
from protocol import subjects
from tests.conftest import TEST_LABEL
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
STATE_IN_IMAGE = "/var/lib/fleetwave/agent"
SOCKET = "/var/run/docker.sock"
HEALTH_EVERY_NS = 500_000_000


@pytest.fixture
def agent_container(
    agent_image: str,
    docker_client: docker.DockerClient,
    nats_server: NatsServer,
    local_stack: LocalStack,
    tmp_path: Path,
    test_id: str,
) -> Iterator[Container]:
    """The image's own entrypoint, command and health check; only the check runs more
    often than the image says, so the test need not wait ten seconds for it."""
    settings = tmp_path / "etc"
    settings.mkdir()
    (settings / "agent.toml").write_text(
        f'nats_urls = ["{nats_server.url}"]\n'
        f'host_id = "img-{test_id}"\n'
        f'container_prefix = "t{test_id}-"\n'
        "heartbeat_interval = 0.5\n"
    )
    state = tmp_path / "state"
    state.mkdir()
    socket = local_stack.docker_host.removeprefix("unix://")
    container = docker_client.containers.run(
        agent_image,
        name=f"t{test_id}-agent",
        detach=True,
        network_mode="host",
        labels={TEST_LABEL: test_id},
        volumes={
            str(settings): {"bind": "/etc/fleetwave", "mode": "ro"},
            str(state): {"bind": STATE_IN_IMAGE, "mode": "rw"},
            socket: {"bind": SOCKET, "mode": "rw"},
        },
        healthcheck={"interval": HEALTH_EVERY_NS, "retries": 1},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def health_of(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status"))


async def test_the_agent_in_its_image_heartbeats_and_is_healthy_until_nats_goes_away(
    agent_container: Container, nats_server: NatsServer, test_id: str
) -> None:
    client = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
    try:

        async def heartbeat_seen() -> bool:
            try:  # the agent makes the bucket when it first starts
                hosts = await client.jetstream().key_value(subjects.HOSTS_BUCKET)
                await hosts.get(f"img-{test_id}")
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
                return False
            return True

        await eventually(heartbeat_seen, bool, "the containerised agent's heartbeat in KV")
    finally:
        await client.close()

    async def health() -> str:
        return health_of(agent_container)

    await eventually(health, lambda status: status == "healthy", "healthy")
    await nats_server.stop()
    await eventually(health, lambda status: status == "unhealthy", "unhealthy without NATS")
    last = agent_container.attrs["State"]["Health"]["Log"][-1]
    # The beat blocks on the dead bus for its 5 s request timeout: three 0.5 s intervals
    # pass first, so it is the age that tells.
    assert re.fullmatch(r"unhealthy: last heartbeat \d+s ago \(every 0\.5s\)\n", last["Output"])
