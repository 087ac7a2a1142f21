"""A blocking SDK stream (the engine's events, a container's logs) read in a thread of
its own and handed to the event loop as an async generator."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any

log = logging.getLogger("fleet-agent.runtime")
HANDOFF_SIZE = 256
"""Items a stream's thread may read ahead of the event loop; then it waits (and so
does the engine's stream), which keeps a fast log stream's memory bounded."""
_END = object()


class _Pump:
    """The thread's side: reads the stream, hands each item to the loop's queue."""

    def __init__(self, stream: Any, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.name = name
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        # Bounds what the thread may read ahead; cheaper per item than a cross-thread
        # coroutine, which matters at hundreds of log lines a second.
        self.room = threading.Semaphore(HANDOFF_SIZE)
        self.closing = threading.Event()
        self.finished = asyncio.Event()

    def _finish(self) -> None:  # runs on the loop
        self.finished.set()
        self.queue.put_nowait(_END)

    def run(self) -> None:
        try:
            for item in self.stream:
                while not self.room.acquire(timeout=0.5):
                    if self.closing.is_set():
                        return
                self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        # Whatever ends the stream (engine gone, socket closed by us, a torn frame) ends
        # this thread, quietly: the caller reopens the stream if it still wants it.
        except Exception as exc:  # noqa: BLE001
            log.info("%s: stream ended: %s", self.name, exc)
        finally:
            with suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(self._finish)


async def drain_in_thread(stream: Any, stop: asyncio.Event, name: str) -> AsyncGenerator[Any, None]:
    """Iterate a blocking SDK stream in a thread of its own, until it ends or ``stop``.

    A thread of its own, not the default executor: these streams live for hours and would
    starve the short docker calls of its few workers. Closing the stream from here is what
    ends the thread's blocking read.
    """
    pump = _Pump(stream, name, asyncio.get_running_loop())
    threading.Thread(target=pump.run, name=name, daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            if pump.queue.empty():  # only then pay for a task to wait on both
                getting = asyncio.ensure_future(pump.queue.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    await asyncio.gather(getting, return_exceptions=True)
                    return
                item = getting.result()
            else:
                item = pump.queue.get_nowait()
            if item is _END:
                return
            pump.room.release()
            yield item
    finally:
        stopping.cancel()
        pump.closing.set()
        stream.close()
        with suppress(TimeoutError):
            await asyncio.wait_for(pump.finished.wait(), 5)
        await asyncio.gather(stopping, return_exceptions=True)
