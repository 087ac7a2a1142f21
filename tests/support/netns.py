"""A test host in its own network namespace, joined to this machine by one veth link.

The link is the host's only way out, so cutting it is a real partition: packets are
dropped, no connection is closed, and each end finds out only by its own keepalive.

NATS and the registry listen on this machine's loopback, so the host reaches them
through forwarders (tests.support.tcp_forward): NATS at ``nats_url``, on this side of
the link; the registry at 127.0.0.1:<its port> inside the namespace too, so image
references read the same on every host. Docker is reached by its unix socket, which no
network namespace hides. Everything is removed on the way out.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.tcp_forward import TcpForwarder

IP_TIMEOUT = 10.0
SUBNETS = range(1, 250)
"""10.254.<n>.0/30 per isolated host; the first free one is taken."""
REPO_ROOT = Path(__file__).resolve().parents[2]


async def ip(*args: str) -> str:
    """Run ``ip ARGS``; an error names the command and what it printed."""
    process = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), IP_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.decode().strip()}")
    return out.decode()


@dataclass(frozen=True)
class IsolatedHost:
    namespace: str
    subnet: int
    nats_url: str
    """NATS as the host reaches it: this side's end of the link, forwarded to loopback."""

    @property
    def outside_link(self) -> str:
        return f"fwo{self.subnet}"

    @property
    def outside_ip(self) -> str:
        return f"10.254.{self.subnet}.1"

    @property
    def launcher(self) -> tuple[str, ...]:
        """Prefix for a command that must run inside the namespace."""
        return ("nsenter", f"--net=/var/run/netns/{self.namespace}")

    async def cut(self) -> None:
        """Drop every packet across the link; nothing is closed."""
        await ip("link", "set", self.outside_link, "down")

    async def heal(self) -> None:
        await ip("link", "set", self.outside_link, "up")


async def _claim_subnet() -> int:
    """Create the outside link of the first free subnet; creating it is the claim, so two
    test workers looking at the same moment cannot both take one."""
    for subnet in SUBNETS:
        try:
            await ip("link", "add", f"fwo{subnet}", "type", "veth", "peer", "name", f"fwi{subnet}")
        except RuntimeError as error:
            if "exists" in str(error):
                continue
            raise
        return subnet
    raise RuntimeError("no free 10.254.n.0/30 subnet for an isolated host")


@asynccontextmanager
async def isolated_host(
    name: str, nats_port: int, registry_port: int
) -> AsyncIterator[IsolatedHost]:
    """A namespace ``name`` with its link up and NATS and the registry reachable."""
    async with AsyncExitStack() as cleanup:
        await ip("netns", "add", name)
        cleanup.push_async_callback(ip, "netns", "delete", name)
        subnet = await _claim_subnet()
        outside, inside = f"fwo{subnet}", f"fwi{subnet}"
        outside_ip, inside_ip = f"10.254.{subnet}.1", f"10.254.{subnet}.2"
        cleanup.push_async_callback(ip, "link", "delete", outside)
        await ip("link", "set", inside, "netns", name)
        await ip("addr", "add", f"{outside_ip}/30", "dev", outside)
        await ip("link", "set", outside, "up")
        for args in (
            ("addr", "add", f"{inside_ip}/30", "dev", inside),
            ("link", "set", inside, "up"),
            ("link", "set", "lo", "up"),
        ):
            await ip("-n", name, *args)

        nats = await TcpForwarder((outside_ip, 0), ("127.0.0.1", nats_port)).start()
        cleanup.push_async_callback(nats.close)
        registry = await TcpForwarder((outside_ip, 0), ("127.0.0.1", registry_port)).start()
        cleanup.push_async_callback(registry.close)
        inner = await _forward_inside(
            name, ("127.0.0.1", registry_port), (outside_ip, registry.port)
        )
        cleanup.push_async_callback(_stop, inner)
        yield IsolatedHost(name, subnet, f"nats://{outside_ip}:{nats.port}")


async def _forward_inside(
    namespace: str, listen: tuple[str, int], target: tuple[str, int]
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net=/var/run/netns/{namespace}",
        sys.executable,
        "-m",
        "tests.support.tcp_forward",
        f"--listen={listen[0]}:{listen[1]}",
        f"--to={target[0]}:{target[1]}",
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), IP_TIMEOUT)
    if not ready.startswith(b"listening"):
        await _stop(process)
        raise RuntimeError(f"the forwarder inside {namespace} did not start")
    return process


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
    await asyncio.wait_for(process.communicate(), IP_TIMEOUT)
