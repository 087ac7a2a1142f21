"""The fleet tests' invariant checker itself: it must catch every kind of budget overrun.

Each catch is shown against a control that differs in one message, so a test fails if the
check it is about were removed (the overrun would pass) or made blind (the control would
fail). The allowance comes from ``tests/support/budget_oracle.py``, not from the planner.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutSpec
from protocol.app import AppSpec, Member
from protocol.models import (
    AnyMessage,
    ContainerAction,
    ContainerEvent,
    ContainerState,
    Health,
    HostFacts,
    RolloutEvent,
    ServiceStatus,
    UpdatePhase,
    UpdateProgress,
)
from protocol.spec import ServiceSpec, UpdateOrder
from tests.support.events import EventRecorder
from tests.support.fleet import CONTROLLER_LAG, HOST_TIMEOUT, BudgetChecker, check_every_budget

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TARGET = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0")
PREVIOUS = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")
HOSTS = ("h0", "h1", "h2", "h3")


def at(second: float) -> datetime:
    return NOW + timedelta(seconds=second)


def progress(
    host: str, phase: UpdatePhase, second: float, rollout: str | None = "web-r2"
) -> UpdateProgress:
    return UpdateProgress(
        sender=host,
        host=host,
        service="web",
        operation_id=f"op-{host}",
        rollout_id=rollout,
        phase=phase,
        sent_at=at(second),
    )


def engine(
    host: str,
    action: ContainerAction,
    second: float,
    health: Health | None = None,
    container: str | None = None,
) -> ContainerEvent:
    return ContainerEvent(
        sender=host,
        host=host,
        service="web",
        container=container or f"fw-{host}-web",
        container_id=f"c-{host}",
        action=action,
        health=health,
        at=at(second),
        sent_at=at(second),
    )


def heartbeat(
    host: str, second: float, state: ContainerState = ContainerState.RUNNING
) -> HostFacts:
    return HostFacts(
        sender=host,
        host=host,
        agent_version="test",
        cpus=2,
        memory_total=1,
        memory_available=1,
        disk_total=1,
        disk_free=1,
        services=(ServiceStatus(name="web", state=state),),
        sent_at=at(second),
    )


def rollout_event(status: str, rollout: str = "web-r2") -> RolloutEvent:
    return RolloutEvent(
        sender="controller",
        rollout_id=rollout,
        service="web",
        revision=2,
        status=status,
        image=TARGET.image,
        sent_at=at(-1),
    )


def record(
    max_unavailable: int | str = 2,
    *,
    hosts: tuple[str, ...] = HOSTS,
    phase: HostPhase = HostPhase.PENDING,
    previous: ServiceSpec | None = None,
    order: UpdateOrder = UpdateOrder.STOP_FIRST,
    **changes: Any,
) -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(max_unavailable=max_unavailable, **changes.pop("spec", {})),
        target=TARGET.model_copy(update={"update_order": order}),
        previous=previous,
        hosts={host: HostRecord(phase=phase, since=NOW) for host in hosts},
        created_at=NOW,
        updated_at=at(60),
        last_progress_at=NOW,
        **changes,
    )


def listed(*records: RolloutRecord) -> list[dict[str, Any]]:
    """What `fleetctl rollout status -o json` prints for these records."""
    return [r.model_dump(mode="json") for r in records]


def recorder_of(*messages: AnyMessage) -> EventRecorder:
    recorder = EventRecorder(client=None, subject="fleet.evt.>")  # type: ignore[arg-type]
    recorder.messages.extend(("fleet.evt", message) for message in messages)
    return recorder


def two_overlapping_updates() -> tuple[UpdateProgress, ...]:
    """h0 and h1 update at once, from second 0 and 1 to 5 and 6: two out of four hosts."""
    return (
        progress("h0", UpdatePhase.STOPPING_OLD, 0),
        progress("h1", UpdatePhase.STOPPING_OLD, 1),
        progress("h0", UpdatePhase.DONE, 5),
        progress("h1", UpdatePhase.DONE, 6),
    )


def test_three_overlapping_stop_first_windows_break_a_budget_of_two() -> None:
    events = recorder_of(
        *(
            progress(h, UpdatePhase.STOPPING_OLD, i, "web-r2")
            for i, h in enumerate(("h0", "h1", "h2"))
        ),
        *(progress(h, UpdatePhase.DONE, 5 + i, "web-r2") for i, h in enumerate(("h0", "h1", "h2"))),
    )
    check_every_budget(events, listed(record(3)))
    with pytest.raises(AssertionError, match="3 hosts out at once, allowed 2"):
        check_every_budget(events, listed(record(2)))


def test_back_to_back_windows_and_other_rollouts_do_not_count_as_overlap() -> None:
    events = recorder_of(
        progress("h0", UpdatePhase.STOPPING_OLD, 0, "web-r2"),
        progress("h0", UpdatePhase.DONE, 1, "web-r2"),
        progress("h1", UpdatePhase.STOPPING_OLD, 1, "web-r2"),
        progress("h1", UpdatePhase.ROLLED_BACK, 2, "web-r2"),
        progress("h2", UpdatePhase.STOPPING_OLD, 0, "web-r9"),
    )
    check_every_budget(events, listed(record(1)))
    overlapping = recorder_of(
        progress("h0", UpdatePhase.STOPPING_OLD, 0, "web-r2"),
        progress("h1", UpdatePhase.STOPPING_OLD, 1, "web-r2"),
        progress("h0", UpdatePhase.DONE, 1.5, "web-r2"),
        progress("h1", UpdatePhase.ROLLED_BACK, 2, "web-r2"),
    )
    with pytest.raises(AssertionError, match="2 hosts out at once, allowed 1"):
        check_every_budget(overlapping, listed(record(1)))


def test_an_event_an_agent_sent_again_after_a_lost_ack_is_one_window_not_two() -> None:
    # An agent cut off before the stream acked its stopping_old publishes it again on
    # reconnect under the same id; a live recorder sees both copies.
    stopping = progress("h0", UpdatePhase.STOPPING_OLD, 0)
    done = progress("h0", UpdatePhase.DONE, 5)
    after = progress("h1", UpdatePhase.STOPPING_OLD, 6)
    check_every_budget(recorder_of(stopping, stopping, done, done, after), listed(record(1)))
    # Control: a second stopping_old of its own (another id, another update) never
    # ended, and does count.
    again = progress("h0", UpdatePhase.STOPPING_OLD, 0).model_copy(update={"operation_id": "op-2"})
    with pytest.raises(AssertionError, match="2 hosts out at once, allowed 1"):
        check_every_budget(recorder_of(stopping, again, done, after), listed(record(1)))
    # Only a copy is one: another message under a used id is a fault, not dropped.
    reused = done.model_copy(update={"id": stopping.id})
    with pytest.raises(AssertionError, match=f"two different messages share the id {stopping.id}"):
        check_every_budget(recorder_of(stopping, reused, after), listed(record(1)))


def test_a_host_whose_service_died_counts_against_new_work_until_it_restarts() -> None:
    died = engine("h3", ContainerAction.DIE, -10)
    with pytest.raises(AssertionError, match=r"3 hosts out at once, allowed 2.*'h3': 'dead'"):
        check_every_budget(recorder_of(died, *two_overlapping_updates()), listed(record(2)))
    restarted = engine("h3", ContainerAction.RESTART, -5)
    check_every_budget(recorder_of(died, restarted, *two_overlapping_updates()), listed(record(2)))


def test_an_update_that_proves_the_host_healthy_ends_its_outage_and_a_failed_one_not() -> None:
    def h3_updated(end: UpdatePhase) -> EventRecorder:
        """h3's service died, then an update of h3 ended so, before h0 and h1 updated."""
        return recorder_of(
            engine("h3", ContainerAction.DIE, -10),
            progress("h3", UpdatePhase.STOPPING_OLD, -9),
            progress("h3", end, -5),
            *two_overlapping_updates(),
        )

    check_every_budget(h3_updated(UpdatePhase.DONE), listed(record(2)))
    check_every_budget(h3_updated(UpdatePhase.ROLLED_BACK), listed(record(2)))
    with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'dead'"):
        check_every_budget(h3_updated(UpdatePhase.FAILED), listed(record(2)))


def test_a_host_docker_calls_unhealthy_counts_until_docker_calls_it_healthy() -> None:
    sick = engine("h3", ContainerAction.HEALTH_STATUS, -10, Health.UNHEALTHY)
    with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'unhealthy'"):
        check_every_budget(recorder_of(sick, *two_overlapping_updates()), listed(record(2)))
    well = engine("h3", ContainerAction.HEALTH_STATUS, -5, Health.HEALTHY)
    check_every_budget(recorder_of(sick, well, *two_overlapping_updates()), listed(record(2)))


def test_only_the_serving_copy_counts_not_the_standby_or_the_next_or_the_previous() -> None:
    for suffix in ("--standby", "--next", "--prev", "--switching"):
        other = engine("h3", ContainerAction.DIE, -10, container=f"fw-h3-web{suffix}")
        check_every_budget(recorder_of(other, *two_overlapping_updates()), listed(record(2)))
    serving = engine("h3", ContainerAction.DIE, -10, container="fw-h3-web")
    with pytest.raises(AssertionError, match="3 hosts out at once"):
        check_every_budget(recorder_of(serving, *two_overlapping_updates()), listed(record(2)))


def test_an_outage_counts_once_the_controller_could_have_learnt_of_it_and_not_before() -> None:
    # h1 starts at second 1. The test agents beat every second: an outage half a second
    # old may not have reached the controller yet, one three beats old has.
    just_now = engine("h3", ContainerAction.DIE, 0.5)
    check_every_budget(recorder_of(just_now, *two_overlapping_updates()), listed(record(2)))
    three_beats_old = engine("h3", ContainerAction.DIE, -2)
    with pytest.raises(AssertionError, match="3 hosts out at once"):
        check_every_budget(
            recorder_of(three_beats_old, *two_overlapping_updates()), listed(record(2))
        )


def test_a_host_whose_heartbeats_stopped_counts_as_offline_until_they_resume() -> None:
    def beats(silent: tuple[float, float]) -> EventRecorder:
        """Every host beats every second, except h3 between ``silent``'s two seconds."""
        return recorder_of(
            *(
                heartbeat(host, second)
                for second in range(-30, 10)
                for host in HOSTS
                if host != "h3" or not silent[0] < second < silent[1]
            )
        )

    last = -HOST_TIMEOUT.total_seconds() - CONTROLLER_LAG.total_seconds() - 1
    events = recorder_of(*two_overlapping_updates())
    for silent in ((last, 99), (last, 3)):  # silent to the end, or back at second 3
        with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'offline'"):
            check_every_budget(events, listed(record(2)), heartbeats=beats(silent))
    check_every_budget(events, listed(record(2)), heartbeats=beats((last, 0)))  # back in time
    check_every_budget(events, listed(record(2)), heartbeats=beats((99, 99)))  # never silent


def test_a_heartbeat_that_shows_the_service_stopped_counts_the_host_out() -> None:
    beats = [heartbeat(h, s) for s in range(-30, 10) for h in ("h0", "h1", "h2")]
    stopped = [heartbeat("h3", s, ContainerState.EXITED) for s in range(-30, 10)]
    running = [heartbeat("h3", s) for s in range(-30, 10)]
    events = recorder_of(*two_overlapping_updates())
    with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'exited"):
        check_every_budget(events, listed(record(2)), heartbeats=recorder_of(*beats, *stopped))
    check_every_budget(events, listed(record(2)), heartbeats=recorder_of(*beats, *running))


def test_a_host_whose_agent_reports_its_engine_down_counts_out_until_the_engine_is_back() -> None:
    beats = [heartbeat(h, s) for s in range(-30, 10) for h in ("h0", "h1", "h2")]
    down = [heartbeat("h3", s).model_copy(update={"engine_down": True}) for s in range(-30, 10)]
    back = [heartbeat("h3", s).model_copy(update={"engine_down": s < -20}) for s in range(-30, 10)]
    events = recorder_of(*two_overlapping_updates())
    with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'engine down'"):
        check_every_budget(events, listed(record(2)), heartbeats=recorder_of(*beats, *down))
    check_every_budget(events, listed(record(2)), heartbeats=recorder_of(*beats, *back))


def test_a_host_a_test_declared_offline_counts_against_the_budget() -> None:
    checker = BudgetChecker.of(recorder_of(*two_overlapping_updates()))
    checker.check(record(2))
    checker.outage("h3", at(-10))
    with pytest.raises(AssertionError, match=r"3 hosts out at once.*'h3': 'offline'"):
        checker.check(record(2))


def test_the_allowance_is_a_share_of_the_eligible_hosts_past_the_partition() -> None:
    # Eight hosts, the last four past the partition: 50% is two hosts, not four.
    eight = tuple(f"h{i}" for i in range(8))
    events = recorder_of(
        *(progress(h, UpdatePhase.STOPPING_OLD, i) for i, h in enumerate(("h4", "h5", "h6"))),
        *(progress(h, UpdatePhase.DONE, 5 + i) for i, h in enumerate(("h4", "h5", "h6"))),
    )
    check_every_budget(events, listed(record("50%", hosts=eight)))
    with pytest.raises(AssertionError, match="3 hosts out at once, allowed 2"):
        check_every_budget(events, listed(record("50%", hosts=eight, partition=4)))


def test_start_first_copies_running_side_by_side_are_held_to_the_surge() -> None:
    events = recorder_of(
        progress("h0", UpdatePhase.STARTING_NEW, 0),
        progress("h1", UpdatePhase.STARTING_NEW, 1),
        progress("h0", UpdatePhase.DONE, 5),
        progress("h1", UpdatePhase.DONE, 6),
    )
    # max_unavailable 0: only the surge allows anything, and it is all a start-first update spends.
    start_first = UpdateOrder.START_FIRST
    check_every_budget(events, listed(record(0, spec={"max_surge": 2}, order=start_first)))
    with pytest.raises(AssertionError, match="2 hosts out at once, allowed 1"):
        check_every_budget(events, listed(record(0, spec={"max_surge": 1}, order=start_first)))


def one_at_a_time(
    rollout: str | None, hosts: tuple[str, ...] = HOSTS, replace: bool = True
) -> list[UpdateProgress]:
    """Each host updated in turn, as the agents report it (or finds the spec already runs)."""
    phases = (
        ((UpdatePhase.SNAPSHOTTING, 0.0), (UpdatePhase.STOPPING_OLD, 0.1), (UpdatePhase.DONE, 0.5))
        if replace
        else ((UpdatePhase.DONE, 0.5),)
    )
    return [
        progress(host, phase, index + offset, rollout)
        for index, host in enumerate(hosts)
        for phase, offset in phases
    ]


def test_a_rollout_seen_at_work_that_replaced_containers_but_left_no_window_fails() -> None:
    done = record(2, phase=HostPhase.DONE, previous=PREVIOUS)
    # The agents reported the updates without the rollout's id: no window is the rollout's.
    anonymous = recorder_of(rollout_event("running"), *one_at_a_time(None))
    with pytest.raises(AssertionError, match="no update window"):
        check_every_budget(anonymous, listed(done))
    # With the rollout's id they are its windows, and it passes.
    check_every_budget(
        recorder_of(rollout_event("running"), *one_at_a_time("web-r2")), listed(done)
    )


def test_a_host_the_record_calls_updated_must_have_reported_while_the_rollout_ran() -> None:
    done = record(2, phase=HostPhase.DONE, previous=PREVIOUS)
    three = recorder_of(rollout_event("running"), *one_at_a_time("web-r2", HOSTS[:3]))
    with pytest.raises(AssertionError, match=r"updated \['h3'\] but the recording holds no report"):
        check_every_budget(three, listed(done))
    # Reports from before the rollout was created are no evidence of it.
    early = [
        report.model_copy(update={"sent_at": report.sent_at - timedelta(hours=1)})
        for report in one_at_a_time("web-r2")
    ]
    with pytest.raises(AssertionError, match="no report"):
        check_every_budget(recorder_of(rollout_event("running"), *early), listed(done))


def test_hosts_that_already_ran_the_spec_need_no_window_but_a_replacement_does() -> None:
    done = record(2, phase=HostPhase.DONE, previous=PREVIOUS)
    no_ops = one_at_a_time("web-r2", replace=False)
    check_every_budget(recorder_of(rollout_event("running"), *no_ops), listed(done))
    snapshot = progress("h0", UpdatePhase.SNAPSHOTTING, 0.2)  # h0 was replaced after all
    with pytest.raises(AssertionError, match="no update window"):
        check_every_budget(recorder_of(rollout_event("running"), snapshot, *no_ops), listed(done))


def test_a_rollout_the_recording_never_saw_at_work_is_not_judged_for_evidence() -> None:
    done = record(2, phase=HostPhase.DONE, previous=PREVIOUS)
    # Finished before the recording began: at most its last status, "complete", was heard.
    check_every_budget(recorder_of(rollout_event("complete")), listed(done))
    # A first deploy replaced nothing, a config rollout changes files: no window is due.
    first_deploy = record(2, phase=HostPhase.DONE, previous=None)
    check_every_budget(recorder_of(rollout_event("running")), listed(first_deploy))
    with pytest.raises(AssertionError, match="without evidence"):
        check_every_budget(recorder_of(rollout_event("running")), listed(done))


def test_peak_counts_hosts_out_for_any_reason_each_once() -> None:
    updates = recorder_of(*two_overlapping_updates())
    assert BudgetChecker.of(updates).peak() == 2
    h1_also_died = engine("h1", ContainerAction.DIE, 2)
    assert BudgetChecker.of(recorder_of(h1_also_died, *two_overlapping_updates())).peak() == 2
    h3_died = engine("h3", ContainerAction.DIE, 2)
    assert BudgetChecker.of(recorder_of(h3_died, *two_overlapping_updates())).peak() == 3


def test_an_apps_update_stopping_its_members_one_after_another_is_one_window() -> None:
    # An app named web whose one member would start first as a service: an app's
    # members are replaced in place all the same (README), so its updates are outages.
    member = TARGET.model_copy(update={"name": "web-web", "update_order": UpdateOrder.START_FIRST})
    app = AppSpec(name="web", members=(Member(name="web", spec=member),))
    of_app = record(1).model_copy(update={"target": app})
    stops = [progress("h0", UpdatePhase.STOPPING_OLD, second) for second in (0, 1, 2)]
    done = progress("h0", UpdatePhase.DONE, 5)
    after = progress("h1", UpdatePhase.STOPPING_OLD, 6)
    check_every_budget(recorder_of(*stops, done, after), listed(of_app))
    # Control: h1 stopping while h0's app is still being updated is two hosts out.
    early = progress("h1", UpdatePhase.STOPPING_OLD, 3)
    with pytest.raises(AssertionError, match="2 hosts out at once, allowed 1"):
        check_every_budget(recorder_of(*stops, early, done), listed(of_app))
