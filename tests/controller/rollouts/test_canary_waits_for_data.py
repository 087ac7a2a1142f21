"""A canary with analysis checks is auto-promoted only once the checks have data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.rollouts.host_health import HostHealth
from controller.rollouts.model import (
    AnalysisCheck,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from controller.rollouts.planner import plan
from protocol.spec import ServiceSpec

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NO_DATA = "analysis has no data: the metrics feed is down"


def canary_soaked(note: str | None, checks: bool = True) -> RolloutRecord:
    """Four hosts, a canary of one that finished a minute ago, auto-promotion after 30 s."""
    spec = RolloutSpec(
        canary=1,
        auto_promote_after=30,
        max_unavailable=1,
        analysis=(AnalysisCheck.parse("restarts<=0"),) if checks else (),
    )
    hosts = {
        f"h{i}": HostRecord(phase=HostPhase.DONE if i == 0 else HostPhase.READY, since=NOW)
        for i in range(4)
    }
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=spec,
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        hosts=hosts,
        status=RolloutStatus.AWAITING_PROMOTION,
        created_at=NOW - timedelta(minutes=5),
        updated_at=NOW,
        last_progress_at=NOW,
        canary_completed_at=NOW - timedelta(seconds=60),
        analysis_note=note,
    )


HEALTHY = {f"h{i}": HostHealth(online=True, serving=True, last_seen=NOW) for i in range(4)}


def test_a_soaked_canary_whose_checks_have_no_data_waits_and_says_why() -> None:
    decision = plan(canary_soaked(NO_DATA), HEALTHY, NOW)
    assert decision.status is RolloutStatus.AWAITING_PROMOTION
    assert NO_DATA in decision.reason
    assert not decision.promote


@pytest.mark.parametrize(("note", "checks"), [(None, True), (NO_DATA, False)])
def test_a_soaked_canary_is_promoted_when_measured_or_when_it_has_no_checks(
    note: str | None, checks: bool
) -> None:
    decision = plan(canary_soaked(note, checks), HEALTHY, NOW)
    assert decision.promote
    assert decision.status is not RolloutStatus.AWAITING_PROMOTION
