"""What the controller knows of each host right now, and how to say it to an operator.

Pure, like the planner that uses it: the heartbeat's age and ``now`` come in as values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.rollouts.model import IN_FLIGHT, HostPhase, HostRecord, RolloutRecord

HELD_UP_NAMED = 10
"""A deadline's reason names this many hosts at most, then counts the rest."""
DETAIL_WIDTH = 80


@dataclass(frozen=True)
class HostHealth:
    """What the controller knows of a host right now, from its heartbeat."""

    online: bool
    serving: bool | None
    """Whether the service answers healthy there; None where it does not run at all."""
    last_seen: datetime | None = None
    """Its last heartbeat; None for a host never heard of."""
    engine_down: bool = False
    """Its agent beats but its engine does not answer: not online for rollouts."""

    @property
    def unavailable(self) -> bool:
        return not self.online or self.serving is False


OFFLINE = HostHealth(online=False, serving=None)


def span(seconds: float) -> str:
    """A duration the way the tables show one: 42s, 5m, 3h (rounded down)."""
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    return f"{whole // 3600}h"


def out_of_touch_since(entry: HostRecord, health: HostHealth) -> datetime | None:
    """Since when the controller has not heard from a host: its last heartbeat once that
    is older than the host timeout, or the first command it left unanswered."""
    heard = None if health.online or health.engine_down else health.last_seen
    known = [moment for moment in (entry.offline_since, heard) if moment is not None]
    return min(known) if known else None


def why_held(entry: HostRecord, health: HostHealth, now: datetime) -> str:
    """Why one host holds a rollout up, in a few words: ``offline 75s``, ``updating: probing``."""
    if health.engine_down:
        return "engine down"
    since = out_of_touch_since(entry, health)
    if since is not None:
        return f"offline {span((now - since).total_seconds())}"
    if not health.online:
        return "offline"  # never heard of, so for no known time
    detail = " ".join(entry.detail.split())[:DETAIL_WIDTH]
    if entry.phase in IN_FLIGHT:
        return f"{entry.phase.value}: {detail}" if detail else entry.phase.value
    if health.serving is False:
        return "unhealthy"
    return f"deferred: {detail}" if detail else "deferred"


def held_up_by(
    record: RolloutRecord,
    health: Mapping[str, HostHealth],
    now: datetime,
    *,
    out_of_service: bool,
) -> str:
    """The hosts a rollout waits for, and why: its work in flight, and with
    ``out_of_service`` the hosts that spend the budget or cannot start (offline or
    unhealthy) and those waiting out a deferral. In host order; the first ten named."""
    held: list[str] = []
    for host in record.ordered_hosts():
        entry = record.hosts[host]
        state = health.get(host, OFFLINE)
        deferred = entry.phase is HostPhase.READY and (
            entry.not_before is not None and entry.not_before > now
        )
        if entry.phase in IN_FLIGHT or (out_of_service and (state.unavailable or deferred)):
            held.append(f"{host} ({why_held(entry, state, now)})")
    if not held:
        return "no host is in flight"
    more = len(held) - HELD_UP_NAMED
    named = ", ".join(held[:HELD_UP_NAMED])
    return f"held up by {named}" + (f" and {more} more" if more > 0 else "")
