"""Faults on the lab's real hosts during a rollout: a link cut, an engine stopped, a full
disk. Each host has its own engine and its agent in a container; the rollout's budget
is checked over everything the test did (lab_fleet), counting hosts out for any reason."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import docker
import pytest

from protocol.models import ImagesPruned, UpdatePhase, UpdateProgress
from tests.lab.conftest import LabFleet
from tests.support.events import progress_of
from tests.support.image_build import build_image
from tests.support.lab import Lab
from tests.support.polling import eventually

# One group: the lab is one set of hosts, so its tests run on one test worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lab")]


async def test_a_lab_host_cut_off_mid_update_finishes_alone_and_the_rollout_waits_for_it(
    lab_fleet: LabFleet,
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    cut_off, *others = lab.hosts  # sorts first: the rolling update starts with it
    slow_to_settle = str(fleet.spec_file("1.1.0", min_healthy=3.0))
    args = ["--spec", slow_to_settle, "--strategy", "rolling", "--max-unavailable", "1", "-w"]
    rolling = asyncio.create_task(fleet.fleetctl("rollout", "start", fleet.service, *args))
    try:
        stopping = progress_of(cut_off, UpdatePhase.STOPPING_OLD, "1.1.0", fleet.service)
        await fleet.events.wait_for(stopping, timeout=120)
        await lab.fault("cut", cut_off)

        async def images() -> dict[str, str | None]:
            return await asyncio.to_thread(fleet.running_images)

        # Alone, the host finishes the update it had: its own engine runs 1.1.0.
        new = fleet.pinned("1.1.0")
        await eventually(images, lambda found: found[cut_off] == new, "updated while cut off")
        # The controller stops hearing from it; by then it would have gone on if the
        # budget let it. Its update still holds the budget: nobody else has started.
        stale = await eventually(
            fleet.hosts, lambda h: h[cut_off]["status"] == "stale", "seen stale"
        )
        # Some controller passes (every 0.2 s) later, with the others beating on.
        seen_at = max(datetime.fromisoformat(h["sent_at"]).timestamp() for h in stale.values())
        await eventually(
            fleet.hosts,
            lambda h: (
                min(datetime.fromisoformat(h[o]["sent_at"]).timestamp() for o in others)
                > seen_at + 2
            ),
            "two more seconds of the others' heartbeats",
        )
        still = await images()
        assert {host: still[host] for host in others} == {h: fleet.pinned("1.0.0") for h in others}
        assert not rolling.done()
        await lab.fault("heal", cut_off)
        result = await asyncio.wait_for(rolling, 240)
    finally:
        rolling.cancel()
    assert result.code == 0, (result, fleet.controller.log_text())
    assert fleet.running_images() == {host: new for host in lab.hosts}
    # The update ran once: a retried command got the recorded outcome, not a second run.
    starting = progress_of(cut_off, UpdatePhase.STARTING_NEW, "1.1.0", fleet.service)
    started = fleet.events.matching(starting)  # a re-sent event keeps its id
    assert len({m.id for m in started}) == 1, started


async def test_a_lab_host_whose_engine_stopped_is_left_out_and_converges_once_it_is_back(
    lab_fleet: LabFleet,
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    *first, last = lab.hosts
    await lab.fault("engine-stop", last)
    # Its agent's container runs on (live-restore) and says the engine is down.
    reported = await eventually(fleet.hosts, lambda h: h[last]["engine_down"], "engine down")
    assert reported[last]["status"] == "up"

    # Two may be out and the stopped engine is one: the others go one at a time (the
    # budget is checked over the whole test), and the pre-flight names the one left out.
    args = ["--image", lab.demo_image("1.1.0"), "--max-unavailable", "2", "--min-ready", "2"]
    result = await fleet.fleetctl("rollout", "start", fleet.service, *args, "-w")
    assert result.code == 0, (result, fleet.controller.log_text())
    assert result.lines[-1].endswith("complete: all ready hosts updated; 1 not ready, left out")
    status = await fleet.fleetctl("rollout", "status", fleet.service, "-o", "json")
    left_out = json.loads(status.stdout)["hosts"][last]
    assert left_out["phase"] == "not_ready"
    assert [reason["code"] for reason in left_out["reasons"]] == ["engine_unavailable"]
    images = await asyncio.to_thread(fleet.running_images, tuple(first))
    assert images == {host: fleet.pinned("1.1.0") for host in first}

    # Nothing is sent to it while its engine is down, not by convergence either: its
    # heartbeats still say so well after the rollout was done.
    done_at = datetime.now(UTC).timestamp()
    await eventually(
        fleet.hosts,
        lambda h: (
            h[last]["engine_down"]
            and datetime.fromisoformat(h[last]["sent_at"]).timestamp() > done_at + 3
        ),
        "still down 3 s after the rollout",
    )
    late = fleet.events.matching(
        lambda m: (
            isinstance(m, UpdateProgress)
            and (m.host, m.service) == (last, fleet.service)
            and m.sent_at.timestamp() > done_at
        )
    )
    assert late == []  # not even a pre-flight

    # Back, it converges to what the rollout made the service's revision.
    await lab.fault("engine-start", last)

    async def everywhere() -> dict[str, str | None]:
        return await asyncio.to_thread(fleet.running_images)

    want = {host: fleet.pinned("1.1.0") for host in lab.hosts}
    await eventually(everywhere, lambda found: found == want, "converged", deadline=120)


async def test_a_lab_host_with_a_full_disk_is_named_by_the_pre_flight_and_nothing_changes(
    lab_fleet: LabFleet,
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    await fleet.deploy("1.0.0")
    full = lab.hosts[1]
    await lab.fault("fill", full, "100")  # 100 MiB left; an update needs 256 MiB and more
    result = await fleet.fleetctl(
        "rollout", "start", fleet.service, "--image", lab.demo_image("1.1.0"), "-w"
    )
    assert result.code == 1, result
    summary = result.lines.index(
        f"{fleet.service}-r2: failed: pre-flight: 2 of 3 hosts ready, 3 needed"
    )
    named = result.lines[summary + 1 :]
    disk = rf"{lab.disk_root(full)} \(measured at /\)"
    assert len(named) == 1, named
    assert re.fullmatch(
        rf"  {full}: insufficient_disk: \d+ MiB free on {disk}, \d+ MiB needed", named[0]
    ), named
    assert fleet.running_images() == {host: fleet.pinned("1.0.0") for host in lab.hosts}


@pytest.fixture
def ballast_image(docker_client: docker.DockerClient, lab: Lab, test_id: str) -> Iterator[str]:
    """demo/web with 40 MB of its own (random, so shared with no other image), in the
    registry, as the lab's hosts name it."""
    dockerfile = (
        "FROM 127.0.0.1:5000/demo/web:1.0.0\n"
        "USER 0\nRUN dd if=/dev/urandom of=/ballast bs=1048576 count=40\nUSER 65534:65534\n"
    )
    tag = f"127.0.0.1:5000/demo/ballast:{test_id}"
    build_image(docker_client, dockerfile, tag, network_mode="none")
    try:
        docker_client.images.push(tag)
        yield tag.replace("127.0.0.1:5000", lab.registry)
    finally:
        docker_client.images.remove(tag, force=True)


async def test_a_pre_flight_short_of_disk_removes_the_services_unneeded_image_first_when_allowed(
    lab_fleet: LabFleet, ballast_image: str
) -> None:
    fleet, lab = lab_fleet, lab_fleet.lab
    # The service ran the ballast image, then 1.0.0, then runs 1.1.0: the ballast image is
    # neither what it runs nor what a rollback needs, and no container uses it.
    for label, image in (
        ("ballast", ballast_image),
        ("1.0.0", lab.demo_image("1.0.0")),
        ("1.1.0", lab.demo_image("1.1.0")),
    ):
        spec = str(fleet.spec_of(image, label, prune_on_low_disk=True))
        done = await fleet.fleetctl("rollout", "start", fleet.service, "--spec", spec, "-w")
        assert done.code == 0, (done, fleet.controller.log_text())

    short = lab.hosts[1]
    # An update needs min_free_disk (256 MiB) and the image: 240 MiB left is too little,
    # and the ballast image's 40 MB is enough.
    await lab.fault("fill", short, "240")
    spec = str(fleet.spec_of(lab.demo_image("2.0.0"), "2.0.0", prune_on_low_disk=True))
    args = ["--spec", spec, "--allow-major", "-w"]
    result = await fleet.fleetctl("rollout", "start", fleet.service, *args)
    assert result.code == 0, (result, fleet.controller.log_text())
    assert fleet.running_images() == {host: fleet.pinned("2.0.0") for host in lab.hosts}
    pruned = fleet.events.matching(
        lambda m: isinstance(m, ImagesPruned) and (m.host, m.service) == (short, fleet.service)
    )
    assert len(pruned) == 1, pruned
    assert isinstance(pruned[0], ImagesPruned)
    # The engine knows it by its digest (the service ran it pinned).
    assert [ref.split("@")[0] for ref in pruned[0].removed] == [ballast_image.rsplit(":", 1)[0]]
    assert pruned[0].freed_bytes >= 40 * 1024 * 1024
    # By the pre-flight, before the host was ready: not by the pruning after an update.
    ready = fleet.events.matching(progress_of(short, UpdatePhase.READY, "2.0.0", fleet.service))
    assert len(ready) == 1, ready
    assert pruned[0].sent_at < ready[0].sent_at
    # Where the disk was not short, the pre-flight removed nothing: any pruning there is
    # the one after the update (keep 3), once the host was ready.
    for host in lab.hosts:
        if host == short:
            continue
        ready_there = fleet.events.matching(
            progress_of(host, UpdatePhase.READY, "2.0.0", fleet.service)
        )
        assert len(ready_there) == 1, ready_there
        at = ready_there[0].sent_at
        early = [
            m
            for _, m in fleet.events.messages
            if isinstance(m, ImagesPruned)
            and (m.host, m.service) == (host, fleet.service)
            and m.sent_at < at
        ]
        assert early == [], early
