"""The heartbeat: the host's facts into the hosts bucket every interval (at once when
asked, say after new labels), and the health record the image's HEALTHCHECK reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js.kv import KeyValue

from node_agent.health_file import write_health
from node_agent.settings import AgentSettings
from protocol.codec import encode
from protocol.errors import ProtocolError, RuntimeFault
from protocol.models import HostFacts

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        host: str,
        facts: Callable[[], Awaitable[HostFacts]],
        settings: Callable[[], AgentSettings],
        instance: str,
    ) -> None:
        self._host, self._facts, self._settings = host, facts, settings
        self._instance = instance
        """Written into the health record: a successor counts only its own beats."""
        self.bucket: KeyValue | None = None
        """The hosts bucket, once the agent has opened it."""
        self._asked = asyncio.Event()

    def now(self) -> None:
        """Beat at once instead of at the end of the interval."""
        self._asked.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            written = await self._beat()
            settings = self._settings()
            try:
                write_health(
                    settings.state_dir, written, settings.heartbeat_interval, self._instance
                )
            except OSError as exc:
                log.warning("health record not written: %s", exc)
            await self._wait(stop, settings.heartbeat_interval)

    async def _beat(self) -> bool:
        try:
            facts = await self._facts()
            assert self.bucket is not None
            await self.bucket.put(self._host, encode(facts))
        except (nats.errors.Error, TimeoutError, RuntimeFault, ProtocolError) as exc:
            log.warning("heartbeat not written: %s", exc)
            return False
        return True

    async def _wait(self, stop: asyncio.Event, interval: float) -> None:
        self._asked.clear()
        stopping = asyncio.create_task(stop.wait())
        asked = asyncio.create_task(self._asked.wait())
        await asyncio.wait({stopping, asked}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopping, asked):
            waiter.cancel()
        await asyncio.gather(stopping, asked, return_exceptions=True)
