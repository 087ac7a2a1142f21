"""`make demo`, as far as it can go today.

The fleet rollout demo needs the controller (issue 4) and the agent (issue 3), which do
not exist yet. Until they do, this proves the ground they will stand on, for real: the
local stack is up, an embedded nats-server takes a JetStream KV write, and a demo/web
container started with host networking answers /health and /version. It says exactly
what it did and cleans up after itself.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import nats
from rich.console import Console

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port

STACK_ENV = Path("/var/lib/fleetwave/stack/stack.env")
console = Console()


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode().strip())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


async def check_nats() -> str:
    with tempfile.TemporaryDirectory(prefix="fleetwave-demo-") as work:
        server = NatsServer(binary=find_nats_server_binary(), work_dir=Path(work))
        await server.start()
        try:
            client = await nats.connect(server.url, connect_timeout=5)
            try:
                kv = await client.jetstream().create_key_value(bucket="fleet_hosts")
                await kv.put("demo-host", b"hello from make demo")
                value = (await kv.get("demo-host")).value
            finally:
                await client.close()
        finally:
            await server.stop()
    return f"embedded nats-server on {server.url}: JetStream KV put/get returned {value!r}"


def check_container(settings: dict[str, str]) -> str:
    client = docker.DockerClient(base_url=settings["FLEET_DOCKER_HOST"], timeout=60)
    image = f"{settings['FLEET_REGISTRY']}/{settings['FLEET_DEMO_REPOSITORY']}:1.0.0"
    port = reserve_loopback_port()
    container = client.containers.run(
        image, detach=True, network_mode="host", environment={"PORT": str(port)}
    )
    try:
        deadline = time.monotonic() + 20
        while (health := get(f"http://127.0.0.1:{port}/health")) != "ok":
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: {image} never answered /health (last: {health!r})")
            time.sleep(0.1)
        version = get(f"http://127.0.0.1:{port}/version")
    finally:
        container.remove(force=True)
        client.close()
    return f"{image} on host port {port}: /health={health!r}, /version={version!r}"


def main() -> None:
    settings = dict(
        line.split("=", 1) for line in STACK_ENV.read_text().splitlines() if "=" in line
    )
    console.rule("[bold]Fleetwave demo (foundation only)")
    console.print("[green]ok[/] local stack: dockerd, open + auth registries, demo/web images")
    console.print(f"[green]ok[/] {asyncio.run(check_nats())}")
    console.print(f"[green]ok[/] {check_container(settings)} (container removed)")
    console.print(
        "\n[yellow]Not yet:[/] the fleet rollout itself. The node agent (issue 3) and the "
        "controller (issue 4) are still to be built; this demo will then start 5 agents "
        "and roll demo/web from 1.0.0 to 1.1.0 across them."
    )


if __name__ == "__main__":
    sys.exit(main())
