"""A default-deny bus for tests: a real nats-server run from deploy/nats/single.conf, with
TLS, client certificates (fleetctl pki init / hosts enroll) and per-user permissions."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from protocol.bus_permissions import inbox_prefix
from tests.support.fleet import fleetctl_executable
from tests.support.paths import REPO_ROOT


@dataclass
class SecureBus:
    server: NatsServer
    pki: Path
    work: Path
    errors: dict[str, list[str]] = field(default_factory=dict)

    def tls_env(self, name: str) -> dict[str, str]:
        """FLEET_* settings that make an agent, controller or fleetctl connect as ``name``."""
        return {
            "FLEET_NATS_TLS_CA": str(self.pki / "ca.crt"),
            "FLEET_NATS_TLS_CERT": str(self.pki / "clients" / f"{name}.crt"),
            "FLEET_NATS_TLS_KEY": str(self.pki / "clients" / f"{name}.key"),
            "FLEET_BUS_USER": name,
        }

    def context(self, name: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if name is not None:
            context.load_cert_chain(
                str(self.pki / "clients" / f"{name}.crt"), str(self.pki / "clients" / f"{name}.key")
            )
        return context

    async def connect(self, name: str) -> Client:
        """A client with ``name``'s certificate; the server's -ERRs land in errors[name]."""
        seen = self.errors.setdefault(name, [])

        async def on_error(exc: Exception) -> None:
            seen.append(str(exc))

        return await nats.connect(
            self.server.url,
            tls=self.context(name),
            inbox_prefix=inbox_prefix(name),
            error_cb=on_error,
            connect_timeout=5,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )

    async def denied(self, name: str, text: str) -> None:
        """Wait for the server to report a permissions violation naming ``text``."""
        for _ in range(100):
            if any(
                "permissions violation" in e.lower() and text.lower() in e.lower()
                for e in self.errors[name]
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permission error about {text} for {name}: {self.errors[name]}")


def run_fleetctl(*args: str) -> str:
    """fleetctl subcommands that need no bus (pki, enroll, revoke)."""
    done = subprocess.run(
        [fleetctl_executable(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done
    return done.stdout


@asynccontextmanager
async def started_secure_bus(
    work: Path, prepare: Callable[[Path, str], None], host: str = "127.0.0.1"
) -> AsyncIterator[SecureBus]:
    """A fresh PKI in ``work``/pki and the shipped single-server config on a free port of
    ``host``. ``prepare(pki, url)`` runs before the server starts: the place to enrol
    parties (users.conf is read at start), knowing the URL they will reach it at."""
    pki = work / "pki"
    run_fleetctl("pki", "init", "--dir", str(pki), "--server-name", host)
    port = reserve_loopback_port(host)
    prepare(pki, f"tls://{host}:{port}")
    config = (REPO_ROOT / "deploy" / "nats" / "single.conf").read_text()
    config = config.replace("/etc/fleetwave/pki", str(pki))
    config = config.replace("/var/lib/fleetwave/nats", str(work / "jetstream"))
    config = config.replace("0.0.0.0:4222", f"{host}:{port}")
    (work / "nats.conf").write_text(config)
    server = NatsServer(
        find_nats_server_binary(), work / "nats", host=host, config_file=work / "nats.conf"
    )
    await server.start()
    try:
        yield SecureBus(server, pki, work)
    finally:
        await server.stop()
