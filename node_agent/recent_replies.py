"""Replies sent just before a link went silent, to send again once reconnected.

A partition drops packets and closes nothing, so what the agent writes to the dead
connection is lost until its keepalive notices, up to ``window`` seconds later. A reply
lost that way would leave the controller waiting out the whole command timeout (often
over a minute); sent again on the new connection it arrives at once. A requester that
did get the first copy ignores the second. Replies sent after the loss was noticed are
not kept here: nats-py buffers those and delivers them on reconnect.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

KEPT = 256
"""The most replies remembered; older ones are long past any window."""


class RecentReplies:
    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._sent: deque[tuple[float, str, bytes]] = deque(maxlen=KEPT)
        self._lost_between: tuple[float, float] | None = None
        self._resent_to: frozenset[str] = frozenset()

    def sent(self, subject: str, payload: bytes) -> None:
        self._sent.append((self._clock(), subject, payload))

    def disconnected(self) -> None:
        """The link is noticed dead now: what went out in the window before may be lost."""
        now = self._clock()
        self._lost_between = (now - self.window, now)

    def to_resend(self) -> list[tuple[str, bytes]]:
        """After a reconnect: the replies that may have been lost, oldest first, once."""
        if self._lost_between is None:
            self._resent_to = frozenset()
            return []
        start, end = self._lost_between
        self._lost_between = None
        resend = [(subject, payload) for at, subject, payload in self._sent if start <= at <= end]
        self._resent_to = frozenset(subject.lower() for subject, _ in resend)
        return resend

    def refused_copy(self, error: str) -> bool:
        """Whether the bus ``error`` refuses a reply sent again after the last reconnect.

        A locked bus lets one reply through per request, while that request waits: the
        first copy arrived, or nobody waits any more. nats-py lowercases the server's
        error, subject included.
        """
        text = error.lower()
        return "permissions violation" in text and any(s in text for s in self._resent_to)
