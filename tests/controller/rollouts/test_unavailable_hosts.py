"""A host the controller cannot hear from is offline, and a missed deadline names who held
it up: the planner's reasons and the record's marks, judged against the README's rules
(offline: no heartbeat within the host timeout, or a command left unanswered)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.rollouts.host_health import HostHealth
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from controller.rollouts.planner import plan
from controller.rollouts.transitions import after_progress, after_reply, after_silence, mark_contact
from controller.state.inventory import fleet_health
from protocol.models import ErrorReply, HostFacts, ServiceStatus
from protocol.spec import ServiceSpec

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TIMEOUT = 30.0
"""The host timeout these tests give fleet_health, as --host-timeout would."""
SERVING = HostHealth(online=True, serving=True, last_seen=NOW)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def rollout(hosts: dict[str, HostRecord], **spec: object) -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(**spec),
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        previous=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0"),
        hosts=hosts,
        status=RolloutStatus.RUNNING,
        created_at=ago(600),
        updated_at=ago(61),
        last_progress_at=ago(61),
    )


def heartbeat(host: str, sent_seconds_ago: float, health: str = "healthy") -> HostFacts:
    return HostFacts(
        sender=host,
        host=host,
        sent_at=ago(sent_seconds_ago),
        agent_version="0.1.0",
        cpus=2,
        memory_total=1 << 30,
        memory_available=1 << 29,
        disk_total=1 << 34,
        disk_free=1 << 33,
        services=(ServiceStatus(name="web", state="running", health=health),),
    )


def test_a_rollout_past_its_deadline_names_each_host_that_held_it_up_and_why() -> None:
    hosts = {
        "host-000": HostRecord(phase=HostPhase.DONE, since=ago(200)),
        "host-001": HostRecord(phase=HostPhase.DONE, since=ago(150)),
        "host-002": HostRecord(phase=HostPhase.READY, since=ago(300)),
        "host-003": HostRecord(phase=HostPhase.UPDATING, since=ago(100), command_id="c3"),
        "host-004": HostRecord(
            phase=HostPhase.UPDATING, since=ago(90), command_id="c4", detail="probing"
        ),
    }
    record = rollout(hosts, max_unavailable=3, progress_deadline=60)
    facts = {
        "host-000": heartbeat("host-000", 1),
        "host-001": heartbeat("host-001", 1, health="unhealthy"),  # spends the budget
        "host-002": heartbeat("host-002", 1),
        "host-003": heartbeat("host-003", 75),  # silent longer than the 30 s host timeout
        "host-004": heartbeat("host-004", 1),
    }
    health = fleet_health(record.hosts, "web", facts, NOW, TIMEOUT)

    decision = plan(record, health, NOW)

    assert decision.status is RolloutStatus.FAILED
    assert decision.reason == (
        "progress_deadline 60s passed; held up by host-001 (unhealthy), "
        "host-003 (offline 75s), host-004 (updating: probing)"
    )


def test_a_host_that_stopped_answering_its_command_is_named_offline_since_the_first_silence() -> (
    None
):
    hosts = {
        "host-000": HostRecord(phase=HostPhase.UPDATING, since=ago(100), command_id="c0"),
        "host-001": HostRecord(phase=HostPhase.READY, since=ago(100)),
    }
    record = rollout(hosts, progress_deadline=60)
    record = after_silence(record, "host-000", "c0", ago(12), "no agent answers")
    record = after_silence(record, "host-000", "c0", ago(9), "no agent answers")

    decision = plan(record, {"host-000": SERVING, "host-001": SERVING}, NOW)

    assert decision.reason == "progress_deadline 60s passed; held up by host-000 (offline 12s)"


def test_pre_flight_past_its_deadline_names_only_the_hosts_still_preparing() -> None:
    hosts = {
        "host-000": HostRecord(phase=HostPhase.READY, since=ago(100)),
        "host-001": HostRecord(phase=HostPhase.PREPARING, since=ago(100), command_id="c1"),
        "host-002": HostRecord(phase=HostPhase.PREPARING, since=ago(100), command_id="c2"),
        "host-003": HostRecord(phase=HostPhase.READY, since=ago(100)),
    }
    record = rollout(hosts, progress_deadline=60).model_copy(
        update={"status": RolloutStatus.PREFLIGHT}
    )
    record = after_progress(record, "host-002", "c2", "pulling", ago(70))
    health = {
        "host-000": SERVING,
        "host-001": HostHealth(online=False, serving=None, last_seen=ago(90)),
        "host-002": SERVING,
        # Offline but already checked: pre-flight does not wait for it.
        "host-003": HostHealth(online=False, serving=None, last_seen=ago(80)),
    }

    decision = plan(record, health, NOW)

    assert decision.reason == (
        "progress_deadline 60s passed during pre-flight; "
        "held up by host-001 (offline 90s), host-002 (preparing: pulling)"
    )


def test_a_deadline_reason_names_ten_hosts_and_counts_the_rest() -> None:
    hosts = {
        f"host-{i:03d}": HostRecord(phase=HostPhase.UPDATING, since=ago(90), command_id=f"c{i}")
        for i in range(12)
    }
    record = rollout(hosts, max_unavailable=12, progress_deadline=60)

    decision = plan(record, dict.fromkeys(hosts, SERVING), NOW)

    named = ", ".join(f"host-{i:03d} (updating)" for i in range(10))
    assert decision.reason == f"progress_deadline 60s passed; held up by {named} and 2 more"


def test_a_stale_heartbeat_marks_the_host_with_its_last_heartbeat_until_it_beats_again() -> None:
    hosts = {
        "host-000": HostRecord(phase=HostPhase.UPDATING, since=ago(100), command_id="c0"),
        "host-001": HostRecord(phase=HostPhase.READY, since=ago(100)),
    }
    record = rollout(hosts)
    silent = {"host-000": heartbeat("host-000", 31), "host-001": heartbeat("host-001", 1)}

    marked = mark_contact(record, fleet_health(hosts, "web", silent, NOW, TIMEOUT), NOW)

    assert marked.hosts["host-000"].no_heartbeat_since == ago(31)
    assert marked.hosts["host-000"].offline_since == ago(31)
    assert marked.hosts["host-001"].offline_since is None
    assert marked.updated_at == NOW
    # Nothing new on the next pass: the same record, so nothing is written.
    again = fleet_health(hosts, "web", silent, NOW + timedelta(seconds=5), TIMEOUT)
    assert mark_contact(marked, again, NOW + timedelta(seconds=5)) is marked

    back = {**silent, "host-000": heartbeat("host-000", 0)}
    cleared = mark_contact(marked, fleet_health(hosts, "web", back, NOW, TIMEOUT), NOW)
    assert cleared.hosts["host-000"].offline_since is None


def test_contact_is_noted_only_for_the_hosts_named_when_some_are() -> None:
    hosts = {h: HostRecord(phase=HostPhase.READY, since=ago(100)) for h in ("host-000", "host-001")}
    record = rollout(hosts)
    silent = {h: heartbeat(h, 31) for h in hosts}
    health = fleet_health(hosts, "web", silent, NOW, TIMEOUT)

    marked = mark_contact(record, health, NOW, ["host-001", "host-999"])

    assert marked.hosts["host-000"].no_heartbeat_since is None
    assert marked.hosts["host-001"].no_heartbeat_since == ago(31)
    assert mark_contact(record, health, NOW, []) is record


def test_a_host_never_heard_of_is_offline_from_the_pass_that_noticed() -> None:
    record = rollout({"host-000": HostRecord(phase=HostPhase.READY, since=ago(100))})

    marked = mark_contact(record, fleet_health(record.hosts, "web", {}, NOW, TIMEOUT), NOW)

    assert marked.hosts["host-000"].offline_since == NOW
    later = NOW + timedelta(seconds=20)
    still = mark_contact(marked, fleet_health(record.hosts, "web", {}, later, TIMEOUT), later)
    assert still.hosts["host-000"].offline_since == NOW


def test_an_unanswered_command_stays_offline_with_a_fresh_heartbeat_until_the_agent_answers() -> (
    None
):
    hosts = {"host-000": HostRecord(phase=HostPhase.UPDATING, since=ago(100), command_id="c0")}
    silent = after_silence(rollout(hosts), "host-000", "c0", ago(20), "no agent answers")
    fresh = fleet_health(hosts, "web", {"host-000": heartbeat("host-000", 1)}, NOW, TIMEOUT)

    assert mark_contact(silent, fresh, NOW).hosts["host-000"].offline_since == ago(20)

    busy = ErrorReply(sender="host-000", in_reply_to="c0", code="busy", message="busy")
    answered = after_reply(silent, "host-000", "c0", busy, NOW)
    assert answered.hosts["host-000"].offline_since is None
    progressed = after_progress(silent, "host-000", "c0", "soaking", NOW)
    assert progressed.hosts["host-000"].offline_since is None
    assert progressed.hosts["host-000"].detail == "soaking"
    # News of an older command changes nothing.
    assert after_progress(silent, "host-000", "c-old", "probing", NOW) is silent


def test_a_host_whose_engine_is_down_spends_the_budget_is_never_picked_and_is_named() -> None:
    """README: a host whose agent reports its engine down is out of every rollout until it
    is back, counts against the budget, and a missed deadline names it "engine down"."""
    hosts = {f"host-00{n}": HostRecord(phase=HostPhase.READY, since=ago(300)) for n in range(3)}
    facts = {host: heartbeat(host, 1) for host in hosts}
    facts["host-000"] = facts["host-000"].model_copy(update={"engine_down": True})
    health = fleet_health(hosts, "web", facts, NOW, TIMEOUT)

    decision = plan(rollout(hosts, max_unavailable=2), health, NOW)
    # Two may be out; host-000 is: one update starts, and not on host-000, first in order.
    assert (decision.apply, decision.budget) == (("host-001",), 1)

    late = plan(rollout(hosts, max_unavailable=1, progress_deadline=60), health, NOW)
    assert late.apply == ()
    assert late.status is RolloutStatus.FAILED
    assert late.reason == "progress_deadline 60s passed; held up by host-000 (engine down)"
    # Its agent beats on: it is not a host out of touch, and the record is not rewritten.
    record = rollout(hosts, max_unavailable=2)
    assert mark_contact(record, health, NOW) is record
