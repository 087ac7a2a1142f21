"""The agents' update_progress events, as they happen, for the controller.

The controller listens on the core subject (no consumer, nothing replayed): only what a
host is doing right now matters, to show it (``updating: probing``) and to name it when
a rollout misses its progress deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import subjects
from protocol.agent_service import AGENT_SERVICE
from protocol.codec import decode
from protocol.errors import BrokerError, ProtocolError
from protocol.models import OperationReply, UpdateProgress

log = logging.getLogger("fleetctl.controller")
PROGRESS_SUBJECT = f"{subjects.PREFIX}.evt.*.update_progress"
REPLY_SUBJECT = f"{subjects.PREFIX}.evt.*.operation_reply"


async def follow_progress(nc: Client, news: Callable[[UpdateProgress], None]) -> Subscription:
    """Call ``news`` with every update_progress event of a rollout until unsubscribed."""

    async def handle(msg: Msg) -> None:
        try:
            message = decode(msg.data)
        except ProtocolError as exc:
            log.debug("undecodable progress on %s: %s", msg.subject, exc.message)
            return
        # A host may publish only under its own subject; news it gives of another host
        # (its body naming someone else) is not taken.
        sender = msg.subject.split(".")[2]
        if isinstance(message, UpdateProgress) and message.rollout_id and message.host == sender:
            news(message)

    try:
        return await nc.subscribe(PROGRESS_SUBJECT, cb=handle)
    except nats.errors.Error as exc:
        raise BrokerError(f"cannot follow update progress: {exc!r}") from exc


async def follow_upgrade_replies(
    nc: Client, answered: Callable[[str, OperationReply], None]
) -> Subscription:
    """Call ``answered`` with each reply to an agent upgrade that a host publishes as an
    event. The successor that finishes a handoff never saw the command (the agent it
    replaced did): its answer reaches the controller this way, not as the response."""

    async def handle(msg: Msg) -> None:
        try:
            message = decode(msg.data)
        except ProtocolError as exc:
            log.debug("undecodable reply on %s: %s", msg.subject, exc.message)
            return
        sender = msg.subject.split(".")[2]
        if isinstance(message, OperationReply) and message.service == AGENT_SERVICE:
            answered(sender, message)

    try:
        return await nc.subscribe(REPLY_SUBJECT, cb=handle)
    except nats.errors.Error as exc:
        raise BrokerError(f"cannot follow agent upgrade replies: {exc!r}") from exc
