"""Rollouts across the lab's real hosts: each its own engine, its agent in a container
installed from a bundle, the bus a 3-node TLS cluster reached only through its link."""

from __future__ import annotations

import pytest

from tests.lab.conftest import LabFleet

# One group: the lab is one set of hosts, so its tests run on one test worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lab")]


async def test_a_rolling_update_of_demo_web_reaches_every_lab_host(lab_fleet: LabFleet) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")

    rolled = await fleet.fleetctl(
        "rollout", "start", fleet.service, "--image", lab.demo_image("1.1.0"),
        "--strategy", "rolling", "--max-unavailable", "1", "-w",
    )  # fmt: skip
    assert rolled.code == 0, (rolled, fleet.controller.log_text())
    assert fleet.running_images() == {host: fleet.pinned("1.1.0") for host in lab.hosts}
    listed = await fleet.fleetctl("hosts", "-o", "json")  # over TLS: nothing but the list
    assert (listed.code, listed.stderr) == (0, "")
