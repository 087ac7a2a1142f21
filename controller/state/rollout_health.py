"""The health of each rollout's hosts, kept between passes.

A pass plans against the health of every host of its rollout (the budget counts those
out of service). Working that out afresh for 10,000 hosts cost more than the rest of a
pass, and between two passes a host's health changes only when it is heard of, or when
its last heartbeat grows older than the host timeout. So it is made whole once (and again
once ``whole_every`` has gone by, should anything have slipped), and in between brought
up to date from the heartbeats that came and the heartbeats that have just grown too old:
each online host's is queued by the moment it does.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    looked: set[str] | None = None
    """Hosts looked at again since ``looked_at`` last asked (None: all of them)."""
    ageing: list[tuple[datetime, str]] = field(default_factory=list)
    """A heap: when each online host's last heartbeat grows older than the host timeout.
    Only the newest moment of a host counts (``ages_at``); older ones are passed over."""
    ages_at: dict[str, datetime] = field(default_factory=dict)
    others_named: tuple[str, ...] = ()
    """The record's others (the very tuple) when each was last sure to be looked at."""


class RolloutHealth:
    def __init__(self, inventory: Inventory, host_timeout: float, whole_every: float) -> None:
        self._inventory = inventory
        self._timeout = host_timeout
        self._timeout_delta = timedelta(seconds=host_timeout)
        self._whole_every = timedelta(seconds=whole_every)
        self._kept: dict[str, _Kept] = {}

    def of(self, record: RolloutRecord, now: datetime) -> dict[str, HostHealth]:
        """Health of the rollout's hosts and others. The map is kept and changed in place
        by later calls."""
        inventory = self._inventory
        kept = self._kept.get(record.id)
        if kept is not None and now - kept.made_at >= self._whole_every:
            kept = None
        heard = inventory.heard
        changed = None if kept is None else inventory.heard_since(kept.heard)
        if kept is None or changed is None:
            kept = self._kept[record.id] = _Kept({}, heard, now)
            kept.others_named = record.others
            self._look_again(kept, [*record.hosts, *record.others], record.service, now)
            return kept.health
        again = {h for h in changed if h in kept.health}
        # Hosts joined meanwhile: not looked at yet. (A record's others are a new tuple
        # whenever they change; its hosts may be another set of the same size, when a
        # pass that took in one host failed to write and the next took in another.)
        again |= record.hosts.keys() - kept.health.keys()
        if record.others is not kept.others_named:
            again |= set(record.others) - kept.health.keys()
            kept.others_named = record.others
        while kept.ageing and kept.ageing[0][0] < now:
            when, host = heapq.heappop(kept.ageing)
            if kept.ages_at.get(host) == when:
                again.add(host)
        if again:
            self._look_again(kept, again, record.service, now)
        kept.heard = heard
        return kept.health

    def looked_at(self, rollout_id: str) -> frozenset[str] | None:
        """The hosts whose health may have changed since ``noted`` last said what the
        record holds (None: any host)."""
        kept = self._kept.get(rollout_id)
        if kept is None or kept.looked is None:
            return None
        return frozenset(kept.looked)

    def noted(self, rollout_id: str, looked: frozenset[str] | None) -> None:
        """The record now holds what the health of ``looked`` (as ``looked_at`` gave
        them) says: they need not be looked at for it again until they change."""
        kept = self._kept.get(rollout_id)
        if kept is None:
            return
        if looked is None:
            kept.looked = set()
        elif kept.looked is not None:
            kept.looked -= looked

    def _look_again(self, kept: _Kept, hosts: Iterable[str], service: str, now: datetime) -> None:
        found = self._inventory.health(hosts, service, now, self._timeout)
        kept.health.update(found)
        if kept.looked is not None:
            kept.looked.update(found)
        for host, health in found.items():
            if not health.online or health.last_seen is None:
                kept.ages_at.pop(host, None)
                continue
            when = health.last_seen + self._timeout_delta
            if kept.ages_at.get(host) != when:
                kept.ages_at[host] = when
                heapq.heappush(kept.ageing, (when, host))

    def forget(self, rollout_id: str | None = None) -> None:
        """Drop what is kept of one rollout (None: of all, as when no longer leading)."""
        if rollout_id is None:
            self._kept.clear()
        else:
            self._kept.pop(rollout_id, None)
