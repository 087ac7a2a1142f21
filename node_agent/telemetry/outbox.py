"""The agent's outbox: bounded buffers of encoded messages and the task that drains them.

Everything the agent tells the world (events, logs, metrics) goes through here, so that
a slow or absent NATS never blocks or slows a command. Two buffers: events, drained
first, and telemetry (logs and metrics), which is larger and cheaper to lose. A full
buffer drops its *oldest* message and counts it; once NATS takes messages again, the
count goes out first as a ``telemetry_dropped`` event. Every message keeps its
``Nats-Msg-Id`` through retries, so a re-send after a reconnect is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

import nats.errors

from protocol import subjects
from protocol.codec import encode
from protocol.errors import ProtocolError
from protocol.models import TelemetryDropped, utc_now

log = logging.getLogger("fleet-agent.telemetry")

Publish = Callable[[str, bytes, str], Awaitable[None]]
"""Store one message in JetStream (subject, payload, message id); raises when it cannot."""

REFUSAL_REPORT = "refused-"
"""Id prefix of the report of a refused message (the id of that message follows)."""
RETRY_DELAY_MIN = 0.1
RETRY_DELAY_MAX = 2.0
PUBLISH_FAILURES = (nats.errors.Error, TimeoutError, ConnectionError)


OUTBOX_PREFIXES = tuple(f"{subjects.PREFIX}.{kind}." for kind in ("evt", "logs", "metrics"))
PUBLISH_REFUSED = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


class RefusedSubjects:
    """Subjects the server refused this client, from its permissions errors (which come
    to the connection's error callback, not to the publish, which only times out).

    Each refusal is matched once, by the failed publish it explains.
    """

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()

    def note(self, error_text: str) -> bool:
        """Record the subject ``error_text`` names, if it is a refusal of a subject the
        outbox publishes to (events, logs, metrics); any other refusal is not its own."""
        found = PUBLISH_REFUSED.search(error_text)
        if found is None:
            return False
        subject = found.group(1).lower()  # nats-py lowercases the error
        if not subject.startswith(OUTBOX_PREFIXES):
            return False
        self._pending[subject] += 1
        return True

    def take(self, subject: str) -> bool:
        key = subject.lower()
        if self._pending[key] <= 0:
            return False
        self._pending[key] -= 1
        return True


@dataclass(slots=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str
    log_lines: int = 0
    event_number: int = 0
    """Events are numbered as queued, so a sender can wait for all it queued so far."""


@dataclass
class DropCount:
    messages: int = 0
    log_lines: int = 0
    bytes: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, item: Outgoing) -> None:
        now = utc_now()
        self.messages += 1
        self.log_lines += item.log_lines
        self.bytes += len(item.payload)
        self.first_at = self.first_at or now
        self.last_at = now


@dataclass
class TelemetryBuffer:
    """A FIFO bounded by bytes; ``offer`` never waits, and drops the oldest when full."""

    max_bytes: int
    _items: deque[Outgoing] = field(default_factory=deque)
    _bytes: int = 0

    def offer(self, item: Outgoing, pending_drops: DropCount) -> None:
        self._items.append(item)
        self._bytes += len(item.payload)
        while self._bytes > self.max_bytes and len(self._items) > 1:
            oldest = self._items.popleft()
            self._bytes -= len(oldest.payload)
            pending_drops.add(oldest)

    def take(self) -> Outgoing | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= len(item.payload)
        return item

    def __len__(self) -> int:
        return len(self._items)


class Outbox:
    """Events and telemetry on their way to JetStream, drained by one task."""

    def __init__(
        self,
        host: str,
        publish: Publish,
        *,
        event_bytes: int,
        telemetry_bytes: int,
        refused: RefusedSubjects | None = None,
    ) -> None:
        self._host = host
        self._publish = publish
        self.refused = refused or RefusedSubjects()
        self._refusal_reports: deque[Outgoing] = deque()
        self._refused_logged: set[str] = set()
        self.events = TelemetryBuffer(event_bytes)
        self.telemetry = TelemetryBuffer(telemetry_bytes)
        self._pending_drops = DropCount()
        self._wake = asyncio.Event()
        self._events_queued = 0
        self._events_stored = 0
        self._event_stored = asyncio.Condition()

    def send_event(self, item: Outgoing) -> None:
        self._events_queued += 1
        item.event_number = self._events_queued
        self.events.offer(item, self._pending_drops)
        self._wake.set()

    async def events_stored(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every event queued so far is in JetStream.

        A reply waits on this, so whoever reads the reply finds its progress events.
        """
        target = self._events_queued

        async def caught_up() -> None:
            async with self._event_stored:
                await self._event_stored.wait_for(lambda: self._events_stored >= target)

        with suppress(TimeoutError):
            await asyncio.wait_for(caught_up(), timeout)

    def send_telemetry(self, item: Outgoing) -> None:
        self.telemetry.offer(item, self._pending_drops)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.events) + len(self.telemetry)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop``; what is still buffered then is flushed for a moment."""
        delay = RETRY_DELAY_MIN
        in_flight: Outgoing | None = None
        while True:
            if in_flight is None:
                in_flight = self._next()
            if in_flight is None:
                if stop.is_set():
                    return
                self._wake.clear()
                await _wait_any(self._wake, stop)
                continue
            try:
                await self._publish(in_flight.subject, in_flight.payload, in_flight.msg_id)
            except (*PUBLISH_FAILURES, ProtocolError) as exc:
                if self.refused.take(in_flight.subject):
                    # Refused for good: retrying would hold up every later message.
                    self._drop_refused(in_flight)
                    await self._stored(in_flight)
                    in_flight = None
                    continue
                if stop.is_set():
                    return  # NATS is away and the agent is stopping: nothing more to do
                log.debug("publish of %s failed (%r); retrying", in_flight.subject, exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)
                continue
            delay = RETRY_DELAY_MIN
            await self._stored(in_flight)
            in_flight = None

    async def _stored(self, item: Outgoing) -> None:
        """``item`` is done with (stored, or dropped): whoever waits for it may go on."""
        if item.event_number:
            async with self._event_stored:
                self._events_stored = item.event_number
                self._event_stored.notify_all()

    def _drop_refused(self, item: Outgoing) -> None:
        if item.subject not in self._refused_logged:  # once per subject, not per message
            self._refused_logged.add(item.subject)
            log.error("NATS refused publishing to %s: dropped (check permissions)", item.subject)
        if item.msg_id.startswith(REFUSAL_REPORT):
            return  # a report of a refusal, itself refused: nothing more to tell
        report = TelemetryDropped(
            id=f"{REFUSAL_REPORT}{item.msg_id}"[:128],
            sender=self._host,
            host=self._host,
            reason="refused",
            subject=item.subject[:256],
            messages=1,
            log_lines=item.log_lines,
            bytes=len(item.payload),
            first_dropped_at=utc_now(),
            last_dropped_at=utc_now(),
        )
        subject = subjects.host_event_subject(self._host, report.kind)
        self._refusal_reports.append(Outgoing(subject, encode(report), report.id))

    def _next(self) -> Outgoing | None:
        """Drop reports first (they are news about a gap), then events, then telemetry."""
        if self._refusal_reports:
            return self._refusal_reports.popleft()
        if self._pending_drops.messages:
            report = self._drop_report()
            self._pending_drops = DropCount()
            return report
        return self.events.take() or self.telemetry.take()

    def _drop_report(self) -> Outgoing:
        drops = self._pending_drops
        assert drops.first_at is not None
        assert drops.last_at is not None
        log.warning(
            "telemetry dropped while NATS was unavailable: %d message(s), %d log line(s)",
            drops.messages,
            drops.log_lines,
        )
        event = TelemetryDropped(
            sender=self._host,
            host=self._host,
            messages=drops.messages,
            log_lines=drops.log_lines,
            bytes=drops.bytes,
            first_dropped_at=drops.first_at,
            last_dropped_at=drops.last_at,
        )
        return Outgoing(
            subjects.host_event_subject(self._host, event.kind), encode(event), event.id
        )


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
