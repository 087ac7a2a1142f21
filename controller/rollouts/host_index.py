"""A rollout's hosts by phase and in host order, made once per hosts map.

The planner asks a 5,000-host record for counts and orders many times a pass; the record
keeps this index beside its fields and makes it again when a copy has other hosts.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import eq, is_not
from typing import Protocol, TypeVar

V = TypeVar("V")

REBUILD_SHARE = 8
"""Past one host in this many changed, the index is made afresh (as fast by then)."""


def replaced(new: Mapping[str, V], old: Mapping[str, V]) -> list[str] | None:
    """The keys whose value in ``new`` is not the very object ``old`` holds for them;
    None if their keys differ. A copy made as ``{**old, **changes}`` keeps the order of
    ``old``: then both are walked side by side in C, many times as fast as looking each
    key up, which counts at 5,000 hosts several times a pass."""
    if len(new) != len(old):
        return None
    if all(map(eq, new, old)):
        return list(compress(new, map(is_not, new.values(), old.values())))
    if new.keys() != old.keys():
        return None
    return [key for key, value in new.items() if old[key] is not value]


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
        changed = None if before is None else replaced(hosts, before.hosts)
        if before is None or changed is None:
            return cls._made(hosts, tuple(sorted(hosts)))
        old = before.hosts
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
