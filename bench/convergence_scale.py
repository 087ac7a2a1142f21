"""Convergence at fleet scale: hosts that join after a rollout completed, and what a
convergence pass costs the controller when there is nothing to do.

A FLEET SIMULATOR, as in rollout_scale.py: real nats-server and `fleetctl controller
run`, simulated hosts and runtime (Prepare takes --prepare-time, Apply --apply-time).

1. Late hosts: of --hosts (5000) simulated hosts, the first 90% get web rolled to the
   new image (the rollout declares the service); once it completed, the other 10% start
   heartbeating with no web at all. Printed: the time from their first heartbeat until
   every one of them runs the new image, the ideal (one convergence rollout with zero
   overhead: pre-flight waves x prepare time + update waves x apply time, max_unavailable
   10% of the whole matching fleet) and the ratio (target <= 1.10).
2. Idle: --idle-hosts (10000) hosts, every one converged. The converger's full pass and
   its pass over changed hosts (none), timed in this process against the real KV, median
   of 20, with a full pass at 1,000 hosts as the baseline of the ratio (target: a pass
   under 20 ms). Before each full pass a fifth of the hosts have a new heartbeat (same
   content, a new object): what heartbeats every 10 s bring in the 2 s between two full
   passes, and what the converger judges again. Then the controller process's CPU (% of
   a core) and peak RSS over
   --idle-seconds while those hosts heartbeat every 10 s (target: RSS <= 300 MB).
Figures only, never assertions: the machine is shared.

usage: python bench/convergence_scale.py [--hosts 5000] [--idle-hosts 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import psutil
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rollout_scale import (
    NEW_IMAGE,
    SimulatedFleet,
    fleetctl_executable,
    peak_rss,
    simulated_facts,
)
from controller.broker import NatsServer, find_nats_server_binary
from controller.leader.converger import Converger
from controller.rollouts.model import TERMINAL, RolloutSpec, resolve_amount
from controller.state.intents import Fleet
from controller.state.rollout_store import RolloutStore
from controller.state.services import ServiceStore
from controller.state.store import open_buckets
from protocol import subjects
from protocol.models import Envelope, HostFacts, utc_now
from protocol.spec import ServiceSpec

MB = 1024 * 1024
POLICY = RolloutSpec(max_unavailable="10%")


@asynccontextmanager
async def bus(work: Path, name: str) -> AsyncIterator[Client]:
    server = NatsServer(binary=find_nats_server_binary(), work_dir=work / f"nats-{name}")
    await server.start()
    nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield nc
    finally:
        await nc.close()
        await server.stop()


@asynccontextmanager
async def controller(nc: Client, work: Path, name: str) -> AsyncIterator[psutil.Process]:
    url = nc.connected_url
    assert url is not None
    log = (work / f"controller-{name}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        fleetctl_executable(),
        "controller",
        "run",
        f"--nats={url.scheme}://{url.netloc}",
        "--id=bench",
        "--host-timeout=60",
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def until(check: float, done: Callable[[], bool], timeout: float) -> None:
    """Poll ``done()`` every ``check`` seconds until true."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout:g}s")
        await asyncio.sleep(check)


async def late_hosts(args: argparse.Namespace, work: Path) -> None:
    size = args.hosts
    late = [f"late-{i:05d}" for i in range(size // 10)]
    async with bus(work, "late") as nc:
        fleet = await Fleet(nc, host_timeout=60).open()
        sim = SimulatedFleet(
            nc,
            [f"sim-{i:05d}" for i in range(size - len(late))],
            args.prepare_time,
            args.apply_time,
        )
        await sim.start()
        hosts_kv = await nc.jetstream(timeout=10).key_value(subjects.HOSTS_BUCKET)
        await sim.heartbeat_all(hosts_kv)
        stop = asyncio.Event()
        beating = asyncio.create_task(sim.heartbeat_loop(hosts_kv, stop))
        try:
            async with controller(nc, work, "late"):
                await asyncio.sleep(1.0)  # the controller has loaded the inventory
                target = ServiceSpec(name="web", image=NEW_IMAGE)
                record, _ = await fleet.plan_rollout("web", NEW_IMAGE, POLICY, spec_override=target)
                await fleet.start_rollout(record)

                async def ended() -> bool:
                    stored = await fleet.rollouts.get(record.id)
                    return stored is not None and stored.record.status in TERMINAL

                deadline = time.monotonic() + 600
                while not await ended():
                    if time.monotonic() > deadline:
                        raise SystemExit("the rollout did not end in 600s")
                    await asyncio.sleep(0.5)
                sim.add_fresh(late)
                sim.first_update = None  # from now on: the convergence rollout's
                started = time.monotonic()
                await sim.heartbeat_all(hosts_kv, late)
                await until(0.05, lambda: sim.running(NEW_IMAGE) == size, 600)
                took = time.monotonic() - started
                checks = (sim.first_update or started) - started
        finally:
            stop.set()
            await beating
            for task in sim.tasks:  # answers still waiting when the bus goes
                task.cancel()
            await asyncio.gather(*sim.tasks, return_exceptions=True)
    wave = max(1, resolve_amount(POLICY.max_unavailable, size, round_up=False))
    ideal_checks = math.ceil(len(late) / POLICY.preflight_parallelism) * args.prepare_time
    ideal = ideal_checks + math.ceil(len(late) / wave) * args.apply_time
    print(
        f"late hosts: {len(late)} of {size} join after the rollout: all converged in "
        f"{took:.1f}s, ideal {ideal:.1f}s, ratio {took / ideal:.3f} (until the first "
        f"update {checks:.2f}s against {ideal_checks:.1f}s of checks; the updates "
        f"{took - checks:.2f}s against {ideal - ideal_checks:.1f}s)"
    )


def converged_fleet(size: int, spec: ServiceSpec) -> dict[str, HostFacts]:
    return {f"sim-{i:05d}": simulated_facts(f"sim-{i:05d}", spec) for i in range(size)}


BEATING_SHARE = 5
"""One host in this many sends a new heartbeat between two full passes."""


async def pass_ms(
    converger: Converger, facts: dict[str, HostFacts], only: set[str] | None
) -> float:
    times = []
    hosts = sorted(facts)
    for turn in range(20):
        for host in hosts[turn % BEATING_SHARE :: BEATING_SHARE]:
            facts[host] = facts[host].model_copy()  # a new heartbeat, saying the same
        started = time.perf_counter()
        await converger.run_pass({}, facts, utc_now(), only=only)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def nowhere(subject: str, event: Envelope) -> None:
    """Events of the timed passes go nowhere (there are none: all is converged)."""


async def idle(args: argparse.Namespace, work: Path) -> None:
    spec = ServiceSpec(name="web", image=NEW_IMAGE)
    async with bus(work, "idle") as nc:
        rollouts_kv, services_kv, hosts_kv = await open_buckets(nc.jetstream(timeout=10))
        services = ServiceStore(services_kv)
        await services.add_revision("web", spec, lambda n: f"web-r{n}", utc_now(), policy=POLICY)
        await services.mark_current("web", 1)
        converger = Converger(RolloutStore(rollouts_kv), services, nowhere, host_timeout=60)
        baseline = await pass_ms(converger, converged_fleet(1000, spec), None)
        facts = converged_fleet(args.idle_hosts, spec)
        full = await pass_ms(converger, facts, None)
        changed = await pass_ms(converger, facts, set())

        sim = SimulatedFleet(nc, [f"sim-{i:05d}" for i in range(args.idle_hosts)], 0, 0)
        sim.specs = dict.fromkeys(sim.hosts, spec)
        await sim.heartbeat_all(hosts_kv)
        stop = asyncio.Event()
        beating = asyncio.create_task(sim.heartbeat_loop(hosts_kv, stop))
        try:
            async with controller(nc, work, "idle") as process:
                await asyncio.sleep(5.0)  # loaded, a few full passes done
                before = process.cpu_times()
                await asyncio.sleep(args.idle_seconds)
                after = process.cpu_times()
                rss = peak_rss(process.pid)
        finally:
            stop.set()
            await beating
    cpu = (after.user + after.system) - (before.user + before.system)
    print(
        f"idle, {args.idle_hosts} converged hosts: full pass {full:.1f} ms "
        f"({full / baseline:.1f}x the {baseline:.1f} ms at 1000 hosts), pass over changed hosts "
        f"{changed:.2f} ms  |  controller over {args.idle_seconds:g}s of heartbeats: CPU "
        f"{100 * cpu / args.idle_seconds:.0f}% of a core, peak RSS {rss / MB:.0f} MB"
    )


async def main(args: argparse.Namespace) -> None:
    print(
        f"simulated fleet (FLEET SIMULATOR: real nats-server and controller, simulated runtime):"
        f" prepare {args.prepare_time}s, apply {args.apply_time}s, max_unavailable 10%"
    )
    with tempfile.TemporaryDirectory(prefix="fleetwave-converge-") as scratch:
        await late_hosts(args, Path(scratch))
        await idle(args, Path(scratch))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--idle-hosts", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--prepare-time", type=float, default=0.2)
    parser.add_argument("--apply-time", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
