"""A rollout's hosts by phase and in host order, made once per hosts map.

The planner asks a 5,000-host record for counts and orders many times a pass; the record
keeps this index beside its fields and makes it again when a copy has other hosts.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Protocol

REBUILD_SHARE = 8
"""Past one host in this many changed, the index is made afresh (as fast by then)."""


class HasPhase(Protocol):
    @property
    def phase(self) -> Hashable: ...


@dataclass(frozen=True)
class HostIndex:
    hosts: Mapping[str, HasPhase]
    """The map this index was made of (the same object, not a copy)."""
    ordered: tuple[str, ...]
    by_phase: Mapping[Hashable, tuple[str, ...]]

    @classmethod
    def of(cls, hosts: Mapping[str, HasPhase], before: HostIndex | None = None) -> HostIndex:
        """The index of ``hosts``. From ``before`` (the index of the record this one is a
        copy of) when the hosts are the same and few changed, as on most passes: only
        the changed hosts are moved between phases."""
        if before is None or before.hosts.keys() != hosts.keys():
            return cls._made(hosts, tuple(sorted(hosts)))
        old = before.hosts
        changed = [host for host, entry in hosts.items() if old[host] is not entry]
        if len(changed) * REBUILD_SHARE > len(hosts):
            return cls._made(hosts, before.ordered)
        leaving: dict[Hashable, set[str]] = {}
        arriving: dict[Hashable, list[str]] = {}
        for host in changed:
            was, now = old[host].phase, hosts[host].phase
            if was != now:
                leaving.setdefault(was, set()).add(host)
                arriving.setdefault(now, []).append(host)
        by_phase = dict(before.by_phase)
        for phase in leaving.keys() | arriving.keys():
            gone = leaving.get(phase, set())
            kept = [host for host in by_phase.get(phase, ()) if host not in gone]
            for host in arriving.get(phase, ()):
                insort(kept, host)  # host order is the ids' sorted order
            if kept:
                by_phase[phase] = tuple(kept)
            else:
                by_phase.pop(phase, None)
        return cls(hosts, before.ordered, by_phase)

    @classmethod
    def _made(cls, hosts: Mapping[str, HasPhase], ordered: tuple[str, ...]) -> HostIndex:
        by_phase: dict[Hashable, list[str]] = {}
        for host in ordered:
            by_phase.setdefault(hosts[host].phase, []).append(host)
        return cls(hosts, ordered, {phase: tuple(h) for phase, h in by_phase.items()})
