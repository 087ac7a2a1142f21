"""The leader's full garbage collections: none on CPython's own while it serves, one when
it is quiet and the time has come, one in any case after at_most_every, and CPython's
own thresholds back when it stops."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from controller.leader.collection import CollectionPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """One half of a reference cycle: only a full collection frees it once it is old."""

    def __init__(self) -> None:
        self.other: Node | None = None


def old_cycle() -> weakref.ref[Node]:
    """Garbage in the oldest generation: a cycle that survived a full collection, then
    was dropped. The automatic young collections never look at it."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    gc.collect()  # both move to the oldest generation
    return weakref.ref(first)


@pytest.fixture
def pacer() -> Iterator[tuple[CollectionPacer, Clock]]:
    clock = Clock()
    paced = CollectionPacer(quiet_every=10.0, at_most_every=60.0, clock=clock)
    before = gc.get_threshold()
    paced.take_over()
    try:
        yield paced, clock
    finally:
        paced.hand_back()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


def test_taking_over_freezes_what_was_loaded(pacer: tuple[CollectionPacer, Clock]) -> None:
    assert gc.get_freeze_count() > 0


def test_a_quiet_leader_collects_once_quiet_every_has_passed_and_not_before(
    pacer: tuple[CollectionPacer, Clock],
) -> None:
    paced, clock = pacer
    garbage = old_cycle()
    clock.now += 9.9
    assert not paced.collect_if_due(quiet=True)
    assert garbage() is not None  # nothing collected it meanwhile
    clock.now += 0.1
    assert paced.collect_if_due(quiet=True)
    assert garbage() is None
    assert not paced.collect_if_due(quiet=True)  # the next one is quiet_every away again


def test_a_busy_leader_waits_until_at_most_every_then_collects_anyway(
    pacer: tuple[CollectionPacer, Clock],
) -> None:
    paced, clock = pacer
    garbage = old_cycle()
    clock.now += 59.9
    assert not paced.collect_if_due(quiet=False)
    assert garbage() is not None
    clock.now += 0.1
    assert paced.collect_if_due(quiet=False)
    assert garbage() is None


def test_a_pacer_that_never_took_over_leaves_collections_to_cpython() -> None:
    clock = Clock()
    paced = CollectionPacer(clock=clock)
    before = gc.get_threshold()
    clock.now += 3600.0
    assert not paced.collect_if_due(quiet=True)
    paced.hand_back()
    assert gc.get_threshold() == before


def test_garbage_left_from_start_up_is_freed_before_the_freeze_not_kept_for_ever() -> None:
    paced = CollectionPacer(clock=Clock())
    gc.disable()  # no automatic collection frees it first: it is there at take-over
    try:
        first, second = Node(), Node()
        first.other, second.other = second, first
        garbage = weakref.ref(first)
        del first, second
        paced.take_over()
        assert garbage() is None
    finally:
        paced.hand_back()
        gc.enable()


def test_no_full_collection_comes_on_its_own_however_much_survives_meanwhile(
    pacer: tuple[CollectionPacer, Clock],
) -> None:
    full: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(seen)
    try:
        # Objects that survive their young collections: with CPython's own thresholds,
        # this many after a freeze brings a full collection many times over.
        kept: list[list[int]] = [[] for _ in range(300_000)]
    finally:
        gc.callbacks.remove(seen)
    assert len(kept) == 300_000
    assert full == []
