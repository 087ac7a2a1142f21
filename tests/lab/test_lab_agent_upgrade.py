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
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import docker
import pytest

from controller.settings import load_signer
from protocol.agent_service import AGENT_SERVICE
from protocol.bus_permissions import inbox_prefix
from protocol.codec import decode, encode
from protocol.models import ApplyCommand, OperationOutcome, OperationReply, utc_now
from protocol.spec import ServiceSpec
from protocol.subjects import command_subject
from tests.lab.conftest import DOCKER_TIMEOUT, LabFleet
from tests.support.command_probe import CommandProbe
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


class SuccessorImages:
    """The agent image made new in several ways, each built (and pushed to the registry
    as the lab names it) the first time a test asks for it: the same agent (a label of
    its own), one that cannot reach the bus, one whose agent SIGKILLs itself at a phase
    of its handoff, and a broken build whose every process exits at start."""

    VARIANTS: ClassVar[Mapping[str, str]] = {
        "good": "",
        "no-bus": "ENV FLEET_NATS_URLS='[\"tls://10.253.0.1:1\"]'\n",
        # The package gone: the guard itself cannot start, as with a bad build.
        "broken": "RUN rm -r /opt/fleetwave/lib/python3*/site-packages/node_agent\n",
        **{phase: f"ENV FLEET_FAILPOINT={phase}\n" for phase in CRASH_PHASES},
    }

    def __init__(self, client: docker.DockerClient, base: str, lab: Lab, test_id: str) -> None:
        self.client, self.base, self.lab, self.test_id = client, base, lab, test_id
        self.made: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.made:
            tag = f"127.0.0.1:5000/fleetwave/agent:t{self.test_id}-{name}"
            label = f"LABEL io.fleetwave.test={self.test_id}-{name}\n"
            build_image(
                self.client, f"FROM {self.base}\n{label}{self.VARIANTS[name]}", tag,
                network_mode="none",  # no bridge network on the shared engine
            )  # fmt: skip
            self.client.images.push(tag)
            self.made[name] = tag.replace("127.0.0.1:5000", self.lab.registry)
        return self.made[name]

    def remove(self) -> None:
        for tag in self.made.values():
            self.client.images.remove(tag.replace(self.lab.registry, "127.0.0.1:5000"), force=True)


@pytest.fixture
def successor_images(
    docker_client: docker.DockerClient, agent_image: str, lab: Lab, test_id: str
) -> Iterator[SuccessorImages]:
    images = SuccessorImages(docker_client, agent_image, lab, test_id)
    try:
        yield images
    finally:
        images.remove()


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
    lab_fleet: LabFleet, successor_images: SuccessorImages
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
        events = lab.container_events(host, since)
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
    # The outcome store came through: each successor answers the deploy's apply, sent
    # again with the same id (now naming another image), with the very reply the old
    # agent recorded, and runs nothing.
    deployed = {
        m.sender: m
        for _, m in fleet.events.messages
        if isinstance(m, OperationReply) and m.service == fleet.service
    }
    for host in lab.hosts:
        original = deployed[host]
        assert original.in_reply_to is not None
        again = await resend_apply(fleet, host, original.in_reply_to, fleet.spec_file("1.1.0"))
        assert (again.id, again.outcome) == (original.id, OperationOutcome.DONE), again
    assert fleet.running_images() == {host: fleet.pinned("1.0.0") for host in lab.hosts}
    # The new agents serve: a rollout of the service goes through them.
    rolled = await fleet.fleetctl(
        "rollout", "start", fleet.service, "--image", lab.demo_image("1.1.0"), "-w"
    )
    assert rolled.code == 0, rolled
    assert fleet.running_images() == {host: fleet.pinned("1.1.0") for host in lab.hosts}


async def resend_apply(
    fleet: LabFleet, host: str, command_id: str, spec_file: Path
) -> OperationReply:
    """An apply of ``spec_file`` to ``host``, signed, under an earlier command's id."""
    signer = load_signer(Path(fleet.lab.env["FLEET_SIGNING_KEY_FILE"]))
    assert signer is not None
    spec = ServiceSpec.model_validate_json(await asyncio.to_thread(spec_file.read_text))
    command = ApplyCommand(
        id=command_id, host=host, sender="controller", expires_at=utc_now() + timedelta(minutes=1),
        service=spec,
    )  # fmt: skip
    client = await fleet.lab.as_controller()
    try:
        answer = await client.request(command_subject(host), encode(signer.sign(command)), 10)
    finally:
        await client.close()
    reply = decode(answer.data)
    assert isinstance(reply, OperationReply), reply
    return reply


async def test_a_successor_that_never_reaches_the_bus_is_removed_and_the_old_agent_serves_on(
    lab_fleet: LabFleet, successor_images: SuccessorImages
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


async def test_an_agent_image_that_exits_at_start_is_rolled_back_on_the_canary_and_stops_there(
    lab_fleet: LabFleet, successor_images: SuccessorImages
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    before = {host: engine_view(lab, host) for host in lab.hosts}
    args = ["--image", successor_images["broken"], "--canary", "1", "-w"]
    result = await fleet.fleetctl("agent", "upgrade", *args)
    assert result.code == PAUSED, result
    # README: the canary wave is the first host in sorted host-id order. It alone tried;
    # the others were checked and pulled (ready) and never sent the handoff.
    canary, *others = sorted(lab.hosts)
    status = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-o", "json")
    phases = {host: entry["phase"] for host, entry in json.loads(status.stdout)["hosts"].items()}
    assert phases == {canary: "failed", **dict.fromkeys(others, "ready")}, phases
    (reply,) = upgrade_replies(fleet)
    assert reply.sender == canary
    assert reply.failure is not None
    assert "stopped before it was ready" in reply.failure.reason.text
    # The successor's own last words, the missing package, reach the operator.
    assert any("No module named 'node_agent'" in line for line in reply.failure.last_log_lines)
    await the_old_agent_serves_again(fleet, before, result, "successor_not_ready", False)


@pytest.mark.parametrize("phase", CRASH_PHASES)
async def test_a_successor_killed_at_any_phase_of_its_handoff_leaves_the_old_agent_serving(
    lab_fleet: LabFleet, successor_images: SuccessorImages, phase: str
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
    lab_fleet: LabFleet, successor_images: SuccessorImages
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
    lab_fleet: LabFleet, successor_images: SuccessorImages
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


@contextlib.asynccontextmanager
async def probing(fleet: LabFleet, host: str) -> AsyncIterator[CommandProbe]:
    """A signed command goes to ``host`` every 0.3 s, or as soon as the last one is
    answered, for as long as the body runs; each reply is counted on a subject of the
    test's own, so a second answer (two agents holding the host) cannot hide. At the
    end, until no answer came for QUIET seconds."""
    signer = load_signer(Path(fleet.lab.env["FLEET_SIGNING_KEY_FILE"]))
    assert signer is not None
    client = await fleet.lab.as_controller()
    prefix = f"{inbox_prefix(fleet.lab.env['FLEET_BUS_USER'])}.handoff"
    probe = CommandProbe(client, signer, host, fleet.service, prefix)
    stop = asyncio.Event()
    sending = asyncio.create_task(probe.run(stop))
    try:
        yield probe
        stop.set()
        await sending

        async def quiet_for() -> float:
            return probe.quiet_for()

        await eventually(quiet_for, lambda quiet: quiet >= QUIET, "the answers stopped", 30)
    finally:
        stop.set()
        await sending
        await client.close()


def answered_once(probe: CommandProbe, gone: float) -> None:
    """No command was answered twice, and each sent after ``gone`` (the old agent's
    container removed; but the first, which may have been sent just before) once."""
    assert max(probe.answers.values()) == 1, probe.answers  # never two agents answering
    after = [command for at, command in probe.sent if at > gone]
    assert all(probe.answers[command] == 1 for command in after[1:]), (after, probe.answers)


async def test_commands_sent_all_through_a_handoff_are_each_answered_once_at_most(
    lab_fleet: LabFleet, successor_images: SuccessorImages
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    host = lab.hosts[0]
    since = time.time()
    async with probing(fleet, host) as probe:
        args = ["--image", successor_images["good"], "--min-healthy-time", "8"]
        selector = ["--selector", f"host=h{lab.number(host)}"]
        started = await fleet.fleetctl("agent", "upgrade", *args, *selector)
        assert started.code == 0, started
        await eventually(
            lambda: asyncio.to_thread(done_on, lab, host, since), bool, "the handoff ended", 120
        )
    handoff = lab.handoff(host, since)
    assert handoff is not None
    made, took, gone = handoff.made, handoff.took, handoff.gone
    assert took is not None
    assert gone is not None
    # The test reached every part of the handoff: while the successor got ready, and
    # while it held the host on probation.
    assert [c for at, c in probe.sent if made <= at <= took], (probe.sent, handoff)
    assert len([c for at, c in probe.sent if took <= at <= gone]) >= 5, (probe.sent, handoff)
    answered_once(probe, gone)


async def test_the_old_agent_killed_once_it_let_go_leaves_the_host_to_its_successor(
    lab_fleet: LabFleet, successor_images: SuccessorImages
) -> None:
    """The old agent SIGKILLed the moment it released the host's commands, its successor
    frozen (docker pause) once ready, so that it cannot take them: the engine starts the
    old agent again, which must not take the host back. No command is answered until the
    successor, thawed, takes over and finishes the handoff (done); never two agents
    answering; one agent at the end, the service untouched."""
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    host = lab.hosts[0]
    old = engine_view(lab, host)
    old_pid = container_pid(lab, host, old[AGENT]["id"])  # ready: killed at once below
    released = LAB_DIR / "hosts" / f"h{lab.number(host)}" / "state" / "handoff" / "released.json"
    engine = docker.APIClient(base_url=lab.engine(host), timeout=DOCKER_TIMEOUT)
    since = time.time()
    try:
        async with probing(fleet, host) as probe:
            args = ["--image", successor_images["good"], "--min-healthy-time", "4"]
            selector = ["--selector", f"host=h{lab.number(host)}"]
            started = await fleet.fleetctl("agent", "upgrade", *args, *selector)
            assert started.code == 0, started
            successor = await eventually(
                lambda: asyncio.to_thread(lambda: engine_view(lab, host).get(f"{AGENT}.next")),
                lambda found: found is not None, "the successor was made", 120,
            )  # fmt: skip
            assert successor is not None
            # Frozen once ready, before the old agent lets go: it cannot take the host
            # until it is thawed, whenever the kill below lands.
            await eventually(
                lambda: asyncio.to_thread(released.with_name("ready.json").exists), bool,
                "the successor was ready", 120,
            )  # fmt: skip
            await asyncio.to_thread(engine.pause, successor["id"])
            await eventually(
                lambda: asyncio.to_thread(released.exists), bool, "the old agent let go", 120
            )
            os.kill(old_pid, signal.SIGKILL)
            killed = time.time()
            await eventually(
                lambda: asyncio.to_thread(engine.logs, old[AGENT]["id"]),
                lambda logs: b"waiting to be stopped" in logs, "the old agent stood aside", 60,
            )  # fmt: skip
            # Long enough for the old agent, up again, to take the host had it wanted to
            # (it subscribes well within a second): 15 commands that nobody took.
            unheard_before = sum(probe.unheard.values())

            async def unheard_since() -> int:
                return sum(probe.unheard.values()) - unheard_before

            await eventually(unheard_since, lambda count: count >= 15, "commands nobody took", 60)
            assert [t for t in probe.answered_at if t > killed] == []  # nobody took the host
            state = await asyncio.to_thread(engine.inspect_container, old[AGENT]["id"])
            assert state["State"]["Running"], state["State"]  # up, and standing aside
            assert not await asyncio.to_thread(released.with_name("taken.json").exists)
            await asyncio.to_thread(engine.unpause, successor["id"])
            result = await fleet.fleetctl("rollout", "status", AGENT_SERVICE, "-w")
            assert result.code == 0, (result, fleet.controller.log_text())
            await eventually(
                lambda: asyncio.to_thread(done_on, lab, host, since), bool, "the handoff ended", 60
            )
    finally:
        for frozen in engine.containers(filters={"status": "paused"}):  # a failed test's
            engine.unpause(frozen["Id"])
        engine.close()
    after = engine_view(lab, host)
    agents = {name: c for name, c in after.items() if name.startswith(AGENT)}
    assert list(agents) == [AGENT], agents
    assert agents[AGENT]["running"], agents
    assert agents[AGENT]["id"] == successor["id"], agents
    assert after[fleet.service] == old[fleet.service]
    assert [(m.sender, m.outcome) for m in upgrade_replies(fleet)] == [
        (host, OperationOutcome.DONE)
    ]
    handoff = lab.handoff(host, since)
    assert handoff is not None
    assert handoff.gone is not None
    gone = handoff.gone
    answered_once(probe, gone)


def done_on(lab: Lab, host: str, since: float) -> bool:
    """The old agent's container is gone: the handoff on ``host`` is over."""
    handoff = lab.handoff(host, since)
    return handoff is not None and handoff.gone is not None
