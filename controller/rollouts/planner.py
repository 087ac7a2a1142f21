"""The planner: a rollout record, the hosts' health and ``now`` in; what to do next out.

Pure, in the spirit of Nomad's reconciler: no NATS, no clock, no I/O, so it is tested
exhaustively with hypothesis. The status is derived afresh each time from the hosts'
phases and the operator's intent, never carried over, so a restarted controller plans
exactly what the last one would have.

How many hosts may start at once is budget.py's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.rollouts.budget import eligible_hosts, first_starts, start_budget
from controller.rollouts.host_health import OFFLINE as OFFLINE
from controller.rollouts.host_health import HostHealth as HostHealth
from controller.rollouts.host_health import held_up_by
from controller.rollouts.model import (
    IN_FLIGHT,
    TERMINAL,
    FailureAction,
    HostPhase,
    RolloutRecord,
    RolloutStatus,
    resolve_amount,
)
from protocol.spec import Colour, other_colour


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    reason: str = ""
    prepare: tuple[str, ...] = ()
    apply: tuple[str, ...] = ()
    revert: tuple[str, ...] = ()
    switch: tuple[str, ...] = ()
    """Blue-green: hosts to switch to the new colour."""
    retire: tuple[str, ...] = ()
    """Blue-green: hosts to remove the old colour from."""
    serving_colour: Colour | None = None
    """Blue-green: the colour traffic goes to from now on, when it changes."""
    budget: int = 0
    more: bool = False
    """More hosts could start now than one pass starts (STARTS_PER_PASS): the next pass
    should come at once."""
    promote: bool = False
    """The canary soaked for auto_promote_after without failures: promote now."""
    canary_completed: bool = False


def plan(record: RolloutRecord, health: Mapping[str, HostHealth], now: datetime) -> Decision:
    if record.status in TERMINAL:
        return Decision(record.status, record.reason)
    if record.status is RolloutStatus.REVERTING or record.aborted:
        reason = record.reason if record.status is RolloutStatus.REVERTING else "aborted"
        return _revert(record, health, now, reason)

    total = len(record.hosts)
    stalled_for = (now - record.last_progress_at).total_seconds()
    deadline_passed = stalled_for > record.spec.progress_deadline

    if record.count(HostPhase.PENDING, HostPhase.PREPARING) and not past_preflight(record):
        if record.paused:
            return Decision(RolloutStatus.PAUSED, "paused by the operator during pre-flight")
        if deadline_passed:
            why = f"{_deadline(record)} during pre-flight"
            holdups = held_up_by(record, health, now, out_of_service=False)
            return _fail(record, health, now, f"{why}; {holdups}")
        return _preflight(record)

    ready_like = total - record.count(HostPhase.NOT_READY)
    needed = resolve_amount(record.spec.min_ready, total, round_up=True)
    if ready_like < needed and not record.count(
        HostPhase.UPDATING, HostPhase.DONE, HostPhase.FAILED
    ):
        return Decision(RolloutStatus.FAILED, _not_ready_report(record, ready_like, needed))

    failed = record.count(HostPhase.FAILED)
    if failed > record.tolerated_failures and failed / total > record.spec.max_failure_ratio:
        why = (
            f"{failed} of {total} hosts failed, more than max_failure_ratio "
            f"{record.spec.max_failure_ratio:g}"
        )
        return _fail(record, health, now, why, pause=True)
    if record.analysis_failure and not record.analysis_overridden:
        return _fail(record, health, now, record.analysis_failure, pause=True)
    if record.paused:
        return Decision(RolloutStatus.PAUSED, "paused by the operator")
    return _roll(record, health, now, deadline_passed)


PAST_PREFLIGHT = frozenset(
    {
        HostPhase.UPDATING,
        HostPhase.STAGED,
        HostPhase.SWITCHING,
        HostPhase.DONE,
        HostPhase.RETIRING,
        HostPhase.RETIRED,
        HostPhase.FAILED,
        HostPhase.REVERTING,
        HostPhase.REVERTED,
    }
)


def past_preflight(record: RolloutRecord) -> bool:
    """Whether any host went past pre-flight: hosts that joined later are checked beside
    the updates then, instead of holding the whole rollout in pre-flight."""
    return record.count(*PAST_PREFLIGHT) > 0


def _checks(record: RolloutRecord) -> tuple[str, ...]:
    """Pending hosts to check now, within the pre-flight parallelism."""
    pending = record.in_phase(HostPhase.PENDING)
    slots = max(0, record.spec.preflight_parallelism - record.count(HostPhase.PREPARING))
    return tuple(pending[:slots])


def _preflight(record: RolloutRecord) -> Decision:
    checked = len(record.hosts) - record.count(HostPhase.PENDING, HostPhase.PREPARING)
    return Decision(
        RolloutStatus.PREFLIGHT,
        f"pre-flight: {checked} of {len(record.hosts)} hosts checked",
        prepare=_checks(record),
    )


def _not_ready_report(record: RolloutRecord, ready: int, needed: int) -> str:
    lines = [f"pre-flight: {ready} of {len(record.hosts)} hosts ready, {needed} needed"]
    for host in record.ordered_hosts():
        entry = record.hosts[host]
        if entry.phase is HostPhase.NOT_READY:
            why = "; ".join(f"{r.code}: {r.text}" for r in entry.reasons) or entry.detail
            lines.append(f"  {host}: {why}")
    return "\n".join(lines)[:16000]


def _fail(
    record: RolloutRecord,
    health: Mapping[str, HostHealth],
    now: datetime,
    why: str,
    *,
    pause: bool = False,
) -> Decision:
    if record.spec.failure_action is FailureAction.REVERT:
        return _revert(record, health, now, f"{why}; reverting updated hosts")
    if pause:
        return Decision(RolloutStatus.PAUSED, f"{why}; paused (resume, abort or undo)")
    return Decision(RolloutStatus.FAILED, why)


def _roll(
    record: RolloutRecord, health: Mapping[str, HostHealth], now: datetime, deadline_passed: bool
) -> Decision:
    if record.blue_green:
        return _blue_green(record, health, now, deadline_passed)
    eligible = eligible_hosts(record)
    first = eligible[0] if eligible else None
    # Taken lazily, as many as the budget allows: thousands may be waiting.
    waiting: Iterator[str] = (
        host
        for host in _from(record.in_phase(HostPhase.READY), first)
        if _due(record.hosts[host].not_before, now)
    )
    updating = record.count(HostPhase.UPDATING)
    gate = _canary_gate(record, eligible, updating, now)
    if gate.waiting_for_promotion is not None:
        return gate.waiting_for_promotion
    if gate.canary_hosts is not None:
        canary = gate.canary_hosts
        waiting = (h for h in waiting if h in canary)

    # Pending: a host that joined (it is checked first, beside the others' updates).
    remaining = any(
        _from(record.in_phase(phase), first)
        for phase in (HostPhase.PENDING, HostPhase.READY, *IN_FLIGHT)
    )
    if not remaining:
        return _finished(record, eligible, gate.promote)
    if deadline_passed:
        holdups = held_up_by(record, health, now, out_of_service=True)
        return _fail(record, health, now, f"{_deadline(record)}; {holdups}")

    budget = start_budget(record, health, len(eligible))
    online = (h for h in waiting if health.get(h, OFFLINE).online)
    chosen, more = first_starts(online, budget)
    return Decision(
        RolloutStatus.RUNNING,
        f"{record.count(HostPhase.DONE)} of {len(eligible)} hosts updated, {updating} updating",
        prepare=_checks(record),
        apply=chosen,
        budget=budget,
        more=more,
        promote=gate.promote,
        canary_completed=gate.completed,
    )


@dataclass(frozen=True)
class _CanaryGate:
    waiting_for_promotion: Decision | None = None
    """Set when the canary wave is done and the rollout waits for a promote."""
    canary_hosts: frozenset[str] | None = None
    """Set while the canary wave is in progress: only these hosts may start."""
    promote: bool = False
    completed: bool = False


def _canary_gate(
    record: RolloutRecord, eligible: tuple[str, ...], updating: int, now: datetime
) -> _CanaryGate:
    """Where a canary rollout stands: the wave in progress, waiting for a promote, or
    (auto-)promoted; a rollout without a canary, or promoted, passes."""
    spec = record.spec
    if spec.canary is None or record.promoted:
        return _CanaryGate()
    size = max(1, resolve_amount(spec.canary, len(eligible), round_up=True))
    canary_hosts = eligible[:size]
    settled = all(
        record.hosts[h].phase in (HostPhase.DONE, HostPhase.FAILED, HostPhase.NOT_READY)
        for h in canary_hosts
    )
    if not settled or updating:
        return _CanaryGate(canary_hosts=frozenset(canary_hosts))
    soaked_since = record.canary_completed_at or now
    soak = spec.auto_promote_after
    unmeasured = record.analysis_note if spec.analysis else None
    if soak is not None and (now - soaked_since).total_seconds() >= soak and unmeasured is None:
        return _CanaryGate(promote=True, completed=True)
    why = f" ({unmeasured})" if unmeasured else ""
    waiting = Decision(
        RolloutStatus.AWAITING_PROMOTION,
        f"canary wave of {size} done; waiting for promote{why}",
        canary_completed=True,
    )
    return _CanaryGate(waiting_for_promotion=waiting)


def _finished(record: RolloutRecord, eligible: tuple[str, ...], promote: bool) -> Decision:
    """No eligible host left to update: complete, or held below the partition."""
    held = len(record.hosts) - len(eligible)
    if held and any(
        record.hosts[h].phase is HostPhase.READY
        for h in record.ordered_hosts()[: record.partition or 0]
    ):
        return Decision(
            RolloutStatus.HELD,
            f"partition {record.partition}: {held} host(s) below it wait for it to lower",
            promote=promote,
        )
    failed = record.count(HostPhase.FAILED)
    note = f"; {failed} host(s) failed within max_failure_ratio" if failed else ""
    left_out = record.count(HostPhase.NOT_READY)
    if left_out:  # --min-ready let the rollout go without them
        return Decision(
            RolloutStatus.COMPLETE,
            f"all ready hosts updated; {left_out} not ready, left out{note}",
            promote=promote,
        )
    return Decision(RolloutStatus.COMPLETE, f"all hosts updated{note}", promote=promote)


def _deadline(record: RolloutRecord) -> str:
    return f"progress_deadline {record.spec.progress_deadline:g}s passed"


def _from(hosts: tuple[str, ...], first: str | None) -> tuple[str, ...]:
    """Of ``hosts`` (in host order), those at or past ``first`` (None: none)."""
    if first is None:
        return ()
    return hosts[bisect_left(hosts, first) :]


def _due(not_before: datetime | None, now: datetime) -> bool:
    return not_before is None or not_before <= now


def _blue_green(
    record: RolloutRecord, health: Mapping[str, HostHealth], now: datetime, deadline_passed: bool
) -> Decision:
    """Stage everywhere, then switch everywhere at once, then retire the old colour.

    Staging and retiring leave the serving copy alone, so they spend no unavailable budget;
    staging runs at most ``preflight_parallelism`` hosts at a time.
    """
    hosts = record.ordered_hosts()
    colour = record.new_colour
    total = len(hosts)
    staging = record.count(HostPhase.UPDATING)
    # A partition keeps the hosts below it on the old colour, as it does in rolling.
    ready = [h for h in eligible_hosts(record) if record.hosts[h].phase is HostPhase.READY]
    if ready or staging:
        if deadline_passed:
            holdups = held_up_by(record, health, now, out_of_service=True)
            return _fail(record, health, now, f"{_deadline(record)} while staging; {holdups}")
        return _stage(record, health, now, ready, staging)
    staged = [h for h in hosts if record.hosts[h].phase is HostPhase.STAGED]
    if staged:  # verified everywhere it could be: now switch all at once
        return Decision(
            RolloutStatus.SWITCHING,
            f"{colour} verified on {len(staged)} host(s); switching traffic to it",
            switch=tuple(staged),
            serving_colour=colour if record.serving_colour != colour else None,
        )
    switching = record.count(HostPhase.SWITCHING)
    if switching:
        return Decision(
            RolloutStatus.SWITCHING,
            f"switching: {record.count(HostPhase.DONE)} of {total} hosts serve {colour}",
        )
    switched = [h for h in hosts if record.hosts[h].phase is HostPhase.DONE]
    if switched:
        since = record.switched_at or now
        left = record.spec.remove_old_after - (now - since).total_seconds()
        if record.promoted or left <= 0:
            return Decision(
                RolloutStatus.SWITCHED,
                f"all hosts serve {colour}; removing {other_colour(colour)}",
                retire=tuple(switched),
            )
        return Decision(
            RolloutStatus.SWITCHED,
            f"all hosts serve {colour}; {other_colour(colour)} is kept {left:.0f}s more "
            "(abort switches back, promote removes it now)",
        )
    return _blue_green_after_retiring(record)


def _stage(
    record: RolloutRecord,
    health: Mapping[str, HostHealth],
    now: datetime,
    ready: list[str],
    staging: int,
) -> Decision:
    """Staging: at most ``preflight_parallelism`` hosts at a time, online and due."""
    slots = max(0, record.spec.preflight_parallelism - staging)
    due = [
        h for h in ready if _due(record.hosts[h].not_before, now) and health.get(h, OFFLINE).online
    ]
    return Decision(
        RolloutStatus.RUNNING,
        f"staging {record.new_colour}: {record.count(HostPhase.STAGED)} of "
        f"{len(record.hosts)} hosts staged, {staging} staging",
        apply=tuple(due[:slots]),
        budget=slots,
    )


def _blue_green_after_retiring(record: RolloutRecord) -> Decision:
    """Nothing staged, switching or serving the new colour awaits: retiring, held below
    the partition, or complete."""
    colour = record.new_colour
    if record.count(HostPhase.RETIRING):
        return Decision(RolloutStatus.SWITCHED, f"removing {other_colour(colour)}")
    held = [h for h in record.ordered_hosts() if record.hosts[h].phase is HostPhase.READY]
    if held:
        return Decision(
            RolloutStatus.HELD,
            f"partition {record.partition}: {len(held)} host(s) below it keep "
            f"{other_colour(colour)} until it is lowered",
        )
    failed = record.count(HostPhase.FAILED)
    note = f"; {failed} host(s) failed within max_failure_ratio" if failed else ""
    return Decision(
        RolloutStatus.COMPLETE, f"all hosts serve {colour}, {other_colour(colour)} removed{note}"
    )


def _switch_back(record: RolloutRecord, reason: str) -> Decision:
    """Blue-green revert: switch switched hosts back and drop staged copies, all at once."""
    colour = record.new_colour
    back_to: Colour | None = other_colour(colour) if record.serving_colour == colour else None
    if record.count(HostPhase.PREPARING, HostPhase.UPDATING, HostPhase.SWITCHING):
        return Decision(RolloutStatus.REVERTING, reason, serving_colour=back_to)
    undo = [
        h
        for h in record.ordered_hosts()
        if record.hosts[h].phase in (HostPhase.STAGED, HostPhase.DONE)
    ]
    if undo or record.count(HostPhase.REVERTING, HostPhase.RETIRING):
        return Decision(RolloutStatus.REVERTING, reason, revert=tuple(undo), serving_colour=back_to)
    retired = record.count(HostPhase.RETIRED)
    if retired:
        reason += f"; {retired} host(s) had already removed the old colour and keep {colour}"
    final = RolloutStatus.ABORTED if record.aborted else RolloutStatus.REVERTED
    return Decision(final, reason, serving_colour=back_to)


def _revert(
    record: RolloutRecord, health: Mapping[str, HostHealth], now: datetime, reason: str
) -> Decision:
    """Put every updated host back on the previous version, within the same budget."""
    if record.blue_green:
        return _switch_back(record, reason)
    # A config rollout can always go back: to the previous file, or to no file at all.
    if record.previous is None and record.config is None:
        return Decision(RolloutStatus.FAILED, f"{reason}; no previous version to revert to")
    updated = [h for h in record.ordered_hosts() if record.hosts[h].phase is HostPhase.DONE]
    if not updated and not record.count(*IN_FLIGHT):
        final = RolloutStatus.ABORTED if record.aborted else RolloutStatus.REVERTED
        return Decision(final, reason)
    # The same budget as the forward roll: of the eligible hosts, not of every host.
    budget = start_budget(record, health, len(eligible_hosts(record)))
    if record.count(HostPhase.UPDATING, HostPhase.PREPARING):
        budget = 0  # let forward work settle first: it may yet need reverting
    online = (
        h
        for h in updated
        if health.get(h, OFFLINE).online and _due(record.hosts[h].not_before, now)
    )
    chosen, more = first_starts(online, budget)
    return Decision(RolloutStatus.REVERTING, reason, revert=chosen, budget=budget, more=more)
