"""An app with a bridge network and a named volume, on the lab's real hosts (each its own
engine: bridge networks are kept off the shared test engine, DESIGN.md). The app's
members find each other by service name on the network the agent made; an update
keeps the network and the volume (README, "Apps from Compose files")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.lab.conftest import DOCKER_TIMEOUT, LabFleet
from tests.support.fleet import fleetctl
from tests.support.lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lab")]

APP_FILE = """\
services:
  cache:
    image: ${REGISTRY}/demo/web:1.0.0
    volumes:
      - data:/var/lib/cache
    healthcheck:
      test: wget -q -O /dev/null http://127.0.0.1:8080/health
      interval: 1s
      timeout: 2s
      retries: 2
  web:
    image: ${REGISTRY}/demo/web:${WEB_TAG:-1.0.0}
    ports: ["18080:8080", "18081:8080"]  # one container port on two host ports
    depends_on:
      cache:
        condition: service_healthy
    healthcheck:
      # Healthy only while it reaches the cache by its service name, on the app's network.
      test: wget -q -O /dev/null http://cache:8080/health
      interval: 1s
      timeout: 2s
      retries: 2
volumes:
  data: {}
x-fleetwave:
  update:
    max_unavailable: 1
"""


def engine_view(lab: Lab, host: str, app: str) -> dict[str, Any]:
    """The app on ``host``'s own engine: its network, volume and members."""
    client = docker.APIClient(base_url=lab.engine(host), timeout=DOCKER_TIMEOUT)
    try:
        network = client.inspect_network(f"{app}_default")
        members = {}
        for member in ("cache", "web"):
            info = client.inspect_container(f"{app}-{member}")
            members[member] = {
                "id": info["Id"],
                "health": info["State"].get("Health", {}).get("Status"),
                "networks": sorted(info["NetworkSettings"]["Networks"]),
                # What the engine bound (IPv4 and IPv6 alike), not only what was asked.
                "published": sorted(
                    {
                        binding["HostPort"]
                        for binding in (info["NetworkSettings"]["Ports"] or {}).get("8080/tcp")
                        or ()
                    }
                ),
            }
        volume = client.inspect_volume(f"{app}_data")
        return {
            "network": (network["Id"], network["Driver"]),
            "volume": (volume["Name"], volume["CreatedAt"]),
            "members": members,
        }
    finally:
        client.close()


@pytest.fixture
def app_removed_afterwards(lab_fleet: LabFleet) -> Iterator[str]:
    """The app's name (the test's service's); its containers, network and volume are
    removed from every lab host at the end (the lab outlives the test)."""
    app = lab_fleet.service
    yield app
    for host in lab_fleet.lab.hosts:
        client = docker.APIClient(base_url=lab_fleet.lab.engine(host), timeout=DOCKER_TIMEOUT)
        try:
            for container in client.containers(all=True, filters={"name": f"{app}-"}):
                client.remove_container(container["Id"], force=True)
            for network in client.networks(names=[f"{app}_default"]):
                client.remove_network(network["Id"])
            for volume in client.volumes().get("Volumes") or []:
                if volume["Name"] == f"{app}_data":
                    client.remove_volume(volume["Name"], force=True)
        finally:
            client.close()


async def test_an_apps_members_reach_each_other_by_name_on_its_bridge_network_across_updates(
    lab_fleet: LabFleet, app_removed_afterwards: str
) -> None:
    fleet, lab, app = lab_fleet, lab_fleet.lab, app_removed_afterwards
    path = fleet.work_dir / "compose.yaml"
    path.write_text(APP_FILE)

    async def apply(**tags: str) -> None:
        env = {**lab.env, "REGISTRY": lab.registry, **tags}
        done = await fleetctl(lab.nats, "apply", "-f", str(path), "--app", app, "-w", env=env)
        assert done.code == 0, (done, fleet.controller.log_text()[-3000:])

    await apply()
    first = {host: engine_view(lab, host, app) for host in lab.hosts}
    for host, view in first.items():
        assert view["network"][1] == "bridge", (host, view)
        for member in ("cache", "web"):
            assert view["members"][member]["networks"] == [f"{app}_default"], (host, view)
        assert view["members"]["web"]["published"] == ["18080", "18081"], (host, view)
        # web's check reaches http://cache:8080 by the name the network gives the cache.
        assert view["members"]["web"]["health"] == "healthy", (host, view)

    await apply(WEB_TAG="1.1.0")
    for host in lab.hosts:
        view = engine_view(lab, host, app)
        assert view["network"] == first[host]["network"], host  # the very same network
        assert view["volume"] == first[host]["volume"], host  # and volume, never made again
        assert view["members"]["cache"]["id"] == first[host]["members"]["cache"]["id"], host
        assert view["members"]["web"]["id"] != first[host]["members"]["web"]["id"], host
        assert view["members"]["web"]["health"] == "healthy", (host, view)
        assert view["members"]["web"]["published"] == ["18080", "18081"], (host, view)
