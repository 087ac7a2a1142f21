"""Settling the operations an agent died in the middle of (or that the engine broke off).

At start, every open journal entry is settled before the agent takes commands. One that
cannot be settled yet (the engine is down, say) stays in the journal and is retried in
the background with a growing pause; until it is settled, no new operation may start on
that service, since a new one would overwrite the journal and could remove the set-aside
container the entry still needs to restore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from node_agent.update.operation import Emit, OperationResult
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.updater import ServiceUpdater
from protocol.errors import CommandRefused, describe

log = logging.getLogger("fleet-agent.recovery")

FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 60.0

EmitterFor = Callable[[str, str, str | None, str | None], Emit]
"""(operation id, service, rollout id, image) -> the phase reporter of that operation."""
Settled = Callable[[str, str, OperationResult], Awaitable[None]]
"""Told (operation id, service, result) of each settled operation, to report it."""


class AppRecovering(Protocol):
    async def recover(self, entry: dict[str, Any], emit: Emit) -> OperationResult:
        """Settle an app's journal entry (node_agent/apps/group.py)."""


class Recovery:
    def __init__(
        self,
        updater: ServiceUpdater,
        locks: ServiceLocks,
        emitter_for: EmitterFor,
        settled: Settled,
    ) -> None:
        self._updater = updater
        self._locks = locks
        self._emitter_for = emitter_for
        self._settled = settled
        self._wake = asyncio.Event()
        self.apps: AppRecovering | None = None
        """Set by the daemon: settles an app's entry (node_agent/apps/group.py)."""

    def pending(self) -> list[str]:
        """Services with an operation still to settle."""
        return [
            entry.get("journal_key", entry["service"])  # an app's: name@app
            for entry in self._updater.journal.open_entries()
        ]

    def wake(self) -> None:
        """An operation left its entry open (the engine failed it, and its own attempt to
        settle failed too): retry from now on."""
        self._wake.set()

    async def settle_all(self) -> list[str]:
        """Try to settle every open entry now; returns the services still pending."""
        pending = []
        for service in self.pending():
            if self._locks.busy(service):
                pending.append(service)  # a command holds it: try again later
                continue
            async with self._locks.hold(service):
                if not await self._settle_held(service):
                    pending.append(service)
        return pending

    async def before_operation(self, service: str) -> None:
        """Settle ``service``'s unfinished operation, if any, before a new one starts.

        The caller holds the service's lock. Raises CommandRefused(``recovery_pending``)
        when it cannot be settled yet.
        """
        if self._updater.journal.get(service) is None:
            return
        if not await self._settle_held(service):
            raise CommandRefused(
                "recovery_pending",
                f"an earlier operation on {service} is unfinished and could not be settled "
                "yet; the agent keeps trying",
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Retry what could not be settled, pausing longer each time; when nothing is
        left, wait until an operation leaves something (``wake``)."""
        pause: float | None = FIRST_RETRY_SECONDS if self.pending() else None
        while not stop.is_set():
            self._wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._wake)]
            await asyncio.wait(waiters, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            if stop.is_set():
                return
            if not await self.settle_all():
                pause = None  # nothing left: sleep until woken
            elif pause is None:
                pause = FIRST_RETRY_SECONDS
            else:
                pause = min(pause * 2, LONGEST_RETRY_SECONDS)

    async def _settle_held(self, service: str) -> bool:
        entry = self._updater.journal.get(service)
        if entry is None:
            return True
        return await self._settle(entry)

    async def _settle(self, entry: dict[str, Any]) -> bool:
        service, op_id = entry["service"], entry["operation_id"]
        log.warning(
            "recovering %s after a crash (operation %s, phase %s)",
            service,
            op_id,
            entry.get("phase"),
        )
        emit = self._emitter_for(op_id, service, entry.get("rollout_id"), entry.get("image"))
        try:
            if entry.get("kind") == "app" and self.apps is not None:
                result = await self.apps.recover(entry, emit)
            else:
                result = await self._updater.recover(entry, emit)
        except Exception as exc:  # noqa: BLE001 - the entry stays and is retried; the agent lives
            log.error("recovery of %s failed: %s (will retry)", service, describe(exc))
            return False
        await self._settled(op_id, service, result)
        return True
