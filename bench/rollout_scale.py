"""The controller at fleet scale: 100 to 10,000 hosts at max_unavailable 10%.

A FLEET SIMULATOR, not real hosts: one process answers for every simulated host over a
real nats-server, speaking the real protocol (msgpack envelopes on fleet.cmd.<host>,
HostFacts heartbeats in KV fleet_hosts). Its container runtime is simulated: Prepare
takes --prepare-time seconds and Apply --apply-time seconds, then succeeds. The
controller is the real `fleetctl controller run`, in its own process, measured with psutil.

Printed per size:
- wall: from the rollout record being written to the controller recording it complete;
- ideal: pre-flight waves x prepare time + update waves x apply time (what a controller
  with zero overhead would take); the ratio wall / ideal (target <= 1.10 at 1000 hosts);
- command round trip p50/p99, the controller's own overhead per command: from the
  record naming a command (the pass's decision, written before the command is sent; seen
  by the record's watcher) to the host receiving it (seen by a reader process of its
  own, as a host would read it), plus from the host's reply crossing the bus (seen by
  that reader too) to the controller having written it into the record (the simulated
  work in between is left out). Also shown: from the command's own stamp (taken when it
  is built) to the host, and the receipt at the answering simulator, busy as it is with a
  whole wave. Target p99 <= 100 ms at 5,000 hosts;
- controller CPU (seconds, and % of one core over the rollout) and peak RSS (VmHWM;
  target <= 300 MB at 1000 hosts).
Figures only, never assertions: the machine is shared.

usage: python bench/rollout_scale.py [--sizes 100,1000,5000,10000] [--apply-time 2]
       [--prepare-time 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary
from controller.rollouts.model import TERMINAL, RolloutSpec, resolve_amount
from controller.state.intents import Fleet
from controller.state.rollout_encoding import base_key, changes_prefix, decode_header, header_key
from protocol import subjects
from protocol.codec import decode, encode
from protocol.fingerprint import image_digest, settings_fingerprint
from protocol.models import (
    ApplyCommand,
    ContainerState,
    Health,
    HostFacts,
    OperationOutcome,
    OperationReply,
    PrepareCommand,
    PrepareReply,
    ServiceStatus,
    utc_now,
)
from protocol.spec import ServiceSpec

OLD_IMAGE = "127.0.0.1:5000/demo/web:1.0.0"
NEW_IMAGE = "127.0.0.1:5000/demo/web:1.1.0"
DIGEST = "sha256:" + "5" * 64
HEARTBEAT_INTERVAL = 10.0
MB = 1024 * 1024


def fleetctl_executable() -> str:
    """The fleetctl installed beside this Python (the project's virtualenv)."""
    return str(Path(sys.executable).parent / "fleetctl")


def simulated_facts(host: str, spec: ServiceSpec | None) -> HostFacts:
    """The heartbeat of a simulated host that last applied ``spec`` (None: no web)."""
    return HostFacts(
        sender=host,
        host=host,
        agent_version="simulated",
        cpus=2,
        memory_total=4 << 30,
        memory_available=2 << 30,
        disk_total=40 << 30,
        disk_free=20 << 30,
        services=() if spec is None else (simulated_status(spec),),
    )


def simulated_status(spec: ServiceSpec | None) -> ServiceStatus:
    if spec is None:
        return ServiceStatus(name="web")
    return ServiceStatus(
        name="web",
        image=spec.image,
        state=ContainerState.RUNNING,
        health=Health.HEALTHY,
        fingerprint=settings_fingerprint(spec),
        applied_digest=image_digest(spec.image),
    )


@dataclass
class SimulatedFleet:
    """Every simulated host's side of the bus; the runtime behind it is only a timer."""

    nc: Client
    hosts: list[str]
    prepare_time: float
    apply_time: float
    specs: dict[str, ServiceSpec | None] = field(default_factory=dict)
    """What each host last applied (None: it has no web at all), as its agent reports it."""
    dispatch: dict[str, float] = field(default_factory=dict)
    """Seconds from the controller stamping a command to the host receiving it."""
    replies: dict[str, tuple[str, float]] = field(default_factory=dict)
    """command id -> (host, monotonic time the reply went out)."""
    updates: set[str] = field(default_factory=set)
    """The ids of the update (Apply) commands; the others are pre-flight checks."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    first_update: float | None = None
    """Monotonic time the first update command came: the end of pre-flight."""

    async def start(self, fresh: list[str] | None = None) -> None:
        """Every host runs OLD_IMAGE, and each of ``fresh`` (added to the hosts) nothing."""
        self.specs = dict.fromkeys(self.hosts, ServiceSpec(name="web", image=OLD_IMAGE))
        self.add_fresh(fresh or [])
        # One wildcard subscription stands in for one subscription per agent.
        await self.nc.subscribe(f"{subjects.PREFIX}.cmd.*", cb=self._on_command)

    def add_fresh(self, hosts: list[str]) -> None:
        self.hosts.extend(hosts)
        self.specs.update(dict.fromkeys(hosts))

    async def heartbeat_all(self, kv: KeyValue, hosts: list[str] | None = None) -> None:
        gate = asyncio.Semaphore(200)

        async def beat(host: str) -> None:
            async with gate:
                await kv.put(host, encode(self.facts(host)))

        await asyncio.gather(*(beat(host) for host in (self.hosts if hosts is None else hosts)))

    async def heartbeat_loop(self, kv: KeyValue, stop: asyncio.Event) -> None:
        """Each host beats once an interval, at its own moment within it: agents start at
        different times, so a fleet's heartbeats are spread, not sent all at once."""
        slices = 20
        while not stop.is_set():
            for part in range(slices):
                await self.heartbeat_all(kv, self.hosts[part::slices])
                try:
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_INTERVAL / slices)
                except TimeoutError:
                    continue
                return

    def facts(self, host: str) -> HostFacts:
        return simulated_facts(host, self.specs[host])

    def status(self, host: str) -> ServiceStatus:
        return simulated_status(self.specs[host])

    def running(self, image: str) -> int:
        """How many hosts run ``image`` (by name and tag; the digest apart)."""
        return sum(1 for s in self.specs.values() if s and s.image.split("@")[0] == image)

    async def _on_command(self, msg: Msg) -> None:
        """Stamped as it comes, decoded after: a real fleet's hosts each decode their own
        command at once, where this one process would decode a wave's 500 in turn and
        count that against the controller."""
        received = utc_now()
        task = asyncio.create_task(self._answer(msg, received))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, msg: Msg, received: datetime) -> None:
        command = decode(msg.data)
        self.dispatch[command.id] = (received - command.sent_at).total_seconds()
        reply: PrepareReply | OperationReply
        if isinstance(command, PrepareCommand):
            await asyncio.sleep(self.prepare_time)
            reply = PrepareReply(
                sender=command.host,
                in_reply_to=command.id,
                service="web",
                ready=True,
                digest=DIGEST,
            )
        elif isinstance(command, ApplyCommand):
            if self.first_update is None:
                self.first_update = time.monotonic()
            self.updates.add(command.id)
            await asyncio.sleep(self.apply_time)
            self.specs[command.host] = command.service
            reply = OperationReply(
                sender=command.host,
                in_reply_to=command.id,
                service="web",
                outcome=OperationOutcome.DONE,
                status=self.status(command.host),
            )
        else:
            return
        self.replies[command.id] = (command.host, time.monotonic())
        await msg.respond(encode(reply))

    def recorded(
        self, left: dict[str, dict[str, float]], on_bus: dict[str, float]
    ) -> dict[str, float]:
        """Seconds from each reply crossing the bus (``on_bus``, by command id) to the
        record no longer waiting on its command, from what the watcher saw (host ->
        command id -> when it was left)."""
        found = {}
        for command_id, (host, _) in self.replies.items():
            seen = left.get(host, {}).get(command_id)
            replied_at = on_bus.get(command_id)
            if seen is not None and replied_at is not None:
                found[command_id] = seen - replied_at
        return found


WATCH_SCRIPT = """
import asyncio, json, signal, sys, time, zlib
import nats

async def main(url, subjects, out):
    nc = await nats.connect(url)
    last, left, named, stop = {}, {}, {}, asyncio.Event()

    async def seen(msg):
        data = msg.data
        if not data:
            return
        if data.startswith(b"zlib:"):
            data = zlib.decompress(data[5:])
        now = time.monotonic()
        for host, progress in json.loads(data).items():
            command = progress.get("command_id")
            if command is not None:
                named.setdefault(command, now)
            before = last.get(host)
            if before is not None and before != command:
                left.setdefault(host, {}).setdefault(before, now)
            last[host] = command

    for subject in subjects:
        await nc.subscribe(subject, cb=seen)
    await nc.flush()
    print("watching", flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()
    with open(out, "w") as f:
        json.dump({"left": left, "named": named}, f)

asyncio.run(main(sys.argv[1], sys.argv[3:], sys.argv[2]))
"""
"""The record's watcher, in a process of its own: the one process that answers for
every simulated host would otherwise also decode every write of the record (a new base
of 5,000 hosts is 2 MB of JSON) and delay its own stamps. It notes when each command id
first appears in the record (the controller's decision, written before it is sent) and,
per host, when the record stopped waiting on each command (times on the machine's
monotonic clock)."""


STAMP_SCRIPT = """
import asyncio, json, signal, sys, time
import msgpack, nats

async def main(url, out):
    nc = await nats.connect(url)
    late, arrived, replies, stop = {}, {}, {}, asyncio.Event()

    async def reply(msg):
        now = time.monotonic()
        try:  # the same inbox takes JetStream's answers (JSON) to its publishes
            answer = msgpack.unpackb(msg.data, timestamp=3)
        except ValueError:
            return
        if isinstance(answer, dict) and "in_reply_to" in answer:
            replies.setdefault(answer["in_reply_to"], now)

    async def command(msg):
        now, at = time.time(), time.monotonic()
        sent = msgpack.unpackb(msg.data, timestamp=3)
        late[sent["id"]] = now - sent["sent_at"].timestamp()
        arrived.setdefault(sent["id"], at)

    await nc.subscribe(sys.argv[3], cb=command)
    await nc.subscribe("_INBOX.>", cb=reply)  # replies, and JetStream's answers (skipped)
    await nc.flush()
    print("stamping", flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()
    with open(out, "w") as f:
        json.dump({"commands": late, "arrived": arrived, "replies": replies}, f)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
"""Commands and replies as they cross the bus, stamped in a process of its own that only
reads: the one process that answers for every simulated host is busy with a wave's 500
answers when the next wave's commands come, and writes a wave's 500 replies out together,
where each real host has its own CPU and sends its own. It notes, per command id, the
seconds from the controller stamping it to its arrival, and when its reply crossed the
bus (the machine's monotonic clock, as the watcher's)."""


async def start_subprocess(script: str, *args: str) -> asyncio.subprocess.Process:
    """A helper process (watcher, stamper), once it says it has subscribed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 30)
    return process


async def stop_subprocess(process: asyncio.subprocess.Process, out: Path) -> Any:
    """Stop a helper process and read what it wrote."""
    process.terminate()
    await asyncio.wait_for(process.wait(), 30)
    return json.loads(await asyncio.to_thread(out.read_text))


async def start_watcher(url: str, rollout_id: str, out: Path) -> asyncio.subprocess.Process:
    subjects_watched = [
        f"$KV.{subjects.ROLLOUTS_BUCKET}.{keys}"
        for keys in (f"{changes_prefix(rollout_id)}>", f"{base_key(rollout_id)}.>")
    ]
    return await start_subprocess(WATCH_SCRIPT, url, str(out), *subjects_watched)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss


async def run_size(size: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    server = NatsServer(binary=find_nats_server_binary(), work_dir=work / f"nats-{size}")
    await server.start()
    nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
    stop = asyncio.Event()
    controller: asyncio.subprocess.Process | None = None
    try:
        fleet = await Fleet(nc, host_timeout=60).open()
        sim = SimulatedFleet(
            nc, [f"sim-{i:05d}" for i in range(size)], args.prepare_time, args.apply_time
        )
        await sim.start()
        hosts_kv = await nc.jetstream(timeout=10).key_value(subjects.HOSTS_BUCKET)
        await sim.heartbeat_all(hosts_kv)
        beating = asyncio.create_task(sim.heartbeat_loop(hosts_kv, stop))
        log = (work / f"controller-{size}.log").open("wb")
        controller = await asyncio.create_subprocess_exec(
            fleetctl_executable(),
            "controller",
            "run",
            f"--nats={server.url}",
            "--id=bench",
            "--host-timeout=60",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        watched = psutil.Process(controller.pid)
        spec = RolloutSpec(max_unavailable="10%")
        target = ServiceSpec(name="web", image=NEW_IMAGE)
        record, _ = await fleet.plan_rollout("web", NEW_IMAGE, spec, spec_override=target)
        rollouts_kv = await nc.jetstream(timeout=10).key_value(subjects.ROLLOUTS_BUCKET)
        watcher = await rollouts_kv.watch(header_key(record.id))
        watching = await start_watcher(server.url, record.id, work / f"left-{size}.json")
        stamps = work / f"stamps-{size}.json"
        stamping = await start_subprocess(
            STAMP_SCRIPT, server.url, str(stamps), f"{subjects.PREFIX}.cmd.*"
        )
        await asyncio.sleep(1.0)  # the controller has loaded the inventory
        cpu_before = watched.cpu_times()
        started = time.monotonic()
        await fleet.start_rollout(record)
        final = None
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            try:
                entry = await watcher.updates(timeout=deadline - time.monotonic())  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
            except TimeoutError:
                break
            if entry is None or not entry.value:
                continue
            current = decode_header(entry.value).record
            if current.status in TERMINAL:
                final = current
                break
        wall = time.monotonic() - started
        cpu_after = watched.cpu_times()
        rss = peak_rss(controller.pid)
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
        watched_record = await stop_subprocess(watching, work / f"left-{size}.json")
        left, named = watched_record["left"], watched_record["named"]
        stamped: dict[str, dict[str, float]] = await stop_subprocess(stamping, stamps)
        stamp_to_host = stamped["commands"]
        # From the record naming a command (the decision, written before it is sent) to
        # the command reaching its host: what the controller's pacing cannot hide.
        decided = {c: at - named[c] for c, at in stamped["arrived"].items() if c in named}
        stop.set()
        await beating
        if final is None:
            raise SystemExit(f"{size} hosts: the rollout did not finish in {args.timeout}s")
        wave = max(1, resolve_amount(spec.max_unavailable, size, round_up=False))
        ideal_preflight = math.ceil(size / spec.preflight_parallelism) * args.prepare_time
        ideal = ideal_preflight + math.ceil(size / wave) * args.apply_time
        preflight = (sim.first_update or started) - started
        written = sim.recorded(left, stamped["replies"])
        trips = {c: decided[c] + late for c, late in written.items() if c in decided}
        round_trips = list(trips.values())
        of_updates = [trip for c, trip in trips.items() if c in sim.updates]
        of_checks = [trip for c, trip in trips.items() if c not in sim.updates]
        dispatch, recorded = list(decided.values()), list(written.values())
        answerer = list(sim.dispatch.values())
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return {
            "hosts": size,
            "status_ok": float(final.status.value == "complete"),
            "wall": wall,
            "ideal": ideal,
            "ratio": wall / ideal,
            "preflight_ratio": preflight / ideal_preflight,
            "updates_ratio": (wall - preflight) / (ideal - ideal_preflight),
            "dispatch_p50": statistics.median(dispatch) * 1000,
            "dispatch_p99": percentile(dispatch, 0.99) * 1000,
            "answerer_dispatch_p99": percentile(answerer, 0.99) * 1000,
            "stamp_p99": percentile(list(stamp_to_host.values()), 0.99) * 1000,
            "matched": len(round_trips) / max(1, len(sim.replies)),
            "record_p50": statistics.median(recorded) * 1000,
            "record_p99": percentile(recorded, 0.99) * 1000,
            "rtt_p50": statistics.median(round_trips) * 1000,
            "rtt_p99": percentile(round_trips, 0.99) * 1000,
            "rtt_p99_checks": percentile(of_checks, 0.99) * 1000,
            "rtt_p99_updates": percentile(of_updates, 0.99) * 1000,
            "cpu_s": cpu,
            "cpu_pct": 100 * cpu / wall,
            "rss_mb": rss / MB,
        }
    finally:
        stop.set()
        if controller is not None and controller.returncode is None:
            controller.terminate()
            try:
                await asyncio.wait_for(controller.wait(), 20)
            except TimeoutError:
                controller.kill()
                await controller.wait()
        await nc.close()
        await server.stop()


async def main(args: argparse.Namespace) -> None:
    sizes = [int(part) for part in args.sizes.split(",")]
    print(
        f"simulated fleet (FLEET SIMULATOR: real nats-server and controller, simulated runtime):"
        f" prepare {args.prepare_time}s, apply {args.apply_time}s, max_unavailable 10%,"
        f" pre-flight parallelism {RolloutSpec().preflight_parallelism}"
    )
    with tempfile.TemporaryDirectory(prefix="fleetwave-scale-") as scratch:
        for size in sizes:
            result = await run_size(size, args, Path(scratch))
            print(
                f"{size:>5} hosts: wall {result['wall']:6.1f}s  ideal {result['ideal']:6.1f}s  "
                f"ratio {result['ratio']:.3f} (pre-flight {result['preflight_ratio']:.3f}, "
                f"updates {result['updates_ratio']:.3f})  |  "
                f"round trip p50 {result['rtt_p50']:.1f} ms "
                f"p99 {result['rtt_p99']:.1f} ms "
                f"(checks {result['rtt_p99_checks']:.1f}, updates {result['rtt_p99_updates']:.1f}; "
                f"decided -> host p99 {result['dispatch_p99']:.1f}, "
                f"stamped -> host {result['stamp_p99']:.1f}, "
                f"at the answering simulator {result['answerer_dispatch_p99']:.1f}, "
                f"reply -> record p99 {result['record_p99']:.1f}; "
                f"{result['matched']:.0%} of replies timed)  |  controller CPU "
                f"{result['cpu_s']:.1f}s ({result['cpu_pct']:.0f}% of a core), "
                f"peak RSS {result['rss_mb']:.0f} MB"
                + ("" if result["status_ok"] else "  [NOT COMPLETE]")
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000,10000")
    parser.add_argument("--prepare-time", type=float, default=0.2)
    parser.add_argument("--apply-time", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    asyncio.run(main(parser.parse_args()))
