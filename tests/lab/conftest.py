"""A fleet on the lab's real hosts: their agents, a controller on this machine, and the
budget checked over everything the test did (as fleet_factory does on the shared engine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from protocol import subjects
from protocol.agent_service import AGENT_SERVICE
from tests.support.events import EventRecorder
from tests.support.fleet import (
    HEARTBEATS,
    HOST_TIMEOUT,
    CommandResult,
    ControllerProcess,
    check_every_budget,
    fleet_spec,
    fleetctl,
)
from tests.support.lab import Lab

DOCKER_TIMEOUT = 30
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


@dataclass
class LabFleet:
    lab: Lab
    controller: ControllerProcess
    service: str
    """This test's service: a name of its own, since the lab outlives the test."""
    work_dir: Path
    events: EventRecorder

    async def fleetctl(self, *args: str, timeout: float = 240.0) -> CommandResult:
        """fleetctl as the lab's controller, with the test controller's host timeout."""
        env = {**self.lab.env, "FLEET_HOST_TIMEOUT": f"{HOST_TIMEOUT.total_seconds():g}"}
        return await fleetctl(self.lab.nats, *args, timeout=timeout, env=env)

    async def hosts(self) -> dict[str, dict[str, Any]]:
        """`fleetctl hosts -o json`, by host."""
        listed = await self.fleetctl("hosts", "-o", "json")
        assert listed.code == 0, listed
        return {entry["host"]: entry for entry in json.loads(listed.stdout)}

    async def deploy(self, tag: str) -> None:
        """The test's service at ``tag`` on every lab host (recreate, waited for)."""
        first = await self.fleetctl(
            "rollout", "start", self.service, "--spec", str(self.spec_file(tag)),
            "--strategy", "recreate", "-w",
        )  # fmt: skip
        assert first.code == 0, (first, self.controller.log_text())
        assert self.running_images() == {host: self.pinned(tag) for host in self.lab.hosts}

    def spec_file(self, tag: str, min_healthy: float = 0.5) -> Path:
        return self.spec_of(self.lab.demo_image(tag), tag, min_healthy=min_healthy)

    def spec_of(
        self, image: str, label: str, prune_on_low_disk: bool = False, **options: float
    ) -> Path:
        """The demo's spec file with ``image``, named after this test's service."""
        spec = fleet_spec(image, **options)
        images = spec.images.model_copy(update={"prune_on_low_disk": prune_on_low_disk})
        path = self.work_dir / f"{self.service}-{label}.json"
        named = spec.model_copy(update={"name": self.service, "images": images})
        path.write_text(named.model_dump_json())
        return path

    def pinned(self, tag: str, repository: str = "demo/web") -> str:
        """<repository>:<tag> as rollouts run it, pinned to the digest the registry gives."""
        answer = httpx.head(
            f"http://{self.lab.registry}/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=10,
        )
        answer.raise_for_status()
        return f"{self.lab.registry}/{repository}@{answer.headers['Docker-Content-Digest']}"

    def running_images(self, hosts: tuple[str, ...] | None = None) -> dict[str, str | None]:
        """Each host's running container of the service, read from its own engine."""
        found: dict[str, str | None] = {}
        for host in hosts or self.lab.hosts:
            client = docker.APIClient(base_url=self.lab.engine(host), timeout=DOCKER_TIMEOUT)
            try:
                state = client.inspect_container(self.service)
                running = state["State"]["Running"]
                found[host] = str(state["Config"]["Image"]) if running else None
            except docker.errors.NotFound:
                found[host] = None
            finally:
                client.close()
        return found

    def remove_service_containers(self) -> None:
        for host in self.lab.hosts:
            client = docker.APIClient(base_url=self.lab.engine(host), timeout=DOCKER_TIMEOUT)
            try:
                for container in client.containers(all=True, filters={"name": self.service}):
                    client.remove_container(container["Id"], force=True)
            except docker.errors.DockerException:
                pass  # an engine a test stopped: its host is brought back below
            finally:
                client.close()


@pytest.fixture
async def lab_fleet(lab: Lab, tmp_path: Path, test_id: str) -> AsyncIterator[LabFleet]:
    """The lab with this test's controller; every rollout of the test's service is
    checked against its budget at the end, counting hosts out for any reason."""
    watcher = await lab.watch()
    controller = ControllerProcess(lab.nats, tmp_path / "controller.log", "c0", env=lab.env)
    await controller.start()
    fleet: LabFleet | None = None
    try:
        async with (
            EventRecorder(watcher, subjects.EVENTS_WILDCARD) as events,
            EventRecorder(watcher, HEARTBEATS) as beats,
        ):
            fleet = LabFleet(lab, controller, f"w{test_id}", tmp_path, events)
            yield fleet
            listed = await fleet.fleetctl("rollout", "status", "-o", "json")
            assert listed.code == 0, listed
            mine = [r for r in json.loads(listed.stdout) if r["service"] == fleet.service]
            check_every_budget(events, mine, heartbeats=beats)
    finally:
        for host in lab.hosts:  # whatever a test did to a host, it is whole again
            for verb in ("heal", "engine-start", "unfill"):
                await lab.fault(verb, host)
        if fleet is not None:  # undeclared, so no later controller converges it back
            await fleet.fleetctl("delete", "service", fleet.service)
            # An agent upgrade the test left paused would refuse the next test's.
            await fleet.fleetctl("rollout", "abort", AGENT_SERVICE)
        await controller.stop()
        if fleet is not None:
            fleet.remove_service_containers()
        await watcher.close()
