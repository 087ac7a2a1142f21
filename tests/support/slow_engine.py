"""A Docker engine that carries out a chosen call and answers it late.

A unix-socket forwarder in front of the real engine: the first request whose line
matches ``slow`` is passed on at once (the engine does it), and its answer is held back
for ``delay`` seconds, so the agent's client gives up first. That is a Docker call that
timed out but took effect, whose effects the agent must reconcile. Each held answer is
recorded with whether the client had hung up by the time it was released.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from tests.support.tcp_forward import CHUNK, UnixSocketForwarder


@dataclass
class Held:
    request_line: bytes
    client_gave_up: bool | None = None
    """None while the answer is held; then whether the client had hung up."""


@dataclass
class _Connection:
    slow_line: bytes | None = None
    """The request line of a slow request whose answer has not come yet."""
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class SlowEngine(UnixSocketForwarder):
    slow: re.Pattern[bytes] | None = field(default=None, kw_only=True)
    """Request lines (b"POST /v1.47/containers/create?name=...") answered late, once."""
    delay: float = field(default=5.0, kw_only=True)
    held: list[Held] = field(default_factory=list, init=False)
    _none_held: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """Set while no answer is being held back."""

    def __post_init__(self) -> None:
        self._none_held.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        connection = _Connection()
        for coroutine in (
            self._requests(reader, upstream_writer, connection),
            self._answers(upstream_reader, writer, connection),
        ):
            task = asyncio.create_task(coroutine, name="slow-engine")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                line = data.split(b"\r\n", 1)[0]
                if self.slow is not None and self.slow.search(line):
                    self.slow = None  # once: the calls after it are answered in time
                    connection.slow_line = line
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            connection.client_gone.set()
            sink.close()

    async def _answers(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        """Answers in order (the client sends one request at a time on a connection): the
        one read after a slow request went out is that request's, and is held back."""
        try:
            while data := await source.read(CHUNK):
                if connection.slow_line is not None:
                    held = Held(connection.slow_line)
                    self.held.append(held)
                    self._none_held.clear()
                    await asyncio.sleep(self.delay)  # the engine being slow, not a wait
                    held.client_gave_up = connection.client_gone.is_set()
                    connection.slow_line = None
                    self._none_held.set()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def released(self, timeout: float = 30) -> list[Held]:
        """Every held answer, once each has been released."""
        await asyncio.wait_for(self._none_held.wait(), timeout)
        return self.held
