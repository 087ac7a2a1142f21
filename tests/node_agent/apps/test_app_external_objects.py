"""An app's external volumes and networks are someone else's to make (README, "Apps from
Compose files"): a host without one is not ready, and an update there fails before it
touches anything, rather than letting the engine make a new, empty volume; once it is
there, the app runs with it. Real engine, real agent over NATS; the external network
that exists is the engine's own `host` (no bridge networks on the shared engine)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import pytest

from controller.compose.project import compose_app
from fleet_lab.agent_client import AgentHandle
from fleet_lab.stack import LocalStack
from protocol.app import AppSpec
from protocol.models import OperationOutcome, OperationReply, PrepareReply
from tests.conftest import TEST_LABEL

pytestmark = pytest.mark.integration
StartAgent = Callable[..., Awaitable[AgentHandle]]
APP_FILE = """\
services:
  keeper:
    image: ${REGISTRY}/demo/web:${TAG:-1.0.0}
    network_mode: none
    volumes: [shared:/data]
volumes:
  shared: {external: true, name: "${VOLUME}"}
networks:
  outside: {external: true, name: "${NETWORK}"}
"""


async def test_an_app_whose_external_volume_or_network_is_missing_fails_before_touching_anything(
    agent_factory: StartAgent, local_stack: LocalStack, docker_client: docker.DockerClient,
    tmp_path: Path, test_id: str,
) -> None:  # fmt: skip
    agent = await agent_factory()
    keeper = f"{agent.agent.settings.container_prefix}ext-keeper"
    volume, network = f"t{test_id}-shared", f"t{test_id}-outside"
    path = tmp_path / "compose.yaml"
    path.write_text(APP_FILE)

    def app(network_name: str, tag: str = "1.0.0") -> AppSpec:
        environ = {
            "REGISTRY": local_stack.registry, "VOLUME": volume, "NETWORK": network_name,
            "TAG": tag,
        }  # fmt: skip
        return compose_app(path, "ext", environ).app

    missing = app(network)
    expected = [
        ("external_missing", f"volume '{volume}' is external (made by someone else) and not "
         "on this host"),
        ("external_missing", f"network '{network}' is external (made by someone else) and not "
         "on this host"),
    ]  # fmt: skip
    try:
        prepared = await agent.request(agent.prepare_app(missing), timeout=180)
        assert isinstance(prepared, PrepareReply), prepared
        assert prepared.ready is False
        assert [(r.code, r.text) for r in prepared.reasons] == expected

        failed = await agent.request(agent.apply_app(missing), timeout=180)
        assert isinstance(failed, OperationReply), failed
        assert failed.outcome is OperationOutcome.FAILED, failed
        assert [(r.code, r.text) for r in failed.reasons] == expected
        with pytest.raises(docker.errors.NotFound):  # the engine did not make it
            docker_client.volumes.get(volume)
        with pytest.raises(docker.errors.NotFound):  # nothing was created
            docker_client.containers.get(keeper)

        docker_client.volumes.create(volume, labels={TEST_LABEL: test_id})
        there = app("host")  # an external network the engine has
        done = await agent.request(agent.apply_app(there), timeout=180)
        assert isinstance(done, OperationReply), done
        assert done.outcome is OperationOutcome.DONE, done
        running = docker_client.api.inspect_container(keeper)
        assert [(m["Type"], m["Name"], m["Destination"]) for m in running["Mounts"]] == [
            ("volume", volume, "/data")
        ]

        # An update on a host that lost the external network leaves the running app as
        # it is. "hos" is a part of the name of the engine's own "host" network: the
        # engine's name filter would match it; only a whole name counts.
        refused = await agent.request(agent.apply_app(app("hos", tag="1.1.0")), timeout=180)
        assert isinstance(refused, OperationReply), refused
        assert refused.outcome is OperationOutcome.FAILED, refused
        assert [r.text for r in refused.reasons] == [
            "network 'hos' is external (made by someone else) and not on this host"
        ]
        after = docker_client.api.inspect_container(keeper)
        assert (after["Id"], after["State"]["Running"], after["Config"]["Image"]) == (
            running["Id"], True, running["Config"]["Image"],
        )  # fmt: skip
        assert after["State"]["StartedAt"] == running["State"]["StartedAt"]
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(keeper).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(volume).remove(force=True)
