"""Pure state changes of a rollout record: a planner decision applied, a reply recorded.

The executor writes the result of ``apply_decision`` to KV *before* it sends any command
(so each command id is on record first), and the result of ``after_reply`` once a host
answers. Neither does I/O, so both are unit-tested without NATS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.rollouts.host_health import OFFLINE, HostHealth
from controller.rollouts.model import Change, HostPhase, HostRecord, RolloutRecord, RolloutStatus
from controller.rollouts.planner import Decision
from protocol.models import (
    AnyMessage,
    ErrorReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    Reason,
    new_message_id,
)

RETRY_DELAY = timedelta(seconds=2)
DEFER_DELAY = timedelta(seconds=10)
# Answers that mean "not now": the same command is sent again later. An agent that could
# not read the config bucket (its cluster lost a node for longer than the agent waits)
# says so before it touches anything, so its host has not failed.
RETRY_LATER = frozenset({"busy", "in_progress", "config_unavailable"})
FINISHED = frozenset(
    {
        HostPhase.READY,
        HostPhase.NOT_READY,
        HostPhase.STAGED,
        HostPhase.DONE,
        HostPhase.RETIRED,
        HostPhase.FAILED,
        HostPhase.REVERTED,
    }
)
# What a successful OperationReply moves each in-flight phase to.
SUCCEEDED = {
    HostPhase.UPDATING: HostPhase.DONE,
    HostPhase.SWITCHING: HostPhase.DONE,
    HostPhase.RETIRING: HostPhase.RETIRED,
    HostPhase.REVERTING: HostPhase.REVERTED,
}


def apply_decision(record: RolloutRecord, decision: Decision, now: datetime) -> RolloutRecord:
    sent: dict[str, HostRecord] = {}
    for names, phase in (
        (decision.prepare, HostPhase.PREPARING),
        (decision.apply, HostPhase.UPDATING),
        (decision.revert, HostPhase.REVERTING),
        (decision.switch, HostPhase.SWITCHING),
        (decision.retire, HostPhase.RETIRING),
    ):
        for host in names:
            sent[host] = _sent(sent.get(host, record.hosts[host]), phase, new_message_id(), now)
    changes: dict[str, object] = {
        # The same map when no host changed: comparing it with itself costs nothing.
        "hosts": {**record.hosts, **sent} if sent else record.hosts,
        "status": decision.status,
        "reason": decision.reason,
    }
    if decision.promote:
        changes["promoted"] = True
        changes["last_progress_at"] = now
    if decision.canary_completed and record.canary_completed_at is None:
        changes["canary_completed_at"] = now
    if decision.serving_colour is not None:
        changes["serving_colour"] = decision.serving_colour
    if decision.status is RolloutStatus.SWITCHED and record.switched_at is None:
        changes["switched_at"] = now
        changes["last_progress_at"] = now
    updated = record.model_copy(update=changes)
    if updated == record:
        return record
    return updated.model_copy(update={"updated_at": now})


def _sent(entry: HostRecord, phase: HostPhase, command_id: str, now: datetime) -> HostRecord:
    """A host given a new command: what it had from earlier steps is kept."""
    return HostRecord(
        phase=phase,
        since=now,
        command_id=command_id,
        digest=entry.digest,
        digests=entry.digests,
        switched=entry.switched,
        no_heartbeat_since=entry.no_heartbeat_since,
    )


def adopt_checks(record: RolloutRecord, checks: Mapping[str, str], now: datetime) -> RolloutRecord:
    """Checks sent before a pass chose them (host -> command id), as that pass would
    have: each pending host among them is preparing, waiting on that command."""
    adopted = {
        host: _sent(record.hosts[host], HostPhase.PREPARING, command_id, now)
        for host, command_id in checks.items()
        if host in record.hosts and record.hosts[host].phase is HostPhase.PENDING
    }
    if not adopted:
        return record
    return record.model_copy(update={"hosts": {**record.hosts, **adopted}, "updated_at": now})


@dataclass(frozen=True)
class HostNews:
    """What an answer (or its absence, or news of its progress) changes in one host's
    entry: folded in only while the entry still waits on ``command_id``."""

    host: str
    command_id: str
    change: Callable[[HostRecord], HostRecord]


def reply_news(
    host: str, command_id: str, reply: AnyMessage, now: datetime, blue_green: bool
) -> HostNews:
    return HostNews(host, command_id, lambda entry: _host_after(entry, reply, now, blue_green))


def silence_news(host: str, command_id: str, now: datetime, why: str) -> HostNews:
    """No answer (timeout, no responders): the same command goes again after a delay."""

    def retry(entry: HostRecord) -> HostRecord:
        return entry.model_copy(
            update={
                "attempts": entry.attempts + 1,
                "not_before": now + RETRY_DELAY,
                "detail": why,
                "unanswered_since": entry.unanswered_since or now,
            }
        )

    return HostNews(host, command_id, retry)


def progress_news(host: str, command_id: str, doing: str) -> HostNews:
    """The agent reported a phase of ``command_id`` (``probing``): it becomes the host's
    detail, and the agent is plainly there, whatever became of the last request."""
    return HostNews(
        host,
        command_id,
        lambda entry: entry.model_copy(update={"detail": doing, "unanswered_since": None}),
    )


def fold(record: RolloutRecord, items: Sequence[HostNews | Change], now: datetime) -> RolloutRecord:
    """The record with every item folded in, in order: the news of many hosts in one
    copy of the hosts map (a copy per answer made a 5,000-host pass slow)."""
    changed: dict[str, HostRecord] = {}
    progressed = False
    for item in items:
        if not isinstance(item, HostNews):
            record = item(_with_news(record, changed, progressed, now))
            changed, progressed = {}, False
            continue
        entry = changed.get(item.host) or record.hosts.get(item.host)
        if entry is None or entry.command_id != item.command_id:
            continue  # a newer command replaced this one meanwhile
        news = item.change(entry)
        if news != entry:
            progressed |= news.phase in FINISHED and news.phase is not entry.phase
            changed[item.host] = news
    return _with_news(record, changed, progressed, now)


def _with_news(
    record: RolloutRecord, changed: dict[str, HostRecord], progressed: bool, now: datetime
) -> RolloutRecord:
    if not changed:
        return record
    update: dict[str, object] = {"hosts": {**record.hosts, **changed}, "updated_at": now}
    if progressed:
        update["last_progress_at"] = now
    return record.model_copy(update=update)


def after_reply(
    record: RolloutRecord, host: str, command_id: str, reply: AnyMessage, now: datetime
) -> RolloutRecord:
    """The record once ``host`` answered ``command_id``; unchanged if that is stale news."""
    return fold(record, [reply_news(host, command_id, reply, now, record.blue_green)], now)


def after_silence(
    record: RolloutRecord, host: str, command_id: str, now: datetime, why: str
) -> RolloutRecord:
    return fold(record, [silence_news(host, command_id, now, why)], now)


def after_progress(
    record: RolloutRecord, host: str, command_id: str, doing: str, now: datetime
) -> RolloutRecord:
    return fold(record, [progress_news(host, command_id, doing)], now)


def mark_contact(
    record: RolloutRecord,
    health: Mapping[str, HostHealth],
    now: datetime,
    hosts: Iterable[str] | None = None,
) -> RolloutRecord:
    """Note the hosts whose heartbeat is older than the host timeout, with their last one
    (``now`` for a host never heard of), and clear the note once a host is back. Only of
    ``hosts`` where given (those whose health may have changed), else of every host."""
    changed: dict[str, HostRecord] = {}
    for host in record.hosts if hosts is None else hosts:
        entry = record.hosts.get(host)
        if entry is None:
            continue
        state = health.get(host, OFFLINE)
        in_touch = state.online or state.engine_down  # its agent beats on, engine or not
        lost = None if in_touch else (state.last_seen or entry.no_heartbeat_since or now)
        if lost != entry.no_heartbeat_since:
            changed[host] = entry.model_copy(update={"no_heartbeat_since": lost})
    if not changed:
        return record
    return record.model_copy(update={"hosts": {**record.hosts, **changed}, "updated_at": now})


def _host_after(
    entry: HostRecord, reply: AnyMessage, now: datetime, blue_green: bool
) -> HostRecord:
    phase = entry.phase
    if isinstance(reply, ErrorReply):
        if reply.code in RETRY_LATER:
            return entry.model_copy(
                update={
                    "attempts": entry.attempts + 1,
                    "not_before": now + RETRY_DELAY,
                    "detail": f"{reply.code}: {reply.message}"[:8000],
                    "unanswered_since": None,
                }
            )
        failed = HostPhase.NOT_READY if phase is HostPhase.PREPARING else HostPhase.FAILED
        return _finished(
            entry,
            failed,
            now,
            f"{reply.code}: {reply.message}",
            (Reason(code=reply.code, text=reply.message[:4000]),),
        )
    if phase is HostPhase.PREPARING and isinstance(reply, PrepareReply):
        if reply.ready:
            ready = _finished(entry, HostPhase.READY, now, "pulled", (), digest=reply.digest)
            return ready.model_copy(update={"digests": reply.digests}) if reply.digests else ready
        detail = "; ".join(reason.code for reason in reply.reasons)
        return _finished(entry, HostPhase.NOT_READY, now, detail, reply.reasons)
    if phase in SUCCEEDED and isinstance(reply, OperationReply):
        if reply.outcome is OperationOutcome.DEFERRED:
            detail = "; ".join(reason.code for reason in reply.reasons) or "deferred"
            back = HostPhase.READY if phase is HostPhase.UPDATING else HostPhase.DONE
            return HostRecord(
                phase=back,
                since=now,
                not_before=now + DEFER_DELAY,
                detail=detail,
                digest=entry.digest,
                digests=entry.digests,
                reasons=reply.reasons,
                no_heartbeat_since=entry.no_heartbeat_since,  # heartbeats say, not answers
            )
        if reply.outcome is OperationOutcome.DONE:
            done = SUCCEEDED[phase]
            if blue_green and phase is HostPhase.UPDATING:
                done = HostPhase.STAGED
            finished = _finished(entry, done, now, reply.status.image or "", ())
            if phase is HostPhase.SWITCHING:
                return finished.model_copy(update={"switched": True})
            return finished
        why = reply.failure.reason.text if reply.failure else reply.outcome.value
        return _finished(
            entry, HostPhase.FAILED, now, f"{reply.outcome.value}: {why}", reply.reasons
        )
    return _finished(
        entry,
        HostPhase.FAILED,
        now,
        f"unexpected {reply.kind} while {phase.value}",
        (Reason(code="unexpected_reply", text=reply.kind),),
    )


def _finished(
    entry: HostRecord,
    phase: HostPhase,
    now: datetime,
    detail: str,
    reasons: tuple[Reason, ...],
    digest: str | None = None,
) -> HostRecord:
    return HostRecord(
        phase=phase,
        since=now,
        detail=detail[:8000],
        reasons=reasons,
        digest=digest or entry.digest,
        digests=entry.digests,
        attempts=entry.attempts,
        switched=entry.switched and phase is not HostPhase.REVERTED,
        no_heartbeat_since=entry.no_heartbeat_since,  # heartbeats say, not answers
    )
