"""The host inventory: every agent's latest facts from KV fleet_hosts, kept live by a watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
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
HEARD_KEPT = 200_000
"""Hosts heard of that are kept in order (a few ticks of a 10,000-host fleet's beats)."""


def service_health(
    facts: HostFacts | None, service: str, now: datetime, timeout: float
) -> HostHealth:
    """HostHealth of one service on one host, from its last heartbeat."""
    if facts is None:
        return OFFLINE
    if now - facts.sent_at > timedelta(seconds=timeout):
        return HostHealth(online=False, serving=None, last_seen=facts.sent_at)
    if facts.engine_down:
        return engine_down(facts)
    status = next((s for s in facts.services if s.name == service), None)
    if status is None or status.state is ContainerState.ABSENT:
        return HostHealth(online=True, serving=None, last_seen=facts.sent_at)
    serving = status.state is ContainerState.RUNNING and status.health is not Health.UNHEALTHY
    return HostHealth(online=True, serving=serving, last_seen=facts.sent_at)


def engine_down(facts: HostFacts) -> HostHealth:
    """A host whose agent reports its engine down: out of every rollout until it is back
    (nothing can be changed there), and counted against the budget."""
    return HostHealth(online=False, serving=None, last_seen=facts.sent_at, engine_down=True)


def fleet_health(
    hosts: Iterable[str],
    service: str,
    facts: Mapping[str, HostFacts],
    now: datetime,
    timeout: float,
) -> dict[str, HostHealth]:
    """The planner's view of each host, from the facts at hand."""
    return {host: service_health(facts.get(host), service, now, timeout) for host in hosts}


def online_health(facts: HostFacts) -> dict[str, HostHealth]:
    """Each reported service's health on a host that is online; "" for any other service."""
    seen = facts.sent_at
    if facts.engine_down:
        return {"": engine_down(facts)}
    found = {"": HostHealth(online=True, serving=None, last_seen=seen)}
    for status in reversed(facts.services):  # the first of a name wins, as in service_health
        if status.state is ContainerState.ABSENT:
            found[status.name] = found[""]
            continue
        serving = status.state is ContainerState.RUNNING and status.health is not Health.UNHEALTHY
        found[status.name] = HostHealth(online=True, serving=serving, last_seen=seen)
    return found


def convergence_mark(facts: HostFacts) -> Hashable:
    """What convergence judges a host by: its labels, whether its engine answers, and what
    it says it applied."""
    return (
        tuple(sorted(facts.labels.items())),
        facts.engine_down,
        tuple(
            (s.name, s.fingerprint, s.applied_digest, s.drift, s.state is ContainerState.ABSENT)
            for s in facts.services
        ),
    )


class Inventory:
    def __init__(
        self, kv: KeyValue, host_timeout: float = 30.0, heard_kept: int = HEARD_KEPT
    ) -> None:
        self._kv = kv
        self._heard_kept = heard_kept
        self._host_timeout = timedelta(seconds=host_timeout)
        self.changed: set[str] = set()
        """Hosts whose convergence_mark changed, or that came back after being silent
        longer than the host timeout, since the convergence pass last took them."""
        self.on_change: Callable[[], None] = lambda: None
        self.facts: dict[str, HostFacts] = {}
        self._online: dict[str, dict[str, HostHealth]] = {}
        """Per host, what service_health says while it is online: made once a heartbeat,
        not once a pass for every host of every rollout."""
        self._marks: dict[str, Hashable] = {}
        """Per host, the convergence_mark of its last heartbeat."""
        self._heard: list[str] = []
        """The hosts heard of (a heartbeat, or gone from the bucket), in order, from the
        ``_heard_start``-th on: what a kept view of health brings up to date."""
        self._heard_start = 0
        self.loaded = asyncio.Event()

    @property
    def heard(self) -> int:
        """How many times hosts were heard of so far: a mark for heard_since."""
        return self._heard_start + len(self._heard)

    def heard_since(self, mark: int) -> list[str] | None:
        """The hosts heard of since ``mark`` (repeats included), or None if that is
        older than what is kept (then everything must be looked at again)."""
        if mark < self._heard_start:
            return None
        return self._heard[mark - self._heard_start :]

    def _note_heard(self, host: str) -> None:
        self._heard.append(host)
        if len(self._heard) > self._heard_kept:  # a reader a tick behind still finds its mark
            dropped = len(self._heard) // 2
            del self._heard[:dropped]
            self._heard_start += dropped

    def add(self, host: str, facts: HostFacts) -> None:
        before = self.facts.get(host)
        mark, before_mark = convergence_mark(facts), self._marks.get(host)
        self._online[host] = online_health(facts)
        self._marks[host] = mark
        self.facts[host] = facts
        self._note_heard(host)
        if (
            before is None
            or facts.sent_at - before.sent_at > self._host_timeout
            or mark != before_mark
        ):
            self.changed.add(host)
            self.on_change()

    def take_changed(self) -> set[str]:
        taken, self.changed = self.changed, set()
        return taken

    def forget(self, host: str) -> None:
        self.facts.pop(host, None)
        self._online.pop(host, None)
        self._marks.pop(host, None)
        self._note_heard(host)

    def health(
        self, hosts: Iterable[str], service: str, now: datetime, timeout: float
    ) -> dict[str, HostHealth]:
        """fleet_health on this inventory's facts, from what each heartbeat said."""
        cutoff = now - timedelta(seconds=timeout)
        found = {}
        for host in hosts:
            facts = self.facts.get(host)
            if facts is None:
                found[host] = OFFLINE
            elif facts.sent_at < cutoff:
                found[host] = HostHealth(online=False, serving=None, last_seen=facts.sent_at)
            else:
                online = self._online[host]
                found[host] = online.get(service) or online[""]
        return found

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
            except TimeoutError:  # nats-py's own or asyncio's, depending on the path
                continue
            if entry is None:
                self.loaded.set()  # the initial values are all in
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.forget(entry.key)
                continue
            try:
                facts = decode(entry.value)
            except ProtocolError as exc:
                log.warning("fleet_hosts/%s does not decode: %s", entry.key, exc.message)
                continue
            if isinstance(facts, HostFacts):
                self.add(entry.key, facts)
