"""Record what agents publish on fleet.evt.>, and wait for a message that matches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy

from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.models import AnyMessage, UpdatePhase, UpdateProgress

Match = Callable[[AnyMessage], bool]


@dataclass
class EventRecorder:
    client: Client
    subject: str
    messages: list[tuple[str, AnyMessage]] = field(default_factory=list)
    undecodable: list[bytes] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _subscription: Subscription | None = None

    async def __aenter__(self) -> EventRecorder:
        self._subscription = await self.client.subscribe(self.subject, cb=self._on_message)
        await self.client.flush(timeout=5)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        try:
            self.messages.append((msg.subject, decode(msg.data)))
        except ProtocolError:
            self.undecodable.append(msg.data)
        async with self._arrived:
            self._arrived.notify_all()

    def matching(self, match: Match) -> list[AnyMessage]:
        return [message for _, message in self.messages if match(message)]

    async def wait_for(self, match: Match, timeout: float = 30.0) -> AnyMessage:
        """The first recorded message that matches, waiting up to ``timeout`` for one."""
        return (await self.wait_for_many(match, 1, timeout))[0]

    async def wait_for_many(
        self, match: Match, count: int, timeout: float = 30.0
    ) -> list[AnyMessage]:
        """The recorded messages that match, once there are ``count`` of them."""

        async def enough() -> list[AnyMessage]:
            async with self._arrived:
                while True:
                    found = self.matching(match)
                    if len(found) >= count:
                        return found
                    await self._arrived.wait()

        try:
            return await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            kinds = [f"{subject}" for subject, _ in self.messages[-20:]]
            raise AssertionError(f"no matching event within {timeout}s; last: {kinds}") from None


async def stored_events(client: Client, subject: str, timeout: float = 30.0) -> EventRecorder:
    """Every event the stream FLEET_EVENTS holds on ``subject``, as a recorder.

    A live subscription misses what is published while its own server is away (a test
    that kills a cluster node); the stream is the record that outlives that.
    """
    recorder = EventRecorder(client=client, subject=subject)
    js = client.jetstream(timeout=10)
    subscription = await js.subscribe(
        subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                raise AssertionError(f"the stream stopped delivering {subject}") from None
            await recorder._on_message(msg)
            if msg.metadata.num_pending == 0:
                return recorder
    finally:
        await subscription.unsubscribe()


def progress_of(host: str, phase: UpdatePhase, tag: str, service: str | None = None) -> Match:
    """``host``'s update progress at ``phase`` towards an image of ``tag`` (of ``service``,
    when given)."""
    return lambda m: (
        isinstance(m, UpdateProgress)
        and m.host == host
        and m.phase is phase
        and m.image is not None
        and f":{tag}" in m.image
        and service in (None, m.service)
    )
