"""Pre-flight checks sent ahead of the record: a check changes nothing on a host, and
pre-flight of a large fleet is a hundred rounds of answer in, next check out. So the
checks a pass decides go while it writes, and the next ones as answers come (dispatch
sends them; the pass after puts them on record). Never while paused or aborted.
"""

from __future__ import annotations

from controller.leader.dispatch import Dispatch
from controller.rollouts.model import HostPhase, RolloutRecord, RolloutStatus


def check_early(dispatch: Dispatch, record: RolloutRecord, hosts: tuple[str, ...]) -> list[str]:
    """Send the checks a pass decided while it writes the record. If the write fails
    they are called off (a check already made is simply not folded in, and the host is
    checked again)."""
    if record.config is not None or record.paused or record.aborted:
        return []
    sent = []
    for host in hosts:
        entry = record.hosts[host]
        if entry.phase is HostPhase.PREPARING and entry.command_id:
            dispatch.ensure(record, host, entry.command_id)
            sent.append(entry.command_id)
    return sent


def queue_next_checks(dispatch: Dispatch, record: RolloutRecord) -> None:
    """The pending hosts the planner takes next, in its order, for as many slots as there
    are: each is checked as an answer to a check frees a slot. Queued before the pass
    sends its own checks (an answer during its write must not pop a host it just took)."""
    preflight = record.status is RolloutStatus.PREFLIGHT and record.config is None
    if not preflight or record.paused or record.aborted:
        dispatch.queue_checks(record, ())
        return
    parallelism = record.spec.preflight_parallelism
    dispatch.queue_checks(record, record.in_phase(HostPhase.PENDING)[:parallelism])


def checks_on_record(
    dispatch: Dispatch, record: RolloutRecord, checks_sent: dict[str, str]
) -> None:
    """The checks sent before this pass are on record now; those it could not take (the
    host no longer pending) are called off."""
    dispatch.checks_recorded(record.id, checks_sent)
    dispatch.cancel(
        [
            command_id
            for host, command_id in checks_sent.items()
            if host not in record.hosts or record.hosts[host].command_id != command_id
        ]
    )
