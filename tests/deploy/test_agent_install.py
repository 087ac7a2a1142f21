"""`fleet-agent install --mode container`: a host enrolled with a bundle runs the agent
image on its engine and joins a default-deny bus over mutual TLS, exactly as a user would
set it up (fleetctl pki init, hosts enroll --bundle, fleet-agent install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

from controller.state.intents import Fleet
from controller.state.store import ensure_streams
from fleet_lab.stack import LocalStack
from protocol.models import HostFacts
from tests.conftest import remove_test_containers
from tests.support.polling import eventually
from tests.support.secure_bus import run_fleetctl, started_secure_bus

pytestmark = pytest.mark.integration


def install(*args: str) -> subprocess.CompletedProcess[str]:
    executable = str(Path(sys.executable).parent / "fleet-agent")
    return subprocess.run(
        [executable, "install", *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_an_agent_installed_from_its_bundle_joins_the_bus_over_tls_from_its_container(
    agent_image: str,
    docker_client: docker.DockerClient,
    local_stack: LocalStack,
    tmp_path: Path,
    test_id: str,
) -> None:
    host = f"web-{test_id}"
    bundle = tmp_path / "host.tar"

    def enrol(pki: Path, url: str) -> None:
        run_fleetctl(
            "hosts", "enroll", host, "--pki", str(pki), "--bundle", str(bundle),
            "--nats", url, "--labels", "role=web", "--allow-unsigned",
        )  # fmt: skip

    name = f"t{test_id}-agent"
    args = [
        "--bundle", str(bundle), "--mode", "container", "--image", agent_image,
        "--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "state"),
        "--docker-host", local_stack.docker_host, "--name", name,
    ]  # fmt: skip
    async with started_secure_bus(tmp_path / "bus", enrol) as bus:
        controller = await bus.connect("controller")
        try:
            await ensure_streams(controller.jetstream(), None)  # as the controller does
            fleet = await Fleet(controller, host_timeout=30).open()
            done = install(*args)
            assert done.returncode == 0, done.stderr
            key = (tmp_path / "etc" / "host.key").read_text().strip().splitlines()[1]
            assert key not in done.stdout + done.stderr

            async def reported() -> list[HostFacts]:
                return await fleet.hosts({"role": "web"})

            seen = await eventually(reported, lambda h: [f.host for f in h] == [host], "joined")
            assert seen[0].labels == {"role": "web"}

            settings = docker_client.api.inspect_container(name)
            assert settings["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
            assert settings["HostConfig"]["NetworkMode"] == "host"
            assert settings["Config"]["Image"] == agent_image

            placed = (tmp_path / "etc" / "agent.toml").stat().st_ino
            again = install(*args)
            assert again.returncode == 2
            assert again.stderr.strip() == (
                f"fleet-agent install: a container named {name} exists already; "
                "pass --replace to take its place"
            )
            assert (tmp_path / "etc" / "agent.toml").stat().st_ino == placed  # not rewritten
        finally:
            await controller.close()
            remove_test_containers(docker_client, test_id)
