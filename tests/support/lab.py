"""The lab (deploy/lab/lab.sh): real hosts, each with its own engine and its agent in a
container, on a 3-node TLS bus; and the faults the tests put on them."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import nats
from nats.aio.client import Client

from protocol.bus_permissions import inbox_prefix
from tests.support.paths import REPO_ROOT

LAB_SCRIPT = REPO_ROOT / "deploy" / "lab" / "lab.sh"
LAB_DIR = Path(os.environ.get("FLEET_LAB_DIR", "/var/lib/fleetwave/lab"))
SCRIPT_TIMEOUT = 600.0
DOCKER_TIMEOUT = 30


def lab_script(*args: str) -> None:
    """Run ``lab.sh ARGS``; a failure says what the script said."""
    done = subprocess.run(
        ["bash", str(LAB_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def lab_is_up() -> bool:
    return (LAB_DIR / "lab.env").is_file()


AGENT_CONTAINER = "fleet-agent"


@dataclass(frozen=True)
class Handoff:
    """When one host's agent upgrade reached each step, from its engine's events."""

    made: float
    """The successor was created (fleet-agent.next)."""
    aside: float | None
    """The old agent's container was renamed fleet-agent.previous."""
    took: float | None
    """The successor took the agent's name."""
    gone: float | None
    """The old agent's container was removed: the handoff is over."""


@dataclass(frozen=True)
class Lab:
    env: dict[str, str]
    """The controller's FLEET_* settings: the bus, its TLS files, the signing key."""
    hosts: tuple[str, ...]
    registry: str
    run_dir: Path

    @property
    def nats(self) -> str:
        return self.env["FLEET_NATS_URLS"]

    def number(self, host: str) -> str:
        return host.removeprefix("lab-h")

    def engine(self, host: str) -> str:
        return f"unix://{self.run_dir}/h{self.number(host)}/engine/docker.sock"

    def disk_root(self, host: str) -> str:
        """The host's engine's data-root: a tmpfs of its own (lab.sh fill fills it)."""
        return str(LAB_DIR / "hosts" / f"h{self.number(host)}" / "docker")

    def container_events(self, host: str, since: float) -> list[tuple[float, str, str, str]]:
        """(time, action, container id, name) of the containers made, renamed and
        removed on ``host``'s engine since ``since``, in order."""
        client = docker.APIClient(base_url=self.engine(host), timeout=DOCKER_TIMEOUT)
        try:
            events = client.events(
                since=int(since), until=int(time.time()) + 1, decode=True,
                filters={"type": "container", "event": ["create", "rename", "destroy"]},
            )  # fmt: skip
            return [
                (
                    e["timeNano"] / 1e9,
                    e["Action"],
                    e["Actor"]["ID"],
                    e["Actor"]["Attributes"]["name"],
                )
                for e in events
                if e["timeNano"] / 1e9 >= since
            ]
        finally:
            client.close()

    def handoff(self, host: str, since: float) -> Handoff | None:
        """The agent handoff on ``host`` since ``since``; None before its successor."""
        events = [(t, action, name) for t, action, _, name in self.container_events(host, since)]
        successor, aside = f"{AGENT_CONTAINER}.next", f"{AGENT_CONTAINER}.previous"
        created = (t for t, action, name in events if (action, name) == ("create", successor))
        made = next(created, None)
        if made is None:
            return None

        def first(wanted: str, named: str) -> float | None:
            return next((t for t, a, n in events if (a, n) == (wanted, named) and t >= made), None)

        return Handoff(
            made, first("rename", aside), first("rename", AGENT_CONTAINER), first("destroy", aside)
        )

    def demo_image(self, tag: str) -> str:
        return f"{self.registry}/demo/web:{tag}"

    async def fault(self, verb: str, host: str, *args: str) -> None:
        """cut, heal, engine-stop, engine-start, fill MIB or unfill on ``host``."""
        await asyncio.to_thread(lab_script, verb, self.number(host), *args)

    async def as_controller(self) -> Client:
        """A connection with the controller's identity: it may send the hosts commands."""
        context = ssl.create_default_context(cafile=self.env["FLEET_NATS_TLS_CA"])
        context.load_cert_chain(self.env["FLEET_NATS_TLS_CERT"], self.env["FLEET_NATS_TLS_KEY"])
        return await nats.connect(
            self.nats.split(","),
            tls=context,
            inbox_prefix=inbox_prefix(self.env["FLEET_BUS_USER"]),
            connect_timeout=5,
        )

    async def watch(self) -> Client:
        """A connection as the lab's reader: events, heartbeats and KV, read-only."""
        context = ssl.create_default_context(cafile=self.env["FLEET_NATS_TLS_CA"])
        clients = LAB_DIR / "pki" / "clients"
        context.load_cert_chain(str(clients / "lab-reader.crt"), str(clients / "lab-reader.key"))
        return await nats.connect(
            self.nats.split(","),
            tls=context,
            inbox_prefix=inbox_prefix("lab-reader"),
            connect_timeout=5,
        )


def load_lab() -> Lab:
    lines = (LAB_DIR / "lab.env").read_text().splitlines()
    values = {k: v.strip('"') for k, v in (line.split("=", 1) for line in lines if "=" in line)}
    return Lab(
        env={k: v for k, v in values.items() if not k.startswith("FLEET_LAB_")},
        hosts=tuple(values["FLEET_LAB_HOSTS"].split()),
        registry=values["FLEET_LAB_REGISTRY"],
        run_dir=Path(values["FLEET_LAB_RUN"]),
    )
