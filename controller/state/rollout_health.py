"""The health of each rollout's hosts, kept between passes.

A pass plans against the health of every host of its rollout (the budget counts those
out of service). Working that out afresh for 5,000 hosts cost more than the rest of a
pass, and between two ticks only the hosts heard of meanwhile can have changed. So it is
made whole once a tick (or, should a tick not get to it, once ``whole_every`` has gone
by), and in between brought up to date from the heartbeats that came. A host that falls
silent is seen offline a tick late at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.rollouts.host_health import HostHealth
from controller.rollouts.model import RolloutRecord
from controller.state.inventory import Inventory


@dataclass
class _Kept:
    health: dict[str, HostHealth]
    heard: int
    """The inventory's mark when ``health`` was last brought up to date."""
    made_at: datetime
    """When it was last made whole."""


class RolloutHealth:
    def __init__(self, inventory: Inventory, host_timeout: float, whole_every: float) -> None:
        self._inventory = inventory
        self._timeout = host_timeout
        self._whole_every = timedelta(seconds=whole_every)
        self._kept: dict[str, _Kept] = {}

    def of(self, record: RolloutRecord, now: datetime, *, whole: bool) -> dict[str, HostHealth]:
        """Health of the rollout's hosts and others; ``whole``: every one looked at again.
        The map is kept and changed in place by later calls."""
        inventory = self._inventory
        kept = None if whole else self._kept.get(record.id)
        if kept is not None and now - kept.made_at >= self._whole_every:
            kept = None
        heard = inventory.heard
        changed = None if kept is None else inventory.heard_since(kept.heard)
        if kept is None or changed is None:
            hosts = [*record.hosts, *record.others]
            health = inventory.health(hosts, record.service, now, self._timeout)
            self._kept[record.id] = _Kept(health, heard, now)
            return health
        again = {h for h in changed if h in kept.health}
        again |= record.hosts.keys() - kept.health.keys()  # joined meanwhile
        again |= set(record.others) - kept.health.keys()
        if again:
            kept.health.update(inventory.health(again, record.service, now, self._timeout))
        kept.heard = heard
        return kept.health

    def forget(self, rollout_id: str | None = None) -> None:
        """Drop what is kept of one rollout (None: of all, as when no longer leading)."""
        if rollout_id is None:
            self._kept.clear()
        else:
            self._kept.pop(rollout_id, None)
