"""One host's update: the agent's Prepare+Apply against the hand-run docker CLI sequence.

Both replace the same service (host networking, a named volume, a restart policy, a memory
limit) from demo/web 1.0.0 to 1.1.0 on the local stack's real engine and registry, several
runs each, interleaved. Before every run the target image is removed under all its tags, so
both really pull it (its layers shared with 1.0.0 stay, as on a real host).

- total: from the first command until the new version answers /version over HTTP (the
  bare sequence is not done when `docker run -d` returns; an operator checks it answers).
  The agent's total is its Apply reply, which comes only after its own health probes.
- downtime: the longest gap seen by a poller hitting /health every 5 ms, from the last
  answer of the old container to the first answer of the new one.

The agent pulls while the old container still serves, so its downtime is only the
restart; the bare sequence pulls first too (as a careful operator would), so the
comparison is fair to the shell. Figures, never assertions.

usage: python bench/agent_replace.py [--runs N]   (make bench; needs the local stack up)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from fleet_lab.agent_client import AgentClient, apply_ok, connect, demo_spec
from fleet_lab.stack import LocalStack, load_local_stack
from node_agent.daemon import Agent
from node_agent.settings import AgentSettings
from protocol.models import PrepareReply
from protocol.spec import ServiceSpec

DOCKER_CLI = "/usr/bin/docker"
GRACE = 10


@dataclass
class Run:
    total: float
    downtime: float


class Poller:
    """Hits /health every few milliseconds and keeps the longest gap between answers."""

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/health"
        self._stop = threading.Event()
        self.longest_gap = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        last_ok: float | None = None
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self._url, timeout=0.5) as answer:
                    ok = answer.status == 200
            except OSError:
                ok = False
            now = time.monotonic()
            if ok:
                if last_ok is not None:
                    self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            time.sleep(0.005)


def version_answers(port: int, version: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=0.5) as a:
                if a.read().decode().strip() == version:
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"version {version} never answered on port {port}")


def docker(stack: LocalStack, *args: str) -> None:
    subprocess.run(
        [DOCKER_CLI, *args],
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_HOST": stack.docker_host},
        timeout=120,
    )


def forget_image(stack: LocalStack, image: str) -> None:
    """Remove the image under every tag it has, so the next pull has to fetch it."""
    env = {**os.environ, "DOCKER_HOST": stack.docker_host}
    found = subprocess.run(
        [DOCKER_CLI, "image", "inspect", "-f", "{{.Id}}", image],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if found.returncode == 0:
        docker(stack, "rmi", "-f", found.stdout.strip())


def bare_run_args(name: str, port: int, volume: str, image: str) -> list[str]:
    return [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-v",
        f"{volume}:/data",
        "--restart",
        "on-failure:2",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "-e",
        f"PORT={port}",
        image,
    ]


def bare_sequence(stack: LocalStack, name: str, port: int, volume: str) -> Run:
    old, new = stack.demo_image("1.0.0"), stack.demo_image("1.1.0")
    docker(stack, "rm", "-f", name)
    docker(stack, *bare_run_args(name, port, volume, old))
    version_answers(port, "1.0.0")
    forget_image(stack, new)
    with Poller(port) as poller:
        started = time.monotonic()
        docker(stack, "pull", new)
        docker(stack, "stop", "-t", str(GRACE), name)
        docker(stack, "rm", name)
        docker(stack, *bare_run_args(name, port, volume, new))
        version_answers(port, "1.1.0")
        total = time.monotonic() - started
        time.sleep(0.05)
    docker(stack, "rm", "-f", name)
    return Run(total, poller.longest_gap)


async def agent_sequence(agent: AgentClient, stack: LocalStack, port: int, volume: str) -> Run:
    def spec(tag: str) -> ServiceSpec:
        return demo_spec(stack.demo_image(tag), port, volume=volume, min_healthy=0.0, grace=GRACE)

    await apply_ok(agent, spec("1.0.0"))
    await asyncio.to_thread(version_answers, port, "1.0.0")
    await asyncio.to_thread(forget_image, stack, stack.demo_image("1.1.0"))
    with Poller(port) as poller:
        started = time.monotonic()
        target = spec("1.1.0")
        prepared = await agent.request(agent.prepare(target))
        assert isinstance(prepared, PrepareReply), prepared
        assert prepared.ready, prepared
        pinned = target.model_copy(update={"image": f"{target.image}@{prepared.digest}"})
        await apply_ok(agent, pinned)
        await asyncio.to_thread(version_answers, port, "1.1.0")
        total = time.monotonic() - started
        await asyncio.sleep(0.05)
    return Run(total, poller.longest_gap)


def describe(name: str, runs: list[Run]) -> tuple[float, float]:
    total = statistics.median(run.total for run in runs)
    down = statistics.median(run.downtime for run in runs)
    spread = ", ".join(f"{run.total:.2f}s/{run.downtime * 1000:.0f}ms" for run in runs)
    print(f"{name:>6}: total median {total:.2f}s, downtime median {down * 1000:.0f} ms  ({spread})")
    return total, down


async def main(runs: int) -> None:
    stack = load_local_stack()
    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as scratch:
        work = Path(scratch)
        server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
        await server.start()
        stop = asyncio.Event()
        tag = f"bench{os.getpid()}"
        settings = AgentSettings(
            nats_urls=(server.url,),
            host_id=tag,
            docker_host=stack.docker_host,
            state_dir=work / "agent",
            container_prefix=f"{tag}-agent-",
        )
        agent_task = asyncio.create_task(Agent(settings).run(stop))
        client = await connect(server.url)
        agent = AgentClient(client=client, host=tag)
        bare: list[Run] = []
        ours: list[Run] = []
        try:
            for index in range(runs):
                port = reserve_loopback_port()
                bare.append(
                    await asyncio.to_thread(
                        bare_sequence, stack, f"{tag}-bare", port, f"{tag}-bare-data"
                    )
                )
                ours.append(await agent_sequence(agent, stack, port, f"{tag}-agent-data"))
                print(f"run {index + 1}/{runs} done", file=sys.stderr)
        finally:
            stop.set()
            await agent_task
            await client.close()
            await server.stop()
            await asyncio.to_thread(docker, stack, "rm", "-f", f"{tag}-bare", f"{tag}-agent-web")
            await asyncio.to_thread(
                docker, stack, "volume", "rm", "-f", f"{tag}-bare-data", f"{tag}-agent-data"
            )
    print(f"agent_replace: {runs} runs each, demo/web 1.0.0 -> 1.1.0, image removed before each")
    bare_total, bare_down = describe("bare", bare)
    agent_total, agent_down = describe("agent", ours)
    print(f"ratio agent/bare total: {agent_total / bare_total:.2f} (target <= 1.10)")
    print(
        f"downtime agent {agent_down * 1000:.0f} ms vs bare {bare_down * 1000:.0f} ms "
        f"(target: agent <= bare)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
