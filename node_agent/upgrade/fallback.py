"""The old agent, started again during an upgrade it let go of.

Started by the successor's guard (the successor failed after it took over), it answers
the upgrade: rolled back. Started by the engine (it was killed once it released the
host's commands), it keeps out of the successor's way while the successor is at it, and
stops waiting at a deadline: a successor that is stuck (paused, hung, restarting before
it took over) is removed, this agent takes its own name back and serves, and the
upgrade is answered rolled back. When the engine cannot say whether a successor holds
the host, it waits too (two agents must never serve one host), up to the same deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from node_agent.runtime import DockerRuntime
from node_agent.update.operation import OperationResult
from node_agent.upgrade.handoff_files import DONE, RELEASED, REQUEST, TAKEN, HandoffNotes
from node_agent.upgrade.successor import LOG_TAIL, OLD_AGENT_GRACE, POLL, Finish, agent_status
from protocol.agent_service import READY_DEADLINE
from protocol.errors import AgentError
from protocol.models import FailureBundle, OperationOutcome, Reason

log = logging.getLogger(__name__)
TAKE_OVER_GRACE = 10.0
"""Past the successor's own deadlines: time for its renames, its subscription and its
stopping of this agent."""

FALLBACK_REASONS = {
    "successor_failed": "the successor failed after it took over; the old agent is back",
    "successor_stopped": "the successor stopped before it took over; the old agent serves on",
    "successor_stuck": (
        "the successor did not finish its handoff in time; the old agent took the host back"
    ),
}


class Fallback:
    def __init__(
        self, runtime: DockerRuntime, notes: HandoffNotes, agent: str | None,
        made_for: str | None = None,
    ) -> None:  # fmt: skip
        self._runtime, self._notes, self._agent = runtime, notes, agent
        self._made_for = made_for
        """The handoff this agent's container was made for (FLEET_HANDOFF): a successor's;
        it is never the old agent of that one."""
        self._stuck_tail: list[str] | None = None
        """The log tail of a successor this agent removed at the deadline."""

    async def keep_out_of_the_way(self, stop: asyncio.Event) -> None:
        """No commands, no settling, while a successor this agent let have the host is
        at it: until it stops this container, fails and its guard gives the host back,
        or its deadline passes (then this agent takes the host back)."""
        waiting = False
        while not stop.is_set() and await self._successor_may_hold():
            # Past its commit point the successor holds the host for good: no deadline.
            if time.time() > self.deadline() and not self._notes.has(DONE):
                try:
                    await self._take_back()
                    return
                except AgentError as exc:  # the engine again: try at the next poll
                    log.error("could not take the host back from the successor: %s", exc)
            if not waiting:
                log.warning("this agent let its successor have the host; waiting to be stopped")
                waiting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)

    def deadline(self) -> float:
        """Wall-clock time (the notes' times are) by which the successor must have taken
        over, or, once it did, finished its probation."""
        request = self._notes.read(REQUEST) or {}
        taken = self._notes.read(TAKEN)
        if taken is not None:
            since = float(taken.get("at", 0.0))
            allowed = float(request.get("healthy_deadline", 60.0)) + OLD_AGENT_GRACE
        else:
            since = float((self._notes.read(RELEASED) or {}).get("at", 0.0))
            allowed = float(request.get("ready_deadline", READY_DEADLINE))
        return since + allowed + TAKE_OVER_GRACE

    async def _successor_may_hold(self) -> bool:
        try:
            return await self.successor_holds()
        except AgentError as exc:  # the engine cannot say: wait, as if it did
            log.error("could not tell whether a successor holds the host: %s", exc)
            return True

    async def successor_holds(self) -> bool:
        """This agent released the host's commands to a successor that is still at it.
        The successor runs under its own name until it takes this agent's, setting this
        one aside; a successor that failed after that is renamed away by its guard,
        which gives this agent its name back: while this agent is set aside, the
        successor (or its guard) is at work. Past the commit point (done), a container
        set aside is only waiting to be removed."""
        request = self._handoff_let_go(committed_too=True)
        if request is None:
            return False
        previous = str(request["previous"])
        set_aside = await self._runtime.inspect_container(f"{previous}.previous") is not None
        if self._notes.has(DONE):  # committed: the successor removes this container next
            return set_aside
        return set_aside or await self._running(str(request["successor"]))

    def _handoff_let_go(self, committed_too: bool = False) -> dict[str, Any] | None:
        """The handoff this agent released the host's commands for, not done yet (or
        done, with ``committed_too``)."""
        request = self._notes.read(REQUEST)
        if request is None or not self._notes.has(RELEASED):
            return None
        if self._notes.has(DONE) and not committed_too:
            return None
        if request.get("operation_id") == self._made_for:  # this agent is its successor
            return None
        # Only the agent that asked for it (the notes share the state directory).
        return request if request.get("previous") == self._agent else None

    async def _running(self, name: str) -> bool:
        found = await self._runtime.inspect_container(name)
        return found is not None and bool(found["State"]["Running"])

    async def _take_back(self) -> None:
        """The successor is past its deadline: it goes, and this agent gets its own name
        back. Both are found by id: the successor may be renaming them even now."""
        request = self._notes.read(REQUEST) or {}
        previous = str(request["previous"])
        successor = str(request.get("successor_id") or request["successor"])
        if self._stuck_tail is None:  # a retry after a failure keeps the first reading
            try:
                self._stuck_tail = await self._runtime.logs_tail(successor, LOG_TAIL)
            except AgentError:
                self._stuck_tail = []
        await self._runtime.remove(successor, volumes=True)
        await self._runtime.remove(f"{previous}.failed", volumes=True)  # a guard's, halfway
        own = request.get("previous_id") or f"{previous}.previous"
        mine = await self._runtime.inspect_container(str(own))
        if mine is not None and str(mine["Name"]).lstrip("/") != previous:
            holder = await self._runtime.inspect_container(previous)
            if holder is not None and holder["Id"] != mine["Id"]:
                await self._runtime.remove(str(holder["Id"]), volumes=True)
            await self._runtime.rename(str(mine["Id"]), previous)
        log.error("the successor did not finish its handoff in time: this agent serves on")

    async def settle(self, finish: Finish) -> None:
        """Answer an upgrade this agent let go of and got back: rolled back, with the
        successor's log tail, and what it left removed."""
        request = self._handoff_let_go()
        if request is None:
            return
        previous = str(request["previous"])
        if self._stuck_tail is not None:
            code, tail = "successor_stuck", self._stuck_tail
        else:
            code = "successor_failed" if self._notes.has(TAKEN) else "successor_stopped"
            gone = f"{previous}.failed" if code == "successor_failed" else request["successor"]
            try:
                tail = await self._runtime.logs_tail(str(gone), LOG_TAIL)
            except AgentError:
                tail = []
            await self._runtime.remove(str(gone), volumes=True)
        reason = Reason(code=code, text=FALLBACK_REASONS[code])
        bundle = FailureBundle(reason=reason, last_log_lines=tuple(t[:2000] for t in tail))
        result = OperationResult(
            OperationOutcome.ROLLED_BACK, agent_status(), failure=bundle, reasons=[reason]
        )
        await finish(str(request["operation_id"]), result, None)
        self._notes.clear()
