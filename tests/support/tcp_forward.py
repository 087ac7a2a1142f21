"""A plain TCP forwarder, so a host in its own network namespace reaches loopback services.

NATS and the registries listen on this machine's 127.0.0.1 only. An isolated test host
reaches them through two of these: one outside, on its link's address, towards
127.0.0.1; one inside its namespace (run as ``python -m tests.support.tcp_forward``
under nsenter), on the namespace's own 127.0.0.1, towards the outside one.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 5.0


@dataclass
class _Forwarder:
    """Accepts connections and pipes each to a fresh upstream connection, both ways."""

    _server: asyncio.Server | None = field(default=None, init=False)
    _pipes: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    bytes_per_second: float = field(default=0, kw_only=True)
    """0: as fast as the two ends go; else the link's speed, each way."""

    async def _listen(self) -> asyncio.Server:
        raise NotImplementedError

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError

    async def start(self) -> Self:
        self._server = await self._listen()
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(self._open_upstream(), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            writer.close()
            return
        for source, sink in ((reader, upstream[1]), (upstream[0], writer)):
            task = asyncio.create_task(_pipe(source, sink, self.bytes_per_second), name="forward")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


@dataclass
class TcpForwarder(_Forwarder):
    """Accepts on ``listen`` and pipes each connection to ``target``."""

    listen: tuple[str, int]
    target: tuple[str, int]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, *self.listen)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.target)

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose, for port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])


@dataclass
class UnixSocketForwarder(_Forwarder):
    """Pipes the unix socket ``listen`` to the one at ``target``: a Docker engine that a
    test can take away (close) and bring back (start) under a running agent."""

    listen: Path
    target: Path

    async def _listen(self) -> asyncio.Server:
        self.listen.unlink(missing_ok=True)  # left by an earlier start
        return await asyncio.start_unix_server(self._accept, path=self.listen)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(self.target)

    async def close(self) -> None:
        await super().close()
        self.listen.unlink(missing_ok=True)  # so a client is refused, not left hanging


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, bytes_per_second: float = 0
) -> None:
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
            if bytes_per_second:  # a slow link: each chunk takes its time on the wire
                await asyncio.sleep(len(data) / bytes_per_second)
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        sink.close()
        with suppress(OSError):
            await sink.wait_closed()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    forwarder = await TcpForwarder(listen, target).start()
    print(f"listening on {listen[0]}:{listen[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await forwarder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=_address, required=True, help="host:port")
    parser.add_argument("--to", type=_address, required=True, help="host:port")
    options = parser.parse_args()
    asyncio.run(_serve(options.listen, options.to))


if __name__ == "__main__":
    main()
