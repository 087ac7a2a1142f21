"""Pure record changes: a decision applied, and what each kind of reply does to a host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.rollouts.commands import without_pre_update
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
)
from controller.rollouts.planner import Decision
from controller.rollouts.transitions import RETRY_DELAY, after_reply, after_silence, apply_decision
from protocol.models import (
    ErrorReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    Reason,
    ServiceStatus,
)
from protocol.spec import Hook, Hooks, ServiceSpec

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)


def record(phase: HostPhase, command_id: str | None = "cmd-1") -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(),
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        hosts={"h1": HostRecord(phase=phase, since=NOW, command_id=command_id)},
        status=RolloutStatus.RUNNING,
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
    )


def operation(outcome: OperationOutcome, *reasons: Reason) -> OperationReply:
    return OperationReply(
        sender="h1",
        in_reply_to="cmd-1",
        service="web",
        outcome=outcome,
        status=ServiceStatus(name="web"),
        reasons=reasons,
    )


def test_a_decision_gives_each_started_host_a_fresh_command_id_before_anything_is_sent() -> None:
    start = record(HostPhase.READY, command_id=None)
    changed = apply_decision(start, Decision(RolloutStatus.RUNNING, "go", apply=("h1",)), LATER)
    host = changed.hosts["h1"]
    assert host.phase is HostPhase.UPDATING
    assert host.command_id
    assert changed.updated_at == LATER
    again = apply_decision(start, Decision(RolloutStatus.RUNNING, "go", apply=("h1",)), LATER)
    assert again.hosts["h1"].command_id != host.command_id


def test_an_unchanged_decision_leaves_the_record_as_it_was() -> None:
    start = record(HostPhase.UPDATING)
    assert apply_decision(start, Decision(RolloutStatus.RUNNING, ""), LATER) == start


def test_done_and_rolled_back_replies_finish_the_host_and_mark_progress() -> None:
    done = after_reply(
        record(HostPhase.UPDATING), "h1", "cmd-1", operation(OperationOutcome.DONE), LATER
    )
    assert done.hosts["h1"].phase is HostPhase.DONE
    assert done.last_progress_at == LATER
    failed = after_reply(
        record(HostPhase.UPDATING), "h1", "cmd-1", operation(OperationOutcome.ROLLED_BACK), LATER
    )
    assert failed.hosts["h1"].phase is HostPhase.FAILED


def test_a_deferred_apply_goes_back_to_ready_and_waits_before_it_is_tried_again() -> None:
    locked = Reason(code="locked", text="update lock held")
    deferred = after_reply(
        record(HostPhase.UPDATING),
        "h1",
        "cmd-1",
        operation(OperationOutcome.DEFERRED, locked),
        LATER,
    )
    host = deferred.hosts["h1"]
    assert host.phase is HostPhase.READY
    assert host.command_id is None
    assert host.not_before is not None
    assert host.not_before > LATER


def test_busy_and_silence_keep_the_same_command_for_a_later_retry() -> None:
    busy = ErrorReply(sender="h1", in_reply_to="cmd-1", code="busy", message="in progress")
    retried = after_reply(record(HostPhase.UPDATING), "h1", "cmd-1", busy, LATER)
    assert retried.hosts["h1"].phase is HostPhase.UPDATING
    assert retried.hosts["h1"].command_id == "cmd-1"
    assert retried.hosts["h1"].not_before == LATER + RETRY_DELAY
    silent = after_silence(record(HostPhase.UPDATING), "h1", "cmd-1", LATER, "no answer")
    assert silent.hosts["h1"].command_id == "cmd-1"
    assert silent.hosts["h1"].attempts == 1


def test_an_update_that_could_not_read_its_config_files_is_retried_and_not_failed() -> None:
    # README: the agent reads the config bucket before it touches anything, so a bus that
    # cannot be read is a retry of the same command, never a host failure.
    unread = ErrorReply(
        sender="h1", in_reply_to="cmd-1", code="config_unavailable", message="timed out"
    )
    retried = after_reply(record(HostPhase.UPDATING), "h1", "cmd-1", unread, LATER)
    host = retried.hosts["h1"]
    assert (host.phase, host.command_id, host.attempts) == (HostPhase.UPDATING, "cmd-1", 1)
    assert host.not_before == LATER + RETRY_DELAY
    assert host.detail == "config_unavailable: timed out"


def test_a_not_ready_prepare_reply_keeps_every_reason() -> None:
    reasons = (Reason(code="registry_tls", text="tls"), Reason(code="disk", text="full"))
    reply = PrepareReply(
        sender="h1", in_reply_to="cmd-1", service="web", ready=False, reasons=reasons
    )
    changed = after_reply(record(HostPhase.PREPARING), "h1", "cmd-1", reply, LATER)
    assert changed.hosts["h1"].phase is HostPhase.NOT_READY
    assert changed.hosts["h1"].reasons == reasons


def test_a_reply_to_a_command_that_was_replaced_changes_nothing() -> None:
    start = record(HostPhase.UPDATING, command_id="cmd-2")
    assert after_reply(start, "h1", "cmd-1", operation(OperationOutcome.DONE), LATER) == start


def blue_green(phase: HostPhase, switched: bool = False) -> RolloutRecord:
    start = record(phase)
    host = start.hosts["h1"].model_copy(update={"switched": switched})
    return start.model_copy(
        update={
            "spec": RolloutSpec(strategy=Strategy.BLUE_GREEN),
            "hosts": {"h1": host},
            "colour": "green",
        }
    )


def test_blue_green_replies_move_a_host_through_staged_switched_and_retired() -> None:
    done = operation(OperationOutcome.DONE)
    staged = after_reply(blue_green(HostPhase.UPDATING), "h1", "cmd-1", done, LATER)
    assert staged.hosts["h1"].phase is HostPhase.STAGED
    switched = after_reply(blue_green(HostPhase.SWITCHING), "h1", "cmd-1", done, LATER)
    assert switched.hosts["h1"].phase is HostPhase.DONE
    assert switched.hosts["h1"].switched
    retired = after_reply(blue_green(HostPhase.RETIRING, True), "h1", "cmd-1", done, LATER)
    assert retired.hosts["h1"].phase is HostPhase.RETIRED
    back = after_reply(blue_green(HostPhase.REVERTING, True), "h1", "cmd-1", done, LATER)
    assert back.hosts["h1"].phase is HostPhase.REVERTED
    assert not back.hosts["h1"].switched


def test_a_blue_green_switch_decision_records_the_serving_colour_and_when_all_switched() -> None:
    start = blue_green(HostPhase.STAGED)
    switching = apply_decision(
        start,
        Decision(RolloutStatus.SWITCHING, "", switch=("h1",), serving_colour="green"),
        LATER,
    )
    assert switching.hosts["h1"].phase is HostPhase.SWITCHING
    assert switching.serving_colour == "green"
    assert switching.switched_at is None
    settled = apply_decision(switching, Decision(RolloutStatus.SWITCHED, "all green"), LATER)
    assert settled.switched_at == LATER


def test_a_revert_applies_the_previous_spec_without_its_pre_update_hook_only() -> None:
    hook = Hook(command=("sh", "-c", "drain"))
    spec = ServiceSpec(
        name="web",
        image="127.0.0.1:5000/demo/web:1.0.0",
        hooks=Hooks(pre_update=hook, post_update=hook),
    )
    back = without_pre_update(spec)
    assert back.hooks == Hooks(post_update=hook)
    assert back.model_copy(update={"hooks": spec.hooks}) == spec
    plain = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")
    assert without_pre_update(plain) is plain
