"""A Docker engine that carries out a chosen call and answers it late.

A unix-socket forwarder in front of the real engine: a request whose line matches
``slow`` is passed on at once (the engine does it), and its answer is held back for
``delay`` seconds, so the agent's client gives up first. That is a Docker call that
timed out but took effect, whose effects the agent must reconcile.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from tests.support.tcp_forward import CHUNK, UnixSocketForwarder


@dataclass
class SlowEngine(UnixSocketForwarder):
    slow: re.Pattern[bytes] | None = field(default=None, kw_only=True)
    """Request lines (b"POST /v1.47/containers/create?name=...") answered late."""
    delay: float = field(default=5.0, kw_only=True)
    held: int = field(default=0, init=False)
    """How many answers were held back."""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        late = asyncio.Event()
        tasks = (
            self._requests(reader, upstream_writer, late),
            self._answers(upstream_reader, writer, late),
        )
        for coroutine in tasks:
            task = asyncio.create_task(coroutine, name="slow-engine")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, late: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(CHUNK):
                if self.slow is not None and self.slow.search(data.split(b"\r\n", 1)[0]):
                    late.set()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def _answers(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, late: asyncio.Event
    ) -> None:
        """Answers in order (the client sends one request at a time on a connection): the
        one read after a slow request went out is that request's, and is held back."""
        try:
            while data := await source.read(CHUNK):
                if late.is_set():
                    late.clear()
                    self.held += 1
                    await asyncio.sleep(self.delay)  # the engine being slow, not a wait
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()
