"""When the leader judges hosts for convergence: the whole fleet every converge_interval
(hosts that went silent, retries come due), and in between, at once, only the hosts whose
heartbeats changed what convergence looks at. It also keeps the rollouts in progress as
the leader's passes last saw them, since a convergence pass leaves a service with an
operator's rollout to that rollout and gives hosts to a convergence rollout in progress.
"""

from __future__ import annotations

import asyncio
import logging

from controller.errors import ControllerError
from controller.leader.converger import Converger, Passed
from controller.rollouts.joining import join, takes_converging_hosts
from controller.rollouts.model import Change, RolloutRecord
from controller.state.inventory import Inventory
from protocol.errors import BrokerError
from protocol.models import utc_now

log = logging.getLogger("fleetctl.controller")


def joiner(hosts: list[str]) -> Change:
    """The change that takes ``hosts`` into a convergence rollout (those it has not taken
    already), if it still takes hosts when the change is folded in."""

    def take(record: RolloutRecord) -> RolloutRecord:
        if not takes_converging_hosts(record):
            return record
        return join(record, [h for h in hosts if h not in record.hosts], utc_now())

    return take


def reckoner(others: tuple[str, ...]) -> Change:
    """The change that sets a convergence rollout's other matching hosts (those it has
    not taken in meanwhile)."""

    def reckon(record: RolloutRecord) -> RolloutRecord:
        if not record.converging:
            return record
        now = tuple(host for host in others if host not in record.hosts)
        return record if now == record.others else record.model_copy(update={"others": now})

    return reckon


class ConvergenceLoop:
    def __init__(self, converger: Converger, inventory: Inventory, interval: float) -> None:
        self._converger = converger
        self._inventory = inventory
        self._interval = interval
        self._next_full = 0.0
        """Monotonic time of the next full pass; 0 until the first as the leader."""
        self.active: dict[str, RolloutRecord | None] = {}
        """Each service's rollout in progress, as the leader's last pass over it left it
        (None: its record is not written yet)."""

    def lead_again(self) -> None:
        """Leading (again): another controller may have led meanwhile; all is read anew,
        and the whole fleet is judged before any pass over changed hosts."""
        self._converger.reset()
        self._next_full = 0.0

    def saw(self, record: RolloutRecord) -> None:
        """A pass changed a rollout in progress: later convergence passes see that."""
        if self.active.get(record.service) is not None:
            self.active[record.service] = record

    def ended(self, record: RolloutRecord) -> None:
        """A rollout ended and its service is free: the whole fleet is judged at the next
        pass, not at the next interval. Hosts whose heartbeats changed while it ran were
        left to it (so taken from ``changed``), and one may need convergence now."""
        seen = self.active.get(record.service, record)
        if seen is None or seen.id != record.id:  # another holds the service: it decides
            return
        self.active.pop(record.service, None)
        if self._next_full:  # (0: no full pass yet, which comes first anyway)
            self._next_full = asyncio.get_running_loop().time()

    async def full_if_due(self) -> Passed | None:
        now = asyncio.get_running_loop().time()
        if not self._interval or now < self._next_full:
            return None
        self._next_full = now + self._interval
        self._inventory.take_changed()  # judged now with all the others
        return await self._pass(None)

    async def changes(self) -> Passed | None:
        """A pass costs what changed, not the fleet's size (unless a full one is due)."""
        if not self._interval or not self._next_full:
            return None  # (no full pass yet as the leader: the next tick judges every host)
        if asyncio.get_running_loop().time() >= self._next_full:
            return await self.full_if_due()
        if not self._inventory.changed:
            return None
        return await self._pass(self._inventory.take_changed())

    async def _pass(self, only: set[str] | None) -> Passed | None:
        try:
            passed = await self._converger.run_pass(
                self.active, self._inventory.facts, utc_now(), only=only
            )
        except (BrokerError, ControllerError) as exc:
            log.warning("convergence pass skipped: %s", exc.message)
            return None
        for started in passed.started:  # the passes until the next tick see it running
            self.active[started.service] = started
        return passed
