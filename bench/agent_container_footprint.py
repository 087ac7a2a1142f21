"""The agent in its image (deploy/agent): memory and CPU of the container's agent, idle,
against the same agent run as a plain process in the same run (the baseline).

Both connect to one fresh nats-server, manage one demo/web service on the local stack's
engine, heartbeat and sample metrics at their default intervals (10 s) and are left idle
for the measured window. The container's figures are its agent process's (RSS from
/proc) and its whole cgroup's memory as the engine counts it (`docker stats`). Target:
the containerised agent idles at <= 45 MB RSS. Figures, never assertions.

usage: python bench/agent_container_footprint.py [--seconds S]   (needs make agent-image)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import docker
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_footprint import MB, Window, measure
from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from fleet_lab.agent_client import AgentClient, apply_ok, connect, demo_spec, wait_until_serving
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import load_local_stack

IMAGE = "127.0.0.1:5000/fleetwave/agent:0.1.0"


def run_container(
    client: docker.DockerClient, work: Path, nats_url: str, host: str, socket: str
) -> docker.models.containers.Container:
    settings = work / "etc"
    settings.mkdir()
    (settings / "agent.toml").write_text(
        f'nats_urls = ["{nats_url}"]\nhost_id = "{host}"\ncontainer_prefix = "{host}-"\n'
    )
    state = work / "container-state"
    state.mkdir()
    return client.containers.run(
        IMAGE,
        name=f"{host}-agent",
        detach=True,
        network_mode="host",
        environment={"FLEET_STATE_DIR": str(state)},
        volumes={
            str(settings): {"bind": "/etc/fleetwave", "mode": "ro"},
            str(state): {"bind": str(state), "mode": "rw"},
            socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
    )


async def idle_window(nats_url: str, host: str, pid: int, seconds: float) -> Window:
    """Once the agent serves and runs demo/web: its figures over ``seconds`` idle."""
    client = await connect(nats_url)
    try:
        agent = AgentClient(client=client, host=host)
        await wait_until_serving(agent, deadline_s=30)
        await apply_ok(
            agent, demo_spec(load_local_stack().demo_image("1.0.0"), reserve_loopback_port())
        )
        await asyncio.sleep(2)  # let the update's own work settle
        return await measure(psutil.Process(pid), seconds)
    finally:
        await client.close()


async def main(seconds: float) -> None:
    stack = load_local_stack()
    engine = docker.DockerClient(base_url=stack.docker_host, timeout=60)
    socket = stack.docker_host.removeprefix("unix://")
    with tempfile.TemporaryDirectory(prefix="fleetwave-bench-") as scratch:
        work = Path(scratch)
        server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
        await server.start()
        plain_host, boxed_host = f"plain{os.getpid()}", f"boxed{os.getpid()}"
        process = AgentProcess(
            args=agent_args(
                server.url, plain_host, stack.docker_host, work / "a", f"{plain_host}-"
            ),
            log_path=work / "agent.log",
        )
        container = None
        try:
            await process.start()
            assert process.process is not None
            plain = await idle_window(server.url, plain_host, process.process.pid, seconds)
            container = run_container(engine, work, server.url, boxed_host, socket)
            container.reload()
            boxed = await idle_window(
                server.url, boxed_host, container.attrs["State"]["Pid"], seconds
            )
            stats = container.stats(stream=False)
            cgroup = stats["memory_stats"].get("usage", 0) - stats["memory_stats"].get(
                "stats", {}
            ).get("cache", 0)
        finally:
            await process.stop()
            if container is not None:
                container.remove(force=True)
            for name in (f"{plain_host}-web", f"{boxed_host}-web"):
                for found in engine.containers.list(all=True, filters={"name": name}):
                    found.remove(force=True)
            await server.stop()
            engine.close()
    print(f"agent_container_footprint: idle {seconds:.0f}s each, one managed service")
    print(f"  process (baseline): peak RSS {plain.peak_rss / MB:.1f} MB, CPU {plain.percent:.2f}%")
    print(
        f"  in its image: peak RSS {boxed.peak_rss / MB:.1f} MB (target <= 45 MB), "
        f"CPU {boxed.percent:.2f}%; the container's memory without page cache "
        f"{cgroup / MB:.1f} MB"
    )
    print(f"  ratio (image / process): RSS {boxed.peak_rss / plain.peak_rss:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    asyncio.run(main(parser.parse_args().seconds))
