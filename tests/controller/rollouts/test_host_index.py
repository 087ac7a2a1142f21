"""A rollout's hosts by phase, kept from the record it was copied from when few hosts
changed, are always what sorting the hosts of each phase by id gives."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.rollouts.host_index import REBUILD_SHARE, HostIndex, replaced
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
            st.tuples(
                st.lists(st.tuples(st.integers(0, 59), st.sampled_from(HostPhase)), max_size=8),
                st.sampled_from(["same order", "same order", "other order", "one joined"]),
                st.randoms(use_true_random=False),
            ),
            max_size=5,
        ),
    )
    def check(
        first: dict[str, HostPhase], passes: list[tuple[list[tuple[int, HostPhase]], str, Random]]
    ) -> None:
        hosts = {h: HostRecord(phase=p, since=NOW) for h, p in first.items()}
        index = HostIndex.of(hosts)
        assert dict(index.by_phase) == by_phase_sorted(hosts)
        for changes, shape, rng in passes:
            names = sorted(hosts)
            copy = dict(hosts)  # a pass's copy of the record: the same hosts, a few changed
            for position, phase in changes:
                host = names[position % len(names)]
                copy[host] = HostRecord(phase=phase, since=NOW)
            if shape == "other order":  # as decoded from the store, say
                order = list(copy)
                rng.shuffle(order)
                copy = {h: copy[h] for h in order}
            elif shape == "one joined":
                copy[f"joiner-{len(copy):03d}"] = HostRecord(since=NOW)
            previous = index
            index = HostIndex.of(copy, index)
            moved = sum(1 for h in hosts if copy[h].phase != hosts[h].phase)
            changed = sum(1 for h in hosts if copy[h] is not hosts[h])
            reordered = list(copy) != list(hosts)
            hosts = copy
            assert index.ordered == tuple(sorted(hosts))
            assert dict(index.by_phase) == by_phase_sorted(hosts)
            kept = changed * REBUILD_SHARE <= len(hosts)
            if moved and shape == "same order":
                reached["kept, hosts moved" if kept else "made afresh, hosts moved"] += 1
            reached["a phase emptied"] += bool(set(previous.by_phase) - set(index.by_phase))
            reached["in another order, hosts moved"] += (
                shape == "other order" and reordered and bool(moved)
            )
            reached["a host joined"] += shape == "one joined"

    check()
    for case in (
        "kept, hosts moved",
        "made afresh, hosts moved",
        "a phase emptied",
        "in another order, hosts moved",
        "a host joined",
    ):
        assert reached[case] >= 10, reached


def test_the_replaced_keys_are_those_holding_another_object_in_any_order() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None, derandomize=True)  # the counts below are fixed
    @given(
        old=st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3), min_size=1),
        new_values=st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3)),
        shape=st.sampled_from(
            ["same keys", "same keys, other order", "other keys", "one key swapped"]
        ),
        rng=st.randoms(use_true_random=False),
    )
    def check(old: dict[str, int], new_values: dict[str, int], shape: str, rng: Random) -> None:
        boxed = {key: [value] for key, value in old.items()}  # objects compared by identity
        new = dict(boxed)
        for key, value in new_values.items():
            if key in boxed or shape == "other keys":
                new[key] = [value]  # equal in value maybe, but another object
        outside = [name for name in NAMES if name not in boxed]
        if shape == "one key swapped" and outside:  # as many keys, one of them another
            del new[next(iter(new))]
            new[outside[0]] = [0]
        if shape == "same keys, other order":
            order = list(new)
            rng.shuffle(order)
            new = {key: new[key] for key in order}
        found = replaced(new, boxed)
        if new.keys() != boxed.keys():
            assert found is None
            reached["other keys: none"] += 1
            reached["as many keys, one other: none"] += len(new) == len(boxed)
            return
        assert found is not None
        assert set(found) == {key for key in new if new[key] is not boxed[key]}
        assert len(found) == len(set(found))
        if shape == "same keys, other order" and list(new) == list(boxed):
            shape = "same keys"  # the shuffle kept the order
        reached[shape] += bool(found)

    check()
    for case in (
        "same keys",
        "same keys, other order",
        "other keys: none",
        "as many keys, one other: none",
    ):
        assert reached[case] >= 10, reached
