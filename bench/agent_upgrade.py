"""`fleetctl agent upgrade` on the lab's hosts: per host, how long its handoff takes and
the longest time in which it answered no command; against a plain restart of an agent's
container (what an in-place update does), measured in the same run.

A probe on every host sends a signed read-only command (inspect) as soon as the last one
was answered, or after 0.1 s, for the whole run (tests/support/command_probe.py). The
agent image is upgraded from A to B (A with a label of its own) with
`--max-unavailable 1`, then back to A; each is one sample per host. A host's handoff
runs from its successor's creation to the removal of the old agent's container, after
`--min-healthy-time`; its silence is the longest gap between two answers over that
whole handoff, the successor's probation included. The
baseline is `docker restart` of one host's agent container: its silence is the longest
gap between answers from the restart to the first answer once it runs again.
Figures, never assertions.

usage: python bench/agent_upgrade.py [--min-healthy-time S]   (needs make lab-up)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.settings import load_signer
from fleet_lab.stack import load_local_stack
from protocol.bus_permissions import inbox_prefix
from tests.support.agent_image import build_agent_image
from tests.support.command_probe import CommandProbe
from tests.support.fleet import ControllerProcess, fleetctl
from tests.support.image_build import build_image
from tests.support.lab import Lab, lab_is_up, load_lab

AGENT = "fleet-agent"
PROBED_SERVICE = "bench-probe"
"""A service no host runs: its inspect is answered from the agent alone."""
PATIENCE = 0.1
"""A command unanswered this long is followed by the next: the figures' resolution."""


async def until(check: Callable[[], bool], what: str, deadline: float = 120.0) -> None:
    give_up = time.monotonic() + deadline
    while not check():
        if time.monotonic() > give_up:
            raise SystemExit(f"agent_upgrade: gave up waiting until {what}")
        await asyncio.sleep(0.1)


def image_b(agent_image: str) -> str:
    """Image A with a label of its own, in the registry: the same agent, a new image."""
    client = docker.DockerClient(base_url=load_local_stack().docker_host, timeout=60)
    try:
        tag = agent_image.rpartition(":")[0] + ":bench-b"
        build_image(client, f"FROM {agent_image}\nLABEL io.fleetwave.bench=b\n", tag)
        client.images.push(tag)
        return tag
    finally:
        client.close()


async def restart_baseline(lab: Lab, probe: CommandProbe) -> float:
    """The longest silence of a host whose agent container is restarted in place: from
    the restart until the first answer after the container runs again."""
    client = docker.APIClient(base_url=lab.engine(probe.host), timeout=60)
    try:
        start = time.time()
        await asyncio.to_thread(client.restart, AGENT, timeout=30)
        restarted = time.time()
    finally:
        client.close()
    await until(lambda: probe.answered_at[-1] > restarted, "the agent answered again")
    first = next(t for t in probe.answered_at if t > restarted)
    return probe.longest_silence(start, first)


def handoff_figures(lab: Lab, probe: CommandProbe, since: float) -> tuple[float, float]:
    """(handoff seconds, longest silence) of ``probe.host``'s upgrade since ``since``."""
    handoff = lab.handoff(probe.host, since)
    if handoff is None or handoff.gone is None:
        raise SystemExit(f"agent_upgrade: no whole handoff on {probe.host}: {handoff}")
    return handoff.gone - handoff.made, probe.longest_silence(handoff.made, handoff.gone)


Figures = dict[str, tuple[float, float]]
"""(handoff seconds, longest silence) by host, of one upgrade."""


async def upgrade(lab: Lab, image: str, min_healthy: float, probes: list[CommandProbe]) -> Figures:
    since = time.time()
    args = ["--image", image, "--max-unavailable", "1", "--min-healthy-time", f"{min_healthy:g}"]
    done = await fleetctl(lab.nats, "agent", "upgrade", *args, "-w", timeout=600, env=lab.env)
    if done.code != 0:
        raise SystemExit(f"agent_upgrade: the upgrade to {image} failed: {done.stderr[-500:]}")
    return {probe.host: handoff_figures(lab, probe, since) for probe in probes}


async def measure(lab: Lab, min_healthy: float, work: Path) -> None:
    agent_image = build_agent_image()
    image_a = agent_image.replace("127.0.0.1:5000", lab.registry)
    image_new = image_b(agent_image).replace("127.0.0.1:5000", lab.registry)
    signer = load_signer(Path(lab.env["FLEET_SIGNING_KEY_FILE"]))
    assert signer is not None
    controller = ControllerProcess(lab.nats, work / "controller.log", "bench", env=lab.env)
    client = await lab.as_controller()
    prefix = f"{inbox_prefix(lab.env['FLEET_BUS_USER'])}.bench"
    probes = [
        CommandProbe(client, signer, host, PROBED_SERVICE, prefix, patience=PATIENCE)
        for host in lab.hosts
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(probe.run(stop)) for probe in probes]
    await controller.start()
    try:
        await until(lambda: all(p.answered_at for p in probes), "every host answered")
        baseline = await restart_baseline(lab, probes[0])
        upgrades = [
            await upgrade(lab, image_new, min_healthy, probes),
            await upgrade(lab, image_a, min_healthy, probes),
        ]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await controller.stop()
        await client.close()
    report(probes, upgrades, baseline, min_healthy)


def report(
    probes: list[CommandProbe], upgrades: list[Figures], baseline: float, min_healthy: float
) -> None:
    print(f"agent upgrade, {len(probes)} lab hosts, --max-unavailable 1, "
          f"--min-healthy-time {min_healthy:g} s; two upgrades (A->B, B->A)")  # fmt: skip
    print(f"  baseline: docker restart of the agent container: {baseline:.2f} s without answers")
    silences = []
    for n, figures in enumerate(upgrades, 1):
        for host, (handoff, silence) in figures.items():
            silences.append(silence)
            print(
                f"  {host} upgrade {n}: handoff {handoff:5.1f} s "
                f"(of which probation {min_healthy:g} s), "
                f"longest without an answer {silence:.2f} s ({silence / baseline:.2f}x restart)"
            )
    print(
        f"  longest silence over all hosts: {max(silences):.2f} s "
        f"(median {statistics.median(silences):.2f} s); ratio to restart "
        f"{max(silences) / baseline:.2f}"
    )
    sent = sum(len(p.sent) for p in probes)
    twice = sum(1 for p in probes for count in p.answers.values() if count > 1)
    unheard = sum(sum(p.unheard.values()) for p in probes)
    print(
        f"  commands sent {sent}, answered twice {twice}, "
        f"taken by no agent at that moment (the server's 'no responders') {unheard}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-healthy-time", type=float, default=4.0)
    args = parser.parse_args()
    if not lab_is_up():
        raise SystemExit("agent_upgrade: the lab is not up (make lab-up)")
    # asyncio's notice on a TLS connection's end, once per connection: not a figure.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(measure(load_lab(), args.min_healthy_time, Path(work)))


if __name__ == "__main__":
    main()
