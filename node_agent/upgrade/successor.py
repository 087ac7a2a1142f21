"""The successor's side of an upgrade.

Started in handoff mode (FLEET_HANDOFF, the operation id), the successor connects,
checks its engine and its state directory, and says it is ready; once the running agent
has released the host's commands it takes the running agent's name, subscribes to the
commands, and stops it. After ``min_healthy_time`` of heartbeats that reached the bus it
removes the old container and answers the upgrade command: done. If it dies before
that, its guard brings the old agent back, which answers: rolled back (fallback.py);
if the whole container dies, the engine restarts it (its restart policy is set once the
old agent let go) and the guard, started again, does the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from node_agent.health_file import read_health, unhealthy_because
from node_agent.runtime import DockerRuntime
from node_agent.update.operation import OperationResult
from node_agent.upgrade.handoff_files import DONE, READY, RELEASED, REQUEST, TAKEN, HandoffNotes
from protocol.agent_service import AGENT_SERVICE, READY_DEADLINE
from protocol.errors import AgentError
from protocol.models import (
    ContainerState,
    Health,
    OperationOutcome,
    ServiceStatus,
)
from protocol.spec import ServiceSpec
from protocol.version import fleetwave_version

log = logging.getLogger(__name__)
POLL = 0.2
OLD_AGENT_GRACE = 30.0
LOG_TAIL = 20
Finish = Callable[[str, OperationResult, ServiceSpec | None], Awaitable[None]]
"""Records an operation's outcome (and the agent spec now applied) and reports it."""


def agent_status() -> ServiceStatus:
    return ServiceStatus(name=AGENT_SERVICE, state=ContainerState.RUNNING, health=Health.HEALTHY)


class Successor:
    def __init__(
        self,
        runtime: DockerRuntime,
        notes: HandoffNotes,
        state_dir: Path,
        failpoint: Callable[[str], None],
        instance: str,
    ) -> None:
        self._runtime, self._notes, self._state_dir = runtime, notes, state_dir
        self._failpoint = failpoint
        self._instance = instance
        """Only this agent's own heartbeats count for its probation (the old one's share
        the health file)."""
        """Tests: SIGKILL this successor at a named point (FLEET_FAILPOINT)."""

    def ready_deadline(self) -> float:
        """How long the upgrade gives this successor to be ready."""
        request = self._notes.read(REQUEST) or {}
        return float(request.get("ready_deadline", READY_DEADLINE))

    async def take_over(self, operation_id: str, subscribe: Callable[[], Awaitable[None]]) -> None:
        request = self._notes.read(REQUEST)
        if request is None or request.get("operation_id") != operation_id:
            raise AgentError(f"no handoff {operation_id} is asked for here")
        self._failpoint("handoff_started")
        await self._runtime.ping()  # the engine answers (RuntimeFault otherwise)
        self._notes.write(READY, version=fleetwave_version(), at=time.time())  # state dir too
        deadline = time.monotonic() + self.ready_deadline()
        while not self._notes.has(RELEASED):
            if time.monotonic() > deadline:
                raise AgentError("the running agent did not release the host's commands")
            await asyncio.sleep(POLL)
        previous, successor = str(request["previous"]), str(request["successor"])
        # From now on the engine restarts this container whatever kills it, so that its
        # guard, started again, puts things right (see guard.py).
        await self._runtime.set_restart_policy(successor, "unless-stopped")
        await self._runtime.rename(previous, f"{previous}.previous")
        await self._runtime.rename(successor, previous)
        self._failpoint("handoff_renamed")
        await subscribe()
        self._notes.write(TAKEN, at=time.time())
        await self._runtime.stop(f"{previous}.previous", OLD_AGENT_GRACE)
        self._failpoint("handoff_taken")

    async def probation(self, operation_id: str, stop: asyncio.Event, finish: Finish) -> None:
        """Heartbeats healthy for min_healthy_time: the old container goes, this stays.
        Not within the spec's healthy deadline: this agent stops, and its guard brings
        the old one back."""
        request = self._notes.read(REQUEST) or {}
        needed = float(request.get("min_healthy_time", 10.0))
        deadline = time.monotonic() + float(request.get("healthy_deadline", 60.0))
        healthy_since: float | None = None
        while not stop.is_set():
            now = time.time()
            record = read_health(self._state_dir)
            mine = record is not None and record.get("instance") == self._instance
            if mine and unhealthy_because(record, now) is None:
                healthy_since = healthy_since or now
                if now - healthy_since >= needed:
                    break
            else:
                healthy_since = None
            if time.monotonic() > deadline:
                log.error("not healthy for %.0fs within the healthy deadline: stopping", needed)
                stop.set()
                return
            await asyncio.sleep(POLL)
        else:
            return
        self._notes.write(DONE, at=time.time())  # the commit point: no fallback after it
        await self.complete(finish)

    async def complete(self, finish: Finish) -> None:
        """After the commit point (again, if this agent stopped before it was through):
        the old container goes, and the upgrade is answered, done."""
        request = self._notes.read(REQUEST)
        if request is None:
            self._notes.clear()
            return
        await self._runtime.remove(f"{request['previous']}.previous", volumes=True)
        spec = ServiceSpec.model_validate(request["spec"])  # as the controller sent it
        result = OperationResult(OperationOutcome.DONE, agent_status())
        await finish(str(request["operation_id"]), result, spec)
        self._notes.clear()
