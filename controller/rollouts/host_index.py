"""A rollout's hosts by phase and in host order, made once per hosts map.

The planner asks a 5,000-host record for counts and orders many times a pass; the record
keeps this index beside its fields and makes it again when a copy has other hosts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Protocol


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
        """The index of ``hosts``; the order of ``before`` (an index of a copy of the
        record) is kept when the hosts are the same, as they are on most passes."""
        if before is not None and before.hosts.keys() == hosts.keys():
            ordered = before.ordered
        else:
            ordered = tuple(sorted(hosts))
        by_phase: dict[Hashable, list[str]] = {}
        for host in ordered:
            by_phase.setdefault(hosts[host].phase, []).append(host)
        return cls(hosts, ordered, {phase: tuple(h) for phase, h in by_phase.items()})
