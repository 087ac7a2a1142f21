"""A rollout's hosts by phase, kept from the record it was copied from when few hosts
changed, are always what sorting the hosts of each phase by id gives."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.rollouts.host_index import REBUILD_SHARE, HostIndex
from controller.rollouts.model import HostPhase, HostRecord

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
NAMES = [f"host-{i:03d}" for i in range(60)]


def by_phase_sorted(hosts: dict[str, HostRecord]) -> dict[HostPhase, tuple[str, ...]]:
    """The oracle: each phase's hosts in host order (sorted ids), phases without hosts left out."""
    found: dict[HostPhase, list[str]] = {}
    for host in sorted(hosts):
        found.setdefault(hosts[host].phase, []).append(host)
    return {phase: tuple(names) for phase, names in found.items()}


def test_a_kept_index_is_each_phases_hosts_in_host_order() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(
        first=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(HostPhase), min_size=24),
        passes=st.lists(
            st.lists(st.tuples(st.integers(0, 59), st.sampled_from(HostPhase)), max_size=8),
            max_size=5,
        ),
    )
    def check(first: dict[str, HostPhase], passes: list[list[tuple[int, HostPhase]]]) -> None:
        hosts = {h: HostRecord(phase=p, since=NOW) for h, p in first.items()}
        index = HostIndex.of(hosts)
        assert dict(index.by_phase) == by_phase_sorted(hosts)
        names = sorted(hosts)
        for changes in passes:
            copy = dict(hosts)  # a pass's copy of the record: the same hosts, a few changed
            for position, phase in changes:
                host = names[position % len(names)]
                copy[host] = HostRecord(phase=phase, since=NOW)
            previous = index
            index = HostIndex.of(copy, index)
            moved = sum(1 for h in copy if copy[h].phase != hosts[h].phase)
            changed = sum(1 for h in copy if copy[h] is not hosts[h])
            hosts = copy
            assert index.ordered == tuple(names)
            assert dict(index.by_phase) == by_phase_sorted(hosts)
            kept = changed * REBUILD_SHARE <= len(hosts)
            if moved:
                reached["kept, hosts moved" if kept else "made afresh, hosts moved"] += 1
            reached["a phase emptied"] += bool(set(previous.by_phase) - set(index.by_phase))

    check()
    for case in ("kept, hosts moved", "made afresh, hosts moved", "a phase emptied"):
        assert reached[case] >= 10, reached
