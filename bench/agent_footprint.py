"""The idle agent's footprint: RSS and CPU of a real `fleet-agent run` with one service.

The agent runs as its own process against the local stack's engine and a fresh
nats-server, manages one demo/web service (whose image healthcheck runs every 2 s, so
the engine's event stream is live), heartbeats at its default interval, and is then left
idle for the measured window. Targets: <= 50 MB RSS, <= 1% of one core.
For scale, a salt-minion idles at about 100-150 MB. Figures, never assertions.

usage: python bench/agent_footprint.py [--seconds S]   (make bench; needs the local stack up)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from tests.support.agent import AgentClient, apply_ok, connect, demo_spec, wait_until_serving
from tests.support.agent_process import AgentProcess, agent_args
from tests.support.stack import load_local_stack

MB = 1024 * 1024


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
            cpu_before = watched.cpu_times()
            started = time.monotonic()
            peak_rss = 0
            while time.monotonic() - started < seconds:
                peak_rss = max(peak_rss, watched.memory_info().rss)
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            cpu_after = watched.cpu_times()
            memory = watched.memory_full_info()
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
                env={**os.environ, "DOCKER_HOST": stack.docker_host},
                stdout=asyncio.subprocess.DEVNULL,
            )
            await remove.wait()
    busy = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    print(f"agent_footprint: idle {elapsed:.0f}s with one managed service")
    print(
        f"RSS now {memory.rss / MB:.1f} MB, peak {peak_rss / MB:.1f} MB (target <= 50 MB); "
        f"unique to the agent (USS) {memory.uss / MB:.1f} MB"
    )
    print(f"CPU {busy:.2f}s over {elapsed:.0f}s = {100 * busy / elapsed:.2f}% of one core (<= 1%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    asyncio.run(main(parser.parse_args().seconds))
