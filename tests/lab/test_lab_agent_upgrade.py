"""`fleetctl agent upgrade` on the lab's real hosts, whose agents run as containers from
the agent image: the handoff to a successor, a successor that is never ready, and one
that dies after it took the host over (its guard brings the old agent back)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from nats.aio.msg import Msg

from controller.settings import load_signer
from protocol.agent_service import AGENT_SERVICE
from protocol.bus_permissions import inbox_prefix
from protocol.codec import encode
from protocol.models import InspectCommand, OperationOutcome, OperationReply, utc_now
from protocol.subjects import command_subject
from tests.lab.conftest import DOCKER_TIMEOUT, LabFleet
from tests.support.image_build import build_image
from tests.support.lab import LAB_DIR, Lab
from tests.support.polling import eventually

# One group: the lab is one set of hosts, so its tests run on one test worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lab")]
AGENT = "fleet-agent"
PAUSED = 10
QUIET = 3.0
"""Seconds without an answer after which no second answer to a command will come."""
"""fleetctl's exit code with -w when the rollout waits for the operator: a failed host
pauses an agent upgrade (the default failure action)."""
CRASH_PHASES = {
    # The successor's agent SIGKILLed at each point of its handoff, and the one answer
    # the host must give for it (the guard outlives the agent it runs).
    "handoff_started": "successor_not_ready",  # before it said it was ready
    "handoff_renamed": "successor_did_not_take_over",  # names swapped, commands not taken
    "handoff_taken": "successor_failed",  # took the host over, then died in probation
}


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
        **{phase: f"ENV FLEET_FAILPOINT={phase}\n" for phase in CRASH_PHASES},
    }
    made: dict[str, str] = {}
    try:
        for name, extra in variants.items():
            tag = f"127.0.0.1:5000/fleetwave/agent:t{test_id}-{name}"
            dockerfile = f"FROM {agent_image}\nLABEL io.fleetwave.test={test_id}-{name}\n{extra}"
            build_image(docker_client, dockerfile, tag)
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


def engine_events(lab: Lab, host: str, since: float) -> list[tuple[float, str, str, str]]:
    """(time, action, container id, name) of the containers made, renamed and removed
    on ``host``'s engine since ``since``, in order."""
    client = docker.APIClient(base_url=lab.engine(host), timeout=DOCKER_TIMEOUT)
    try:
        events = client.events(
            since=int(since), until=int(time.time()) + 1, decode=True,
            filters={"type": "container", "event": ["create", "rename", "destroy"]},
        )  # fmt: skip
        return [
            (e["timeNano"] / 1e9, e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"])
            for e in events
            if e["timeNano"] / 1e9 >= since
        ]
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
    since = time.time()
    image = successor_images["good"]
    args = ["--image", image, "--max-unavailable", "1", "--min-healthy-time", "4", "-w"]
    result = await fleet.fleetctl("agent", "upgrade", *args)
    assert result.code == 0, (result, fleet.controller.log_text())
    assert "no answer within" not in fleet.controller.log_text()  # answered, not timed out
    spans = []
    for host in lab.hosts:
        events = engine_events(lab, host, since)
        # Once per host: one successor made; it took the name, the old container went.
        actions = [(action, name) for _, action, _, name in events]
        assert actions == [
            ("create", f"{AGENT}.next"),
            ("rename", f"{AGENT}.previous"),
            ("rename", AGENT),
            ("destroy", f"{AGENT}.previous"),
        ], (host, events)
        (made, _, _, _), _, (took, _, _, _), (removed, _, old_id, _) = events
        assert old_id == before[host][AGENT]["id"]
        # Kept for its probation: removed no sooner than min_healthy_time after.
        assert removed - took >= 4, (host, events)
        spans.append((made, removed))
        # No note of the handoff is left behind in the host's state directory.
        assert not (LAB_DIR / "hosts" / f"h{lab.number(host)}" / "state" / "handoff").exists()
    # --max-unavailable 1: one host's handoff ended before the next one's began.
    spans.sort()
    assert all(end < start for (_, end), (start, _) in itertools.pairwise(spans))

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
    before = {host: engine_view(lab, host) for host in lab.hosts}
    args = ["--image", successor_images["no-bus"], "--max-unavailable", "1"]
    result = await fleet.fleetctl("agent", "upgrade", *args, "--ready-deadline", "8", "-w")
    assert result.code == PAUSED, result
    status = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-o", "json")
    phases = {host: entry["phase"] for host, entry in json.loads(status.stdout)["hosts"].items()}
    failed = [host for host, phase in phases.items() if phase == "failed"]
    assert len(failed) == 1, phases  # one at a time, and it stopped at the first failure
    # Every host, the failed one too, has the very agent container it had, never stopped,
    # and no successor left behind.
    for host in lab.hosts:
        after = engine_view(lab, host)
        assert after[AGENT] == before[host][AGENT], host
        assert f"{AGENT}.next" not in after, host
    (reply,) = upgrade_replies(fleet)  # the only host that tried answered, once
    assert (reply.sender, reply.outcome) == (failed[0], OperationOutcome.ROLLED_BACK), reply
    assert reply.failure is not None
    assert reply.failure.reason.code == "successor_not_ready"
    assert "not ready in time" in reply.failure.reason.text


@pytest.mark.parametrize("phase", CRASH_PHASES)
async def test_a_successor_killed_at_any_phase_of_its_handoff_leaves_the_old_agent_serving(
    lab_fleet: LabFleet, successor_images: dict[str, str], phase: str
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    before = {host: engine_view(lab, host) for host in lab.hosts}
    args = ["--image", successor_images[phase], "--max-unavailable", "1", "-w"]
    result = await fleet.fleetctl("agent", "upgrade", *args)
    assert result.code == PAUSED, result
    taken = phase == "handoff_taken"
    await the_old_agent_serves_again(fleet, before, result, CRASH_PHASES[phase], taken)


async def test_a_successor_container_killed_in_probation_is_restarted_and_gives_the_host_back(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    before = {host: engine_view(lab, host) for host in lab.hosts}
    image = successor_images["good"]
    args = ["--image", image, "--max-unavailable", "1", "--min-healthy-time", "120"]
    started = await fleet.fleetctl("agent", "upgrade", *args)
    assert started.code == 0, started

    def taken_over() -> list[str]:
        """Hosts whose successor took over: the old agent is stopped only after that."""
        views = {host: engine_view(lab, host) for host in lab.hosts}
        aside = {h: v.get(f"{AGENT}.previous") for h, v in views.items()}
        return [h for h, old in aside.items() if old is not None and not old["running"]]

    (host,) = await eventually(
        lambda: asyncio.to_thread(taken_over), bool, "a successor took a host over", 120
    )
    successor = engine_view(lab, host)[AGENT]
    assert successor["id"] != before[host][AGENT]["id"]
    os.kill(container_pid(lab, host, successor["id"]), signal.SIGKILL)  # the whole container

    result = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-w")
    assert result.code == PAUSED, result
    await the_old_agent_serves_again(fleet, before, result, "successor_failed", True)


def container_pid(lab: Lab, host: str, container: str) -> int:
    """The host-side pid of a container's first process (lab hosts share our pid space)."""
    client = docker.APIClient(base_url=lab.engine(host), timeout=DOCKER_TIMEOUT)
    try:
        return int(client.inspect_container(container)["State"]["Pid"])
    finally:
        client.close()


async def the_old_agent_serves_again(
    fleet: LabFleet, before: dict[str, dict[str, Any]], result: object, why: str, stopped: bool
) -> None:
    """One host answered, once: rolled back, for ``why``. Every host runs the very agent
    container it had, under its own name (never stopped unless the successor had taken
    over, ``stopped``), the service untouched, nothing of the handoff left; and each
    agent serves: a rollout of the service goes through all of them."""
    replies = upgrade_replies(fleet)
    assert [(m.outcome, m.failure is not None) for m in replies] == [
        (OperationOutcome.ROLLED_BACK, True)
    ], (replies, result)
    failure = replies[0].failure
    assert failure is not None
    assert failure.reason.code == why, failure
    assert failure.last_log_lines, failure  # the successor's log tail
    failed = replies[0].sender
    for host, view in {h: engine_view(fleet.lab, h) for h in fleet.lab.hosts}.items():
        if host == failed and stopped:
            assert view[AGENT]["id"] == before[host][AGENT]["id"], host
            assert view[AGENT]["running"], host
        else:
            assert view[AGENT] == before[host][AGENT], host
        assert view[fleet.service] == before[host][fleet.service], host
        assert [n for n in view if n.startswith(f"{AGENT}.")] == [], (host, view)
    rolled = await fleet.fleetctl(
        "rollout", "start", fleet.service, "--image", fleet.lab.demo_image("1.1.0"), "-w"
    )
    assert rolled.code == 0, rolled
    assert fleet.running_images() == {h: fleet.pinned("1.1.0") for h in fleet.lab.hosts}
    assert len(upgrade_replies(fleet)) == 1  # and no second answer came meanwhile


async def test_an_old_agent_killed_mid_handoff_comes_back_and_a_later_upgrade_is_not_refused(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    before = {host: engine_view(lab, host) for host in lab.hosts}
    args = ["--image", successor_images["no-bus"], "--max-unavailable", "1"]
    started = await fleet.fleetctl("agent", "upgrade", *args, "--ready-deadline", "8")
    assert started.code == 0, started

    def waiting() -> list[str]:  # hosts whose agent waits for a successor
        return [h for h in lab.hosts if f"{AGENT}.next" in engine_view(lab, h)]

    (host,) = await eventually(lambda: asyncio.to_thread(waiting), bool, "a successor started", 120)
    old = before[host][AGENT]
    os.kill(container_pid(lab, host, old["id"]), signal.SIGKILL)  # the old agent, mid-handoff

    # The engine brings the old agent back; the controller's retry of the command finds
    # the handoff dead (its successor gave up too) and runs it again, which fails again
    # the same way: the upgrade stops there, and the host is served by its old container.
    result = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-w")
    assert result.code == PAUSED, result
    after = engine_view(lab, host)
    assert after[AGENT]["id"] == old["id"]
    assert after[AGENT]["running"]
    assert f"{AGENT}.next" not in after
    replies = upgrade_replies(fleet)
    assert [(m.sender, m.outcome) for m in replies] == [(host, OperationOutcome.ROLLED_BACK)]
    # Nothing of the dead handoff holds the host: the next upgrade goes through.
    await fleet.fleetctl("rollout", "abort", AGENT_SERVICE)
    good = ["--image", successor_images["good"], "--min-healthy-time", "2", "-w"]
    upgraded = await fleet.fleetctl(
        "agent", "upgrade", *good, "--selector", f"host=h{lab.number(host)}"
    )
    assert upgraded.code == 0, upgraded
    assert engine_view(lab, host)[AGENT]["id"] != old["id"]


async def test_commands_sent_all_through_a_handoff_are_each_answered_once_at_most(
    lab_fleet: LabFleet, successor_images: dict[str, str]
) -> None:
    """Every half second, or as soon as the last one is answered, a signed command goes to
    one host for the whole of its agent's upgrade; each reply is counted on a subject of
    the test's own, so a second answer (two agents holding the host) cannot hide."""
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    host = lab.hosts[0]
    signer = load_signer(Path(lab.env["FLEET_SIGNING_KEY_FILE"]))
    assert signer is not None
    client = await lab.as_controller()
    prefix = f"{inbox_prefix(lab.env['FLEET_BUS_USER'])}.handoff"
    answers: Counter[str] = Counter()
    answered = asyncio.Event()
    last_answer = [time.monotonic()]

    async def count(msg: Msg) -> None:
        answers[msg.subject.rsplit(".", 1)[1]] += 1
        last_answer[0] = time.monotonic()
        answered.set()

    sent: list[tuple[float, str]] = []
    subscription = await client.subscribe(f"{prefix}.*", cb=count)
    try:
        since = time.time()
        args = ["--image", successor_images["good"], "--min-healthy-time", "8"]
        selector = ["--selector", f"host=h{lab.number(host)}"]
        started = await fleet.fleetctl("agent", "upgrade", *args, *selector)
        assert started.code == 0, started
        checked = time.monotonic()
        while time.monotonic() - checked < 1 or not done_on(lab, host, since):
            if time.monotonic() - checked >= 1:
                checked = time.monotonic()  # the engine is asked once a second
            command = signer.sign(
                InspectCommand(
                    service=fleet.service, host=host, sender="controller",
                    expires_at=utc_now() + timedelta(minutes=1),
                )
            )  # fmt: skip
            answered.clear()
            sent.append((time.time(), command.id))
            await client.publish(
                command_subject(host), encode(command), reply=f"{prefix}.{command.id}"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 0.3)
        await client.flush()

        async def quiet_for() -> float:  # a late second answer would come within seconds
            return time.monotonic() - last_answer[0]

        await eventually(quiet_for, lambda quiet: quiet >= QUIET, "the answers stopped", 30)
    finally:
        await subscription.unsubscribe()
        await client.close()
    events = engine_events(lab, host, since)
    made = next(t for t, action, _, name in events if (action, name) == ("create", f"{AGENT}.next"))
    took = next(t for t, action, _, name in events if (action, name) == ("rename", AGENT))
    gone = next(t for t, action, _, name in events if action == "destroy")
    # The test reached every part of the handoff: while the successor got ready, and
    # while it held the host on probation.
    assert [c for at, c in sent if made <= at <= took], (sent, events)
    assert len([c for at, c in sent if took <= at <= gone]) >= 5, (sent, events)
    assert max(answers.values()) == 1, answers  # never two agents answering
    after = [command for at, command in sent if at > gone]
    assert all(answers[command] == 1 for command in after[1:]), (after, answers)


def done_on(lab: Lab, host: str, since: float) -> bool:
    """The old agent's container is gone: the handoff on ``host`` is over."""
    return any(action == "destroy" for _, action, _, _ in engine_events(lab, host, since))
