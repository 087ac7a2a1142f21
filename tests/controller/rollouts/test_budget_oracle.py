"""The budget oracle against cases worked out by hand from the README's rules.

The planner's properties and the fleet check trust this oracle, so it gets its own proof:
every expected number below is computed in the comment beside it, from the rule quoted in
``tests/support/budget_oracle.py``, not by running any code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutSpec, Strategy
from protocol.spec import ServiceSpec, UpdateOrder
from tests.support import budget_oracle as oracle

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def rollout(
    phases: dict[str, HostPhase],
    order: UpdateOrder = UpdateOrder.STOP_FIRST,
    partition: int | None = None,
    **spec: object,
) -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec.model_validate(spec),
        target=ServiceSpec(name="web", image="demo/web:1.1.0", update_order=order),
        hosts={host: HostRecord(phase=phase, since=NOW) for host, phase in phases.items()},
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
        partition=partition,
    )


def test_max_unavailable_rounds_down_max_surge_up_and_both_zero_allows_one() -> None:
    spec = RolloutSpec(max_unavailable="25%", max_surge="25%")
    assert oracle.allowance(spec, 10) == oracle.Allowance(unavailable=2, surge=3)  # 2.5 -> 2, 3
    none = RolloutSpec(max_unavailable="10%", max_surge=0)
    assert oracle.allowance(none, 3) == oracle.Allowance(unavailable=1, surge=0)  # 0.3 -> 0 -> 1
    surge_only = RolloutSpec(max_unavailable=0, max_surge=1)
    assert oracle.allowance(surge_only, 3) == oracle.Allowance(unavailable=0, surge=1)
    assert oracle.allowance(surge_only, 3).start_first == 1
    assert oracle.allowance(RolloutSpec(max_unavailable=2), 3).start_first == 2  # no surge given


def test_recreate_allows_every_eligible_host_and_percentages_are_of_the_eligible_hosts() -> None:
    eight = {f"h{i}": HostPhase.READY for i in range(8)}
    recreate = rollout(eight, partition=2, strategy=Strategy.RECREATE, max_unavailable=1)
    assert oracle.eligible(recreate) == ["h2", "h3", "h4", "h5", "h6", "h7"]
    assert oracle.allowance_of(recreate).unavailable == 6
    half = rollout(eight, partition=4, max_unavailable="50%")
    assert oracle.allowance_of(half).unavailable == 2  # half of h4..h7, not of all eight


def test_the_stop_first_budget_counts_each_host_out_once_whatever_the_reason() -> None:
    hosts = {
        "h0": HostPhase.UPDATING,
        "h1": HostPhase.REVERTING,
        "h2": HostPhase.DONE,
        "h3": HostPhase.READY,
        "h4": HostPhase.READY,
        "h5": HostPhase.READY,
    }
    record = rollout(hosts, max_unavailable=5)
    # h0 and h1 are being replaced, h2 is offline, h0 is also unhealthy: three hosts out.
    assert oracle.out_of_service(record, {"h2"}, {"h0"}) == {"h0", "h1", "h2"}
    assert oracle.budget(record, {"h2"}, {"h0"}) == 2  # 5 - 3
    assert oracle.budget(record, {"h2", "h3", "h4"}, set()) == 0  # 5 - 5
    assert oracle.budget(record, {"h2", "h3", "h4", "h5"}, set()) == 0  # never below zero
    assert oracle.budget(record, set(), set(), stopped=True) == 0  # zero while paused


def test_the_start_first_budget_is_the_surge_less_the_updates_in_flight() -> None:
    hosts = {"h0": HostPhase.UPDATING, "h1": HostPhase.READY, "h2": HostPhase.READY}
    record = rollout(hosts, UpdateOrder.START_FIRST, max_unavailable=0, max_surge=2)
    assert oracle.budget(record, {"h1"}, {"h2"}) == 1  # 2 - 1: an offline host runs no copy


def test_the_next_wave_is_the_first_waiting_hosts_in_id_order() -> None:
    hosts = {f"h{i}": HostPhase.READY for i in (5, 1, 4, 0, 3, 2)}  # stored out of order
    record = rollout(hosts, partition=1, max_unavailable=3)
    deferred = record.hosts["h3"].model_copy(update={"not_before": NOW + timedelta(seconds=5)})
    record = record.with_host("h3", deferred)
    # h0 is below the partition, h2 offline, h3 deferred: h1, h4, h5 wait; h2 spends one.
    assert oracle.waiting(record, {"h2"}, NOW) == ["h1", "h4", "h5"]
    assert oracle.next_wave(record, {"h2"}, set(), NOW) == ("h1", "h4")
    canary = record.model_copy(update={"spec": record.spec.model_copy(update={"canary": 2})})
    assert oracle.waiting(canary, {"h2"}, NOW) == ["h1"]  # the wave is h1 and h2
