"""Read the fleet's streams (events, logs, metrics) the way Kafka users expect.

``async for delivered in FleetFeed(nc).events(since=..., rollout=...)`` replays FLEET_EVENTS
from a point in time (or a sequence) and, with ``follow``, keeps going. A ``durable``
name makes it a named consumer that resumes where it stopped: each message is acked by
the caller (``await delivered.ack()``) once handled, so a restart neither loses nor
repeats one. Several workers with the same durable name form a consumer group: they
split the stream between them, and what a dead worker never acked is redelivered to the
others after ``ack_wait``. ``logs`` and ``metrics`` read FLEET_LOGS and FLEET_METRICS the
same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from protocol import subjects
from protocol.codec import decode
from protocol.errors import BrokerError, ProtocolError
from protocol.models import AnyMessage

log = logging.getLogger("fleetctl.feed")
ACK_TIMEOUT = 5.0
EPHEMERAL_IDLE = 30.0
"""Seconds after which the server drops an abandoned ephemeral consumer."""


@dataclass
class Delivered:
    message: AnyMessage
    subject: str
    sequence: int
    _msg: Msg
    _manual: bool
    acked: bool = False

    async def ack(self) -> None:
        """Confirm the message is handled; the server has recorded it when this returns."""
        if self._manual and not self.acked:
            await self._msg.ack_sync(timeout=ACK_TIMEOUT)
        self.acked = True


@dataclass
class FeedStats:
    undecodable: int = 0
    """Messages in the stream that are not fleet messages: skipped, acked, counted."""


class FleetFeed:
    def __init__(self, nc: Client) -> None:
        self._js = nc.jetstream(timeout=10)
        self.stats = FeedStats()

    async def events(
        self,
        *,
        since: datetime | None = None,
        start_sequence: int | None = None,
        host: str | None = None,
        rollout: str | None = None,
        durable: str | None = None,
        follow: bool = False,
        ack_wait: float = 30.0,
        batch: int = 100,
    ) -> AsyncGenerator[Delivered, None]:
        subject = subjects.host_events_wildcard(host) if host else subjects.EVENTS_WILDCARD

        def keep(message: AnyMessage) -> bool:
            return not rollout or getattr(message, "rollout_id", None) == rollout

        async for delivered in self.read(
            subjects.EVENTS_STREAM,
            subject,
            keep,
            since=since,
            start_sequence=start_sequence,
            durable=durable,
            follow=follow,
            ack_wait=ack_wait,
            batch=batch,
        ):
            yield delivered

    async def logs(
        self,
        service: str | Sequence[str],
        *,
        host: str | None = None,
        since: datetime | None = None,
        start_sequence: int | None = None,
        follow: bool = False,
        batch: int = 200,
    ) -> AsyncGenerator[Delivered, None]:
        """The log batches of ``service`` (on one host, or all), oldest first; of
        several services (an app's members), merged in the order they were stored."""
        services = [service] if isinstance(service, str) else list(service)
        subject = [
            subjects.log_subject(host, name) if host else subjects.service_logs_wildcard(name)
            for name in services
        ]
        async for delivered in self.read(
            subjects.LOGS_STREAM,
            subject,
            since=since,
            start_sequence=start_sequence,
            follow=follow,
            batch=batch,
        ):
            yield delivered

    async def metrics(
        self,
        *,
        host: str | None = None,
        since: datetime | None = None,
        start_sequence: int | None = None,
        latest: bool = False,
        follow: bool = False,
        batch: int = 200,
    ) -> AsyncGenerator[Delivered, None]:
        """Metrics samples; ``latest`` starts from each host's newest one."""
        subject = subjects.metrics_subject(host) if host else subjects.METRICS_WILDCARD
        async for delivered in self.read(
            subjects.METRICS_STREAM,
            subject,
            since=since,
            start_sequence=start_sequence,
            last_per_subject=latest,
            follow=follow,
            batch=batch,
        ):
            yield delivered

    async def read(
        self,
        stream: str,
        subject: str | list[str],
        keep: Callable[[AnyMessage], bool] | None = None,
        *,
        since: datetime | None = None,
        start_sequence: int | None = None,
        last_per_subject: bool = False,
        durable: str | None = None,
        follow: bool = False,
        ack_wait: float = 30.0,
        batch: int = 100,
    ) -> AsyncGenerator[Delivered, None]:
        """Any fleet stream, filtered by ``subject`` (or any of several) and then by
        ``keep``."""
        config = _consumer_config(durable, ack_wait, since, start_sequence, last_per_subject)
        if isinstance(subject, list) and len(subject) > 1:
            config.filter_subjects = subject
        first = subject if isinstance(subject, str) else subject[0]
        try:
            subscription = await self._js.pull_subscribe(
                first, durable=durable, stream=stream, config=config
            )
        except nats.errors.Error as exc:
            raise BrokerError(f"cannot read {stream}: {exc!r}") from exc
        unhandled: list[Msg] = []
        """Fetched but not acked when the caller stops: handed back at once (nak), so the
        next reader of a durable consumer need not wait ack_wait for them."""
        try:
            while True:
                try:
                    messages = await subscription.fetch(batch, timeout=1.0)
                except TimeoutError:  # nats-py raises its own or asyncio's, by path
                    if follow:
                        continue
                    return  # caught up
                unhandled = list(messages)
                for msg in messages:
                    delivered = await self._deliverable(msg, keep, durable is not None)
                    if delivered is not None:
                        yield delivered
                        if not delivered.acked:
                            continue  # the caller acks later, or its ack_wait expires
                    unhandled.remove(msg)
                if not follow and messages and messages[-1].metadata.num_pending == 0:
                    return
        finally:
            if durable is not None:
                for msg in unhandled:
                    with suppress(nats.errors.Error, TimeoutError):
                        await msg.nak()
            # Only the client's inbox goes: a durable consumer stays on the server, and an
            # ephemeral one is dropped by the server once idle.
            with suppress(nats.errors.Error, TimeoutError):
                await subscription.unsubscribe()

    async def _deliverable(
        self, msg: Msg, keep: Callable[[AnyMessage], bool] | None, manual: bool
    ) -> Delivered | None:
        try:
            message = decode(msg.data)
        except ProtocolError as exc:
            self.stats.undecodable += 1
            log.warning("skipping an undecodable message on %s: %s", msg.subject, exc.message)
            message = None
        if message is None or (keep is not None and not keep(message)):
            if manual:
                await msg.ack_sync(timeout=ACK_TIMEOUT)
            return None
        return Delivered(message, msg.subject, msg.metadata.sequence.stream, msg, manual)


def _consumer_config(
    durable: str | None,
    ack_wait: float,
    since: datetime | None,
    start_sequence: int | None,
    last_per_subject: bool,
) -> ConsumerConfig:
    """Where a reading starts: a sequence, a time, the last per subject, or the start."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT if durable else AckPolicy.NONE,
        ack_wait=ack_wait,
        inactive_threshold=None if durable else EPHEMERAL_IDLE,
        deliver_policy=DeliverPolicy.ALL,
    )
    if start_sequence is not None:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_sequence
    elif since is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = since
    elif last_per_subject:
        config.deliver_policy = DeliverPolicy.LAST_PER_SUBJECT
    return config
