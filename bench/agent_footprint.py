"""The agent's footprint: RSS and CPU of a real `fleet-agent run`, idle and shipping logs.

The agent runs as its own process against the local stack's engine and a fresh
nats-server, manages one demo/web service (whose image healthcheck runs every 2 s, so
the engine's event stream is live), heartbeats and samples metrics at its default
intervals (10 s), and is left idle for the measured window. Targets: <= 50 MB RSS,
<= 1% of one core. For scale, a salt-minion idles at about 100-150 MB.

Then, in the same run, a second service prints about 500 log lines a second, which the
agent ships to FLEET_LOGS, and the same window is measured again. Targets (issue 5):
<= 5% of one core, RSS within 10 MB of the idle agent. Figures, never assertions.

usage: python bench/agent_footprint.py [--seconds S]   (make bench; needs the local stack up)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from fleet_lab.agent_client import AgentClient, apply_ok, connect, demo_spec, wait_until_serving
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import load_local_stack
from protocol import subjects
from protocol.codec import decode
from protocol.models import LogBatch
from protocol.spec import ContainerSettings, ExecProbe, HealthCheck, ServiceSpec

MB = 1024 * 1024
# 25 lines every 50 ms: about 500 lines a second, less the shell's own time.
CHATTY = (
    'n=0; while :; do i=0; while [ $i -lt 25 ]; do echo "$n GET /api/items/$i 200 0.004s"; '
    "i=$((i+1)); n=$((n+1)); done; sleep 0.05; done"
)


@dataclass
class Window:
    seconds: float
    cpu: float
    peak_rss: int

    @property
    def percent(self) -> float:
        return 100 * self.cpu / self.seconds


async def measure(watched: psutil.Process, seconds: float) -> Window:
    before = watched.cpu_times()
    started = time.monotonic()
    peak = 0
    while time.monotonic() - started < seconds:
        peak = max(peak, watched.memory_info().rss)
        await asyncio.sleep(0.5)
    after = watched.cpu_times()
    busy = (after.user - before.user) + (after.system - before.system)
    return Window(time.monotonic() - started, busy, peak)


def chatty_spec(image: str) -> ServiceSpec:
    return ServiceSpec(
        name="chatty",
        image=image,
        container=ContainerSettings(command=("sh", "-c", CHATTY), network_mode="none"),
        health=HealthCheck(probe=ExecProbe(command=("true",)), min_healthy_time=0.5),
        stop_grace_period=1.0,
    )


async def main(seconds: float) -> None:
    stack = load_local_stack()
    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as scratch:
        work = Path(scratch)
        server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
        await server.start()
        host = f"footprint{os.getpid()}"
        process = AgentProcess(
            args=agent_args(server.url, host, stack.docker_host, work / "agent", f"{host}-"),
            log_path=work / "agent.log",
        )
        await process.start()
        client = await connect(server.url)
        agent = AgentClient(client=client, host=host)
        try:
            await wait_until_serving(agent, deadline_s=20)
            await apply_ok(agent, demo_spec(stack.demo_image("1.0.0"), reserve_loopback_port()))
            assert process.process is not None
            watched = psutil.Process(process.process.pid)
            await asyncio.sleep(2)  # let the update's own work settle
            idle = await measure(watched, seconds)
            memory = watched.memory_full_info()

            shipped = 0
            delays: list[float] = []

            async def count(msg: Msg) -> None:
                # From the engine's stamp on the line to here: one host, one clock.
                nonlocal shipped
                message = decode(msg.data)
                if isinstance(message, LogBatch):
                    shipped += len(message.lines)
                    arrived = datetime.now(UTC)
                    delays.extend((arrived - e.timestamp).total_seconds() for e in message.lines)

            await client.subscribe(subjects.log_subject(host, "chatty"), cb=count)
            await apply_ok(agent, chatty_spec(stack.demo_image("1.0.0")))
            await asyncio.sleep(2)
            shipped = 0
            delays.clear()
            busy = await measure(watched, seconds)
            lines_per_second = shipped / busy.seconds
        finally:
            await agent.request(agent.inspect("web"), timeout=5)
            await process.stop()
            await client.close()
            await server.stop()
            remove = await asyncio.create_subprocess_exec(
                "/usr/bin/docker",
                "rm",
                "-f",
                f"{host}-web",
                f"{host}-chatty",
                env={**os.environ, "DOCKER_HOST": stack.docker_host},
                stdout=asyncio.subprocess.DEVNULL,
            )
            await remove.wait()
    print(f"agent_footprint: idle {idle.seconds:.0f}s with one managed service")
    print(
        f"RSS now {memory.rss / MB:.1f} MB, peak {idle.peak_rss / MB:.1f} MB (target <= 50 MB); "
        f"unique to the agent (USS) {memory.uss / MB:.1f} MB"
    )
    print(f"CPU {idle.cpu:.2f}s over {idle.seconds:.0f}s = {idle.percent:.2f}% of one core (<= 1%)")
    print(f"shipping {lines_per_second:.0f} log lines/s (and metrics every 10 s):")
    print(
        f"  CPU {busy.percent:.2f}% of one core (target <= 5%), "
        f"{busy.percent - idle.percent:+.2f} points over idle"
    )
    delays.sort()
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    print(
        f"  a line from the container's stdout to a subscriber: p50 {p50:.3f} s, "
        f"p99 {p99:.3f} s (target < 2 s)"
    )
    print(
        f"  peak RSS {busy.peak_rss / MB:.1f} MB, {(busy.peak_rss - idle.peak_rss) / MB:+.1f} MB "
        "over idle (target within 10 MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    asyncio.run(main(parser.parse_args().seconds))
