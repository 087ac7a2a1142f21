"""A stream of signed read-only commands to one host, for as long as it runs: each sent
as soon as the last was answered (or after ``patience``), every answer counted on a
subject of the probe's own, so that a second answer to one command cannot hide. The
server's own "no responders" status, sent when no agent holds the host's commands at
that moment, is not an answer: it is counted apart.

The lab's agent-upgrade test counts answers with it (never two agents answering), and
bench/agent_upgrade.py measures with it how long a host answered nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from datetime import timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg

from protocol.codec import encode
from protocol.models import InspectCommand, utc_now
from protocol.signing import CommandSigner
from protocol.subjects import command_subject

NO_RESPONDERS = "503"


class CommandProbe:
    def __init__(
        self,
        client: Client,
        signer: CommandSigner,
        host: str,
        service: str,
        prefix: str,
        patience: float = 0.3,
    ) -> None:
        self.client, self.signer, self.host, self.service = client, signer, host, service
        self.prefix, self.patience = f"{prefix}.{host}", patience
        self.sent: list[tuple[float, str]] = []
        """(wall-clock time, command id) of every command sent."""
        self.answers: Counter[str] = Counter()
        """Answers by command id."""
        self.unheard: Counter[str] = Counter()
        """Commands the server said nobody took (its "no responders" status), by id."""
        self.answered_at: list[float] = []
        """The wall-clock time of every answer, in order."""
        self._answered = asyncio.Event()

    async def _count(self, msg: Msg) -> None:
        command_id = msg.subject.rsplit(".", 1)[1]
        if (msg.headers or {}).get("Status") == NO_RESPONDERS:
            # The server's, not an agent's: nobody took the host's commands then.
            self.unheard[command_id] += 1
            return
        self.answers[command_id] += 1
        self.answered_at.append(time.time())
        self._answered.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; answers are counted until the probe is cancelled."""
        await self.client.subscribe(f"{self.prefix}.*", cb=self._count)
        while not stop.is_set():
            command = self.signer.sign(
                InspectCommand(
                    service=self.service, host=self.host, sender="controller",
                    expires_at=utc_now() + timedelta(minutes=1),
                )
            )  # fmt: skip
            self._answered.clear()
            self.sent.append((time.time(), command.id))
            reply = f"{self.prefix}.{command.id}"
            await self.client.publish(command_subject(self.host), encode(command), reply=reply)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), self.patience)
        await self.client.flush()

    def quiet_for(self) -> float:
        """Seconds since the last answer (since the first send, if none came)."""
        last = self.answered_at[-1] if self.answered_at else self.sent[0][0]
        return time.time() - last

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no answer came."""
        marks = [start, *(t for t in self.answered_at if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(marks))
