"""The fleet tests' invariant checker itself: it must catch a budget overrun."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.rollout import HostRecord, RolloutRecord, RolloutSpec
from protocol.models import UpdatePhase, UpdateProgress
from protocol.spec import ServiceSpec
from tests.support.events import EventRecorder
from tests.support.fleet import check_every_budget

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def progress(host: str, phase: UpdatePhase, second: float, rollout: str) -> UpdateProgress:
    return UpdateProgress(
        sender=host,
        host=host,
        service="web",
        operation_id=f"op-{host}",
        rollout_id=rollout,
        phase=phase,
        sent_at=NOW + timedelta(seconds=second),
    )


def rollouts(max_unavailable: int) -> list[dict[str, Any]]:
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(max_unavailable=max_unavailable),
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        hosts={f"h{i}": HostRecord(since=NOW) for i in range(4)},
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
    )
    return [record.model_dump(mode="json")]


def recorder_of(*messages: UpdateProgress) -> EventRecorder:
    recorder = EventRecorder(client=None, subject="fleet.evt.>")  # type: ignore[arg-type]
    recorder.messages.extend(("fleet.evt", message) for message in messages)
    return recorder


def test_three_overlapping_stop_first_windows_break_a_budget_of_two() -> None:
    events = recorder_of(
        *(
            progress(h, UpdatePhase.STOPPING_OLD, i, "web-r2")
            for i, h in enumerate(("h0", "h1", "h2"))
        ),
        *(progress(h, UpdatePhase.DONE, 5 + i, "web-r2") for i, h in enumerate(("h0", "h1", "h2"))),
    )
    check_every_budget(events, rollouts(3))
    with pytest.raises(AssertionError, match="3 hosts out at once, allowed 2"):
        check_every_budget(events, rollouts(2))


def test_back_to_back_windows_and_other_rollouts_do_not_count_as_overlap() -> None:
    events = recorder_of(
        progress("h0", UpdatePhase.STOPPING_OLD, 0, "web-r2"),
        progress("h0", UpdatePhase.DONE, 1, "web-r2"),
        progress("h1", UpdatePhase.STOPPING_OLD, 1, "web-r2"),
        progress("h1", UpdatePhase.ROLLED_BACK, 2, "web-r2"),
        progress("h2", UpdatePhase.STOPPING_OLD, 0, "web-r9"),
    )
    check_every_budget(events, rollouts(1))
