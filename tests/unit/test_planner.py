"""The planner's safety properties over random fleets, failures, timeouts and host losses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.planner import OFFLINE, Decision, HostHealth, eligible_hosts, limits, plan
from controller.rollout import (
    IN_FLIGHT,
    ConfigTarget,
    FailureAction,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
    resolve_amount,
)
from protocol.config_files import ConfigContent, first_document
from protocol.spec import ServiceSpec, UpdateOrder

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TARGET = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0")
PREVIOUS = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")
WORKING = (HostPhase.READY, HostPhase.DONE, HostPhase.FAILED, *IN_FLIGHT)
# Weighted towards rollouts in full swing, where the budget decisions happen.
PHASES = [*WORKING, *WORKING, *WORKING, *HostPhase]
STATUSES = [RolloutStatus.RUNNING] * 6 + list(RolloutStatus)
STOPPED = {
    RolloutStatus.PAUSED,
    RolloutStatus.FAILED,
    RolloutStatus.COMPLETE,
    RolloutStatus.AWAITING_PROMOTION,
    RolloutStatus.HELD,
    RolloutStatus.REVERTED,
    RolloutStatus.ABORTED,
}

amounts = st.one_of(
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=100).map(lambda p: f"{p}%"),
)
specs = st.builds(
    RolloutSpec,
    strategy=st.sampled_from(
        [Strategy.ROLLING, Strategy.RECREATE, Strategy.CANARY, Strategy.BLUE_GREEN]
    ),
    max_unavailable=amounts,
    max_surge=amounts,
    canary=st.none() | amounts,
    auto_promote_after=st.none() | st.floats(min_value=1, max_value=100),
    max_failure_ratio=st.floats(min_value=0, max_value=1),
    failure_action=st.sampled_from(list(FailureAction)),
    min_ready=amounts,
    progress_deadline=st.floats(min_value=1, max_value=1000),
    preflight_parallelism=st.integers(min_value=1, max_value=10),
)
healths = st.sampled_from(
    [
        HostHealth(online=True, serving=True),
        HostHealth(online=True, serving=False),
        HostHealth(online=True, serving=None),
        OFFLINE,
    ]
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[RolloutRecord, dict[str, HostHealth]]:
    size = draw(st.integers(min_value=1, max_value=25))
    names = [f"host-{index:03d}" for index in range(size)]
    hosts = {
        name: HostRecord(
            phase=draw(st.sampled_from(PHASES)),
            since=NOW,
            not_before=draw(st.none() | st.just(NOW + timedelta(seconds=5))),
            switched=draw(st.booleans()),
        )
        for name in names
    }
    order = draw(st.sampled_from(list(UpdateOrder)))
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=draw(specs),
        target=TARGET.model_copy(update={"update_order": order}),
        previous=draw(st.sampled_from([PREVIOUS, None])),
        hosts=hosts,
        status=draw(st.sampled_from(STATUSES)),
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW - timedelta(seconds=draw(st.integers(0, 1200))),
        canary_completed_at=draw(st.none() | st.just(NOW - timedelta(seconds=30))),
        paused=draw(st.sampled_from([False, False, False, True])),
        promoted=draw(st.booleans()),
        aborted=draw(st.sampled_from([False, False, False, True])),
        partition=draw(st.none() | st.integers(min_value=0, max_value=size + 2)),
        tolerated_failures=draw(st.integers(min_value=0, max_value=3)),
        colour=draw(st.sampled_from(["blue", "green"])),
        serving_colour=draw(st.sampled_from([None, "blue", "green"])),
        switched_at=draw(st.none() | st.just(NOW - timedelta(seconds=100))),
    )
    health = {name: draw(healths) for name in names}
    return record, health


def unavailable(record: RolloutRecord, health: dict[str, HostHealth]) -> int:
    start_first = record.target.update_order is UpdateOrder.START_FIRST
    return sum(
        1
        for host, entry in record.hosts.items()
        if (entry.phase in (HostPhase.UPDATING, HostPhase.REVERTING) and not start_first)
        or health.get(host, OFFLINE).unavailable
    )


@settings(max_examples=400)
@given(fleets())
def test_new_stop_first_work_never_takes_the_fleet_past_max_unavailable(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    decision = plan(record, health, NOW)
    started = len(decision.apply) + len(decision.revert)
    stop_first = record.target.update_order is UpdateOrder.STOP_FIRST
    if stop_first and started and not record.blue_green:
        cap = limits(record, len(record.hosts)).max_unavailable
        assert unavailable(record, health) + started <= cap


@settings(max_examples=400)
@given(fleets())
def test_start_first_work_never_runs_more_double_copies_than_the_surge_allows(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    record = record.model_copy(
        update={"target": TARGET.model_copy(update={"update_order": UpdateOrder.START_FIRST})}
    )
    decision = plan(record, health, NOW)
    started = len(decision.apply) + len(decision.revert)
    if started and not record.blue_green:
        cap = limits(record, len(record.hosts))
        surging = record.count(HostPhase.UPDATING, HostPhase.REVERTING)
        assert surging + started <= (cap.max_surge or cap.max_unavailable)


@settings(max_examples=300)
@given(fleets(), st.randoms())
def test_the_same_input_gives_the_same_plan_whatever_the_order_hosts_are_stored_in(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]], shuffler: random.Random
) -> None:
    record, health = fleet
    items = list(record.hosts.items())
    shuffler.shuffle(items)
    shuffled = record.model_copy(update={"hosts": dict(items)})
    assert plan(record, health, NOW) == plan(shuffled, health, NOW)


@settings(max_examples=400)
@given(fleets())
def test_a_stopped_paused_or_failed_rollout_never_starts_new_work(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    decision = plan(record, health, NOW)
    if decision.status in STOPPED:
        assert decision.apply == ()
        assert decision.prepare == ()
        assert decision.revert == ()
        assert decision.switch == ()
        assert decision.retire == ()
    if record.paused and not record.aborted and record.status is not RolloutStatus.REVERTING:
        assert decision.apply == ()
        assert decision.prepare == ()


@settings(max_examples=400)
@given(fleets())
def test_work_goes_only_to_hosts_in_the_right_phase_and_online(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    decision = plan(record, health, NOW)
    for host in decision.apply:
        assert record.hosts[host].phase is HostPhase.READY
        assert health[host].online
        assert record.hosts[host].not_before is None or record.hosts[host].not_before <= NOW
    for host in decision.prepare:
        assert record.hosts[host].phase is HostPhase.PENDING
    for host in decision.revert:  # revert touches only hosts the rollout updated (or staged)
        allowed = {HostPhase.DONE, HostPhase.STAGED} if record.blue_green else {HostPhase.DONE}
        assert record.hosts[host].phase in allowed
    for host in decision.switch:
        assert record.hosts[host].phase is HostPhase.STAGED
    for host in decision.retire:
        assert record.hosts[host].phase is HostPhase.DONE


@settings(max_examples=400)
@given(fleets())
def test_blue_green_switches_only_once_no_host_is_left_to_stage_and_retires_only_after(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    record = record.model_copy(
        update={"spec": record.spec.model_copy(update={"strategy": Strategy.BLUE_GREEN})}
    )
    decision = plan(record, health, NOW)
    # Hosts below a partition stay READY on the old colour: they are not "left to stage".
    waiting = sum(1 for h in eligible_hosts(record) if record.hosts[h].phase is HostPhase.READY)
    if decision.switch:
        assert not waiting
        assert not record.count(HostPhase.UPDATING)
        assert decision.serving_colour in (None, record.colour)
    if decision.retire:
        assert not waiting
        assert not record.count(HostPhase.UPDATING, HostPhase.STAGED)
        assert not record.count(HostPhase.SWITCHING)
    if decision.apply:
        assert record.count(HostPhase.UPDATING) + len(decision.apply) <= (
            record.spec.preflight_parallelism
        )
    if decision.status is RolloutStatus.REVERTING and decision.revert:
        assert not record.count(HostPhase.UPDATING, HostPhase.SWITCHING)


@settings(max_examples=400)
@given(fleets())
def test_partition_never_touches_hosts_below_it(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    below = set(record.ordered_hosts()[: record.partition or 0])
    assert below.isdisjoint(plan(record, health, NOW).apply)


@settings(max_examples=400)
@given(fleets())
def test_canary_updates_only_the_canary_wave_until_promoted(
    fleet: tuple[RolloutRecord, dict[str, HostHealth]],
) -> None:
    record, health = fleet
    decision = plan(record, health, NOW)
    if record.spec.canary is not None and not record.promoted and not decision.promote:
        eligible = record.ordered_hosts()[record.partition or 0 :]
        size = max(1, resolve_amount(record.spec.canary, len(eligible), round_up=True))
        assert set(decision.apply) <= set(eligible[:size])


# ---- whole rollouts, driven by a fake executor (every command succeeds at once) ----


def fresh_record(size: int, **spec: Any) -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(**spec),
        target=TARGET,
        previous=PREVIOUS,
        hosts={f"host-{i:03d}": HostRecord(since=NOW) for i in range(size)},
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
    )


def step(record: RolloutRecord, decision: Decision, outcome: HostPhase) -> RolloutRecord:
    """What a perfect executor would write back after the decision's commands finished."""
    hosts = dict(record.hosts)
    for names, phase in (
        (decision.prepare, HostPhase.READY),
        (decision.apply, outcome),
        (decision.switch, HostPhase.DONE),
        (decision.retire, HostPhase.RETIRED),
        (decision.revert, HostPhase.REVERTED),
    ):
        for host in names:
            switched = names is decision.switch
            hosts[host] = HostRecord(phase=phase, since=NOW, switched=switched)
    changes: dict[str, Any] = {
        "hosts": hosts,
        "status": decision.status,
        "promoted": record.promoted or decision.promote,
    }
    if decision.serving_colour:
        changes["serving_colour"] = decision.serving_colour
    return record.model_copy(update=changes)


def busy(decision: Decision) -> bool:
    return any(
        (decision.prepare, decision.apply, decision.revert, decision.switch, decision.retire)
    )


def run_to_rest(record: RolloutRecord, outcome: HostPhase = HostPhase.DONE) -> list[Decision]:
    health = {host: HostHealth(online=True, serving=True) for host in record.hosts}
    decisions = []
    for _ in range(200):
        decision = plan(record, health, NOW)
        decisions.append(decision)
        if not busy(decision):
            return decisions
        record = step(record, decision, outcome)
    raise AssertionError("the rollout never came to rest")


def test_a_rolling_update_of_ten_hosts_runs_in_waves_of_max_unavailable_and_completes() -> None:
    decisions = run_to_rest(fresh_record(10, max_unavailable=3))
    waves = [d.apply for d in decisions if d.apply]
    assert [len(wave) for wave in waves] == [3, 3, 3, 1]
    assert [host for wave in waves for host in wave] == [f"host-{i:03d}" for i in range(10)]
    assert decisions[-1].status is RolloutStatus.COMPLETE


def test_max_unavailable_as_a_percentage_rounds_down_but_never_to_zero_without_surge() -> None:
    waves = [d.apply for d in run_to_rest(fresh_record(10, max_unavailable="25%")) if d.apply]
    assert [len(wave) for wave in waves] == [2, 2, 2, 2, 2]
    waves = [d.apply for d in run_to_rest(fresh_record(3, max_unavailable="10%")) if d.apply]
    assert [len(wave) for wave in waves] == [1, 1, 1]


def test_recreate_updates_every_host_at_once() -> None:
    decisions = run_to_rest(fresh_record(6, strategy=Strategy.RECREATE))
    assert [len(d.apply) for d in decisions if d.apply] == [6]


def test_pre_flight_prepares_everyone_before_any_host_is_touched() -> None:
    decisions = run_to_rest(fresh_record(7, preflight_parallelism=3))
    first_apply = next(i for i, d in enumerate(decisions) if d.apply)
    prepared = [host for d in decisions[:first_apply] for host in d.prepare]
    assert sorted(prepared) == [f"host-{i:03d}" for i in range(7)]
    assert all(len(d.prepare) <= 3 for d in decisions)


def test_a_failed_pre_flight_stops_before_touching_anything_and_names_each_host() -> None:
    record = fresh_record(4)
    hosts = {
        **record.hosts,
        "host-002": HostRecord(phase=HostPhase.NOT_READY, since=NOW, detail="registry down"),
    }
    hosts = {
        h: (e if h == "host-002" else HostRecord(phase=HostPhase.READY, since=NOW))
        for h, e in hosts.items()
    }
    decision = plan(record.model_copy(update={"hosts": hosts}), {}, NOW)
    assert decision.status is RolloutStatus.FAILED
    assert decision.apply == ()
    assert "host-002: registry down" in decision.reason


def test_canary_stops_after_its_wave_until_promoted() -> None:
    decisions = run_to_rest(fresh_record(10, canary=2, max_unavailable=4))
    assert [len(d.apply) for d in decisions if d.apply] == [2]
    assert decisions[-1].status is RolloutStatus.AWAITING_PROMOTION
    record = fresh_record(10, canary=2, max_unavailable=4).model_copy(update={"promoted": True})
    assert [len(d.apply) for d in run_to_rest(record) if d.apply] == [4, 4, 2]


def test_failures_past_the_ratio_pause_the_rollout_or_revert_only_updated_hosts() -> None:
    record = fresh_record(5, max_unavailable=2)
    hosts = {h: HostRecord(phase=HostPhase.READY, since=NOW) for h in record.hosts}
    hosts["host-000"] = HostRecord(phase=HostPhase.DONE, since=NOW)
    hosts["host-001"] = HostRecord(phase=HostPhase.FAILED, since=NOW)
    failed = record.model_copy(update={"hosts": hosts})
    health = {host: HostHealth(online=True, serving=True) for host in hosts}
    paused = plan(failed, health, NOW)
    assert paused.status is RolloutStatus.PAUSED
    assert paused.apply == ()
    reverting_spec = failed.spec.model_copy(update={"failure_action": FailureAction.REVERT})
    reverting = plan(failed.model_copy(update={"spec": reverting_spec}), health, NOW)
    assert reverting.status is RolloutStatus.REVERTING
    assert reverting.revert == ("host-000",)


def test_a_config_rollout_of_a_new_file_can_still_revert_by_removing_it() -> None:
    document = first_document("web", "app.conf", ConfigContent.of(b"message=x"), NOW)
    record = fresh_record(3, max_unavailable=1, failure_action=FailureAction.REVERT)
    record = record.model_copy(
        update={"previous": None, "config": ConfigTarget(name="app.conf", document=document)}
    )
    hosts = {h: HostRecord(phase=HostPhase.READY, since=NOW) for h in record.hosts}
    hosts["host-000"] = HostRecord(phase=HostPhase.DONE, since=NOW)
    hosts["host-001"] = HostRecord(phase=HostPhase.FAILED, since=NOW)
    health = {host: HostHealth(online=True, serving=True) for host in hosts}
    decision = plan(record.model_copy(update={"hosts": hosts}), health, NOW)
    assert decision.status is RolloutStatus.REVERTING
    assert decision.revert == ("host-000",)
    assert record.config is not None
    assert record.config.content_for("host-000", {}, reverting=True) == (0, None)
    # An image rollout with nothing to go back to cannot revert.
    image_only = record.model_copy(update={"config": None, "hosts": hosts})
    assert plan(image_only, health, NOW).status is RolloutStatus.FAILED


def test_an_offline_host_spends_the_budget_and_is_not_sent_work() -> None:
    record = fresh_record(4, max_unavailable=1)
    hosts = {h: HostRecord(phase=HostPhase.READY, since=NOW) for h in record.hosts}
    ready = record.model_copy(update={"hosts": hosts})
    health = {host: HostHealth(online=True, serving=True) for host in hosts}
    health["host-003"] = OFFLINE
    assert plan(ready, health, NOW).apply == ()
    health["host-003"] = HostHealth(online=True, serving=True)
    assert plan(ready, health, NOW).apply == ("host-000",)


def test_the_progress_deadline_fails_a_stuck_rollout() -> None:
    record = fresh_record(2, progress_deadline=60)
    hosts = {
        "host-000": HostRecord(phase=HostPhase.UPDATING, since=NOW),
        "host-001": HostRecord(phase=HostPhase.READY, since=NOW),
    }
    stuck = record.model_copy(
        update={"hosts": hosts, "last_progress_at": NOW - timedelta(seconds=61)}
    )
    decision = plan(stuck, {h: HostHealth(True, True) for h in hosts}, NOW)
    assert decision.status is RolloutStatus.FAILED
    assert "progress_deadline" in decision.reason


def test_lowering_the_partition_continues_the_rollout() -> None:
    record = fresh_record(6, max_unavailable=6).model_copy(update={"partition": 4})
    decisions = run_to_rest(record)
    assert [d.apply for d in decisions if d.apply] == [("host-004", "host-005")]
    assert decisions[-1].status is RolloutStatus.HELD


@given(
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=32),
    st.integers(min_value=1, max_value=30),
)
def test_a_healthy_ready_fleet_is_updated_from_the_partition_up_and_never_below(
    size: int, partition: int, max_unavailable: int
) -> None:
    record = fresh_record(size, max_unavailable=max_unavailable)
    hosts = {h: HostRecord(phase=HostPhase.READY, since=NOW) for h in record.hosts}
    ready = record.model_copy(update={"hosts": hosts, "partition": partition})
    health = {host: HostHealth(online=True, serving=True) for host in hosts}
    decision = plan(ready, health, NOW)
    ordered = ready.ordered_hosts()
    assert set(decision.apply).isdisjoint(ordered[:partition])
    assert decision.apply == tuple(ordered[partition:][:max_unavailable])


def blue_green_record(size: int, **spec: Any) -> RolloutRecord:
    return fresh_record(size, strategy=Strategy.BLUE_GREEN, **spec).model_copy(
        update={"colour": "green"}
    )


def test_blue_green_stages_everywhere_then_switches_every_host_at_once_then_waits() -> None:
    decisions = run_to_rest(blue_green_record(5, preflight_parallelism=2), HostPhase.STAGED)
    staged = [d.apply for d in decisions if d.apply]
    assert [len(wave) for wave in staged] == [2, 2, 1]
    switches = [d for d in decisions if d.switch]
    assert len(switches) == 1
    assert switches[0].switch == tuple(f"host-{i:03d}" for i in range(5))
    assert switches[0].serving_colour == "green"
    assert decisions.index(switches[0]) > max(i for i, d in enumerate(decisions) if d.apply)
    assert decisions[-1].status is RolloutStatus.SWITCHED
    assert "blue is kept" in decisions[-1].reason


def test_blue_green_removes_the_old_colour_after_the_delay_or_on_promote() -> None:
    record = blue_green_record(3, remove_old_after=60)
    hosts = {h: HostRecord(phase=HostPhase.DONE, since=NOW, switched=True) for h in record.hosts}
    switched = record.model_copy(
        update={"hosts": hosts, "serving_colour": "green", "switched_at": NOW}
    )
    health = {h: HostHealth(True, True) for h in hosts}
    assert plan(switched, health, NOW + timedelta(seconds=59)).retire == ()
    assert plan(switched, health, NOW + timedelta(seconds=60)).retire == tuple(sorted(hosts))
    assert plan(switched.model_copy(update={"promoted": True}), health, NOW).retire == tuple(
        sorted(hosts)
    )
    retired = {h: HostRecord(phase=HostPhase.RETIRED, since=NOW) for h in hosts}
    final = plan(switched.model_copy(update={"hosts": retired}), health, NOW)
    assert final.status is RolloutStatus.COMPLETE


def test_aborting_blue_green_switches_every_switched_host_back_and_drops_staged_copies() -> None:
    record = blue_green_record(3).model_copy(
        update={"aborted": True, "serving_colour": "green", "previous": None}
    )
    hosts = {
        "host-000": HostRecord(phase=HostPhase.DONE, since=NOW, switched=True),
        "host-001": HostRecord(phase=HostPhase.STAGED, since=NOW),
        "host-002": HostRecord(phase=HostPhase.FAILED, since=NOW),
    }
    aborted = record.model_copy(update={"hosts": hosts})
    decision = plan(aborted, {h: HostHealth(True, True) for h in hosts}, NOW)
    assert decision.status is RolloutStatus.REVERTING
    assert decision.revert == ("host-000", "host-001")
    assert decision.serving_colour == "blue"
    decisions = run_to_rest(aborted)
    assert decisions[-1].status is RolloutStatus.ABORTED


def test_a_blue_green_host_that_fails_staging_pauses_before_any_switch() -> None:
    record = blue_green_record(2)
    hosts = {
        "host-000": HostRecord(phase=HostPhase.STAGED, since=NOW),
        "host-001": HostRecord(phase=HostPhase.FAILED, since=NOW),
    }
    decision = plan(record.model_copy(update={"hosts": hosts}), {}, NOW)
    assert decision.status is RolloutStatus.PAUSED
    assert decision.switch == ()
