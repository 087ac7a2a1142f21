"""Follows the engine's event stream for this agent's containers and publishes the news.

die (with exit code), oom, restart (explicit, or by the restart policy after a die) and
health_status changes become ContainerEvent messages on ``fleet.evt.<host>.container_<action>``.
The stream is reopened after an engine restart from the last event's time; the event's
own identity is its message id, so a replayed event is stored once (Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from datetime import UTC, datetime
from typing import Any

from node_agent.runtime import AGENT_LABEL, MANAGED_LABEL, SERVICE_LABEL, DockerRuntime
from protocol.errors import RuntimeFault
from protocol.models import ContainerAction, ContainerEvent, Health

log = logging.getLogger("fleet-agent.events")
Publish = Callable[[ContainerEvent], Awaitable[None]]
REMEMBERED_DEATHS = 1024
RETRY_DELAY_MAX = 10.0
# start and stop are followed only to tell a policy restart from an asked-for one.
FOLLOWED_ACTIONS = ["die", "oom", "restart", "start", "stop", "health_status"]


class EngineEventFollower:
    def __init__(self, runtime: DockerRuntime, host: str, agent_id: str, publish: Publish):
        self._runtime = runtime
        self._host = host
        self._labels = [f"{MANAGED_LABEL}=1", f"{AGENT_LABEL}={agent_id}"]
        self._publish = publish
        # Containers whose last event was a die: their next start is a policy restart.
        self._died: OrderedDict[str, None] = OrderedDict()
        self._since: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                stream = self._runtime.events(self._labels, FOLLOWED_ACTIONS, self._since, stop)
                async with aclosing(stream) as events:
                    async for raw in events:
                        delay = 0.5
                        await self._handle(raw)
            except RuntimeFault as exc:
                log.warning("cannot follow docker events: %s", exc.message)
            if stop.is_set():
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)

    async def _handle(self, raw: dict[str, Any]) -> None:
        self._since = int(raw.get("time") or 0) or self._since
        event = self.translate(raw)
        if event is not None:
            await self._publish(event)

    def translate(self, raw: dict[str, Any]) -> ContainerEvent | None:
        """The engine's event as ours, or None for the actions nobody asked about."""
        action_text = str(raw.get("Action") or raw.get("status") or "")
        actor = raw.get("Actor") or {}
        container_id = str(actor.get("ID") or raw.get("id") or "")
        attributes: dict[str, str] = actor.get("Attributes") or {}
        fields: dict[str, Any] = {}
        if action_text == "stop":
            # A die followed by a stop was asked for (docker stop / restart), not a crash.
            self._died.pop(container_id, None)
            return None
        if action_text == "start":
            by_agent = self._runtime.started_by_agent(container_id)
            crashed = container_id in self._died
            self._died.pop(container_id, None)
            if by_agent or not crashed:
                return None
            action = ContainerAction.RESTART
            fields["restarted_by_policy"] = True
        elif action_text == "die":
            self._remember_death(container_id)
            action = ContainerAction.DIE
            fields["exit_code"] = _int_or_none(attributes.get("exitCode"))
        elif action_text == "oom":
            action = ContainerAction.OOM
        elif action_text == "restart":
            action = ContainerAction.RESTART
            self._died.pop(container_id, None)
        elif action_text.startswith("health_status"):
            action = ContainerAction.HEALTH_STATUS
            fields["health"] = _health(action_text.partition(":")[2].strip())
        else:
            return None
        nanos = int(raw.get("timeNano") or 0)
        return ContainerEvent(
            id=_event_id(container_id, nanos, action_text),
            sender=self._host,
            host=self._host,
            service=attributes.get(SERVICE_LABEL) or None,
            container=attributes.get("name", "")[:256],
            container_id=container_id[:128],
            action=action,
            at=datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else datetime.now(UTC),
            **fields,
        )

    def _remember_death(self, container_id: str) -> None:
        self._died[container_id] = None
        while len(self._died) > REMEMBERED_DEATHS:
            self._died.popitem(last=False)


def _event_id(container_id: str, nanos: int, action: str) -> str:
    return hashlib.sha256(f"{container_id}/{nanos}/{action}".encode()).hexdigest()[:32]


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _health(text: str) -> Health:
    try:
        return Health(text)
    except ValueError:
        return Health.UNKNOWN
