"""`fleetctl agent upgrade` on the lab's real hosts, whose agents run as containers from
the agent image: the handoff to a successor, a successor that is never ready, and one
that dies after it took the host over (its guard brings the old agent back)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from protocol.agent_service import AGENT_SERVICE
from protocol.models import OperationOutcome, OperationReply
from tests.lab.conftest import DOCKER_TIMEOUT, LabFleet
from tests.support.lab import Lab

pytestmark = pytest.mark.integration
AGENT = "fleet-agent"


@pytest.fixture
def successor_images(
    docker_client: docker.DockerClient, agent_image: str, lab: Lab, test_id: str
) -> Iterator[dict[str, str]]:
    """The agent image made new three ways, in the registry as the lab names them: the
    same agent (a label of its own), one that cannot reach the bus, one that SIGKILLs
    itself right after it took a host over."""
    variants = {
        "good": "",
        "no-bus": "ENV FLEET_NATS_URLS='[\"tls://10.253.0.1:1\"]'\n",
        "dies": "ENV FLEET_FAILPOINT=handoff_taken\n",
    }
    made: dict[str, str] = {}
    try:
        for name, extra in variants.items():
            tag = f"127.0.0.1:5000/fleetwave/agent:t{test_id}-{name}"
            dockerfile = f"FROM {agent_image}\nLABEL io.fleetwave.test={test_id}-{name}\n{extra}"
            docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
            docker_client.images.push(tag)
            made[name] = tag.replace("127.0.0.1:5000", lab.registry)
        yield made
    finally:
        for tag in made.values():
            docker_client.images.remove(tag.replace(lab.registry, "127.0.0.1:5000"), force=True)


def engine_view(lab: Lab, host: str) -> dict[str, Any]:
    """The agent's containers on ``host`` (name -> image id and state), its service's."""
    client = docker.APIClient(base_url=lab.engine(host), timeout=DOCKER_TIMEOUT)
    try:
        found = {}
        for summary in client.containers(all=True):
            name = summary["Names"][0].lstrip("/")
            details = client.inspect_container(summary["Id"])
            found[name] = {
                "image": details["Config"]["Image"],
                "running": details["State"]["Running"],
                "started": details["State"]["StartedAt"],
                "id": details["Id"],
            }
        return found
    finally:
        client.close()


def upgrade_replies(fleet: LabFleet) -> list[OperationReply]:
    """Every answer to an agent upgrade the hosts published, once each (by message id)."""
    found = {
        m.id: m
        for _, m in fleet.events.messages
        if isinstance(m, OperationReply) and m.service == AGENT_SERVICE
    }
    return list(found.values())


async def test_an_agent_upgrade_hands_every_host_over_and_never_restarts_a_service(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    before = {host: engine_view(lab, host) for host in lab.hosts}
    image = successor_images["good"]
    args = ["--image", image, "--max-unavailable", "1", "--min-healthy-time", "2", "-w"]
    result = await fleet.fleetctl("agent", "upgrade", *args)
    assert result.code == 0, (result, fleet.controller.log_text())

    for host in lab.hosts:
        after = engine_view(lab, host)
        # One agent, from the new image, under the name it had; the old one is gone.
        agents = {name: c for name, c in after.items() if name.startswith(AGENT)}
        assert list(agents) == [AGENT], agents
        assert agents[AGENT]["running"]
        repository, _, tag = image.removeprefix(f"{lab.registry}/").rpartition(":")
        assert agents[AGENT]["image"] == fleet.pinned(tag, repository)
        # The service's container is the very same one, never restarted.
        assert after[fleet.service] == before[host][fleet.service]
    # Each host answered once, done, from its successor.
    replies = upgrade_replies(fleet)
    assert sorted((m.sender, m.outcome) for m in replies) == [
        (host, OperationOutcome.DONE) for host in lab.hosts
    ]
    # The new agents serve: a rollout of the service goes through them.
    rolled = await fleet.fleetctl(
        "rollout", "start", fleet.service, "--image", lab.demo_image("1.1.0"), "-w"
    )
    assert rolled.code == 0, rolled
    assert fleet.running_images() == {host: fleet.pinned("1.1.0") for host in lab.hosts}


async def test_a_successor_that_never_reaches_the_bus_is_removed_and_the_old_agent_serves_on(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    first = lab.hosts[0]
    before = engine_view(lab, first)
    args = ["--image", successor_images["no-bus"], "--max-unavailable", "1"]
    result = await fleet.fleetctl("agent", "upgrade", *args, "--ready-deadline", "8", "-w")
    assert result.code != 0, result
    after = engine_view(lab, first)
    assert after[AGENT] == before[AGENT]  # the same agent container, never stopped
    assert f"{AGENT}.next" not in after
    status = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-o", "json")
    entry = json.loads(status.stdout)["hosts"][first]
    assert entry["phase"] == "failed", entry
    # The others were never touched: the rollout stopped at its first failure.
    assert all("fleet-agent.next" not in engine_view(lab, host) for host in lab.hosts[1:])


async def test_a_successor_that_dies_after_taking_over_gives_the_host_back_to_the_old_agent(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    first = lab.hosts[0]
    before = engine_view(lab, first)
    args = ["--image", successor_images["dies"], "--max-unavailable", "1", "-w"]
    result = await fleet.fleetctl("agent", "upgrade", *args)
    assert result.code != 0, result
    replies = [m for m in upgrade_replies(fleet) if m.sender == first]
    assert [m.outcome for m in replies] == [OperationOutcome.ROLLED_BACK], (replies, result)
    assert replies[0].failure is not None
    assert replies[0].failure.reason.code == "successor_failed"
    after = engine_view(lab, first)
    # The very container that served before serves again, under its own name.
    assert after[AGENT]["id"] == before[AGENT]["id"]
    assert after[AGENT]["running"]
    assert after[fleet.service] == before[fleet.service]
    listed = await fleet.hosts()
    assert listed[first]["status"] == "up"
