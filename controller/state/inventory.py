"""The host inventory: every agent's latest facts from KV fleet_hosts, kept live by a watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta

import nats.errors
from nats.js.kv import KeyValue

from controller.rollouts.convergence import matches as matches
from controller.rollouts.host_health import OFFLINE, HostHealth
from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.models import ContainerState, Health, HostFacts

log = logging.getLogger("fleetctl.inventory")


def service_health(
    facts: HostFacts | None, service: str, now: datetime, timeout: float
) -> HostHealth:
    """HostHealth of one service on one host, from its last heartbeat."""
    if facts is None:
        return OFFLINE
    if now - facts.sent_at > timedelta(seconds=timeout):
        return HostHealth(online=False, serving=None, last_seen=facts.sent_at)
    status = next((s for s in facts.services if s.name == service), None)
    if status is None or status.state is ContainerState.ABSENT:
        return HostHealth(online=True, serving=None, last_seen=facts.sent_at)
    serving = status.state is ContainerState.RUNNING and status.health is not Health.UNHEALTHY
    return HostHealth(online=True, serving=serving, last_seen=facts.sent_at)


def fleet_health(
    hosts: Iterable[str],
    service: str,
    facts: Mapping[str, HostFacts],
    now: datetime,
    timeout: float,
) -> dict[str, HostHealth]:
    """The planner's view of each host, from the facts at hand."""
    return {host: service_health(facts.get(host), service, now, timeout) for host in hosts}


class Inventory:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.facts: dict[str, HostFacts] = {}
        self.loaded = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the bucket until ``stop``; restarts the watch if it breaks."""
        while not stop.is_set():
            try:
                watcher = await self._kv.watchall()
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("cannot watch fleet_hosts: %r", exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2)
                continue
            try:
                await self._follow(watcher, stop)
            finally:
                with suppress(nats.errors.Error):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    async def _follow(self, watcher: KeyValue.KeyWatcher, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
            except nats.errors.TimeoutError:
                continue
            if entry is None:
                self.loaded.set()  # the initial values are all in
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.facts.pop(entry.key, None)
                continue
            try:
                facts = decode(entry.value)
            except ProtocolError as exc:
                log.warning("fleet_hosts/%s does not decode: %s", entry.key, exc.message)
                continue
            if isinstance(facts, HostFacts):
                self.facts[entry.key] = facts
