"""Canary analysis with nothing to measure says so: "analysis has no data", and why.

The rule (issue 14): analysis that has no data reports that, with a distinct reason,
instead of passing. A check neither passes nor fails without a fresh sample of the new
version on an updated host (README, "The controller", --check).
"""

from __future__ import annotations

from datetime import timedelta

from controller.rollouts.analysis import Verdict, analyse
from controller.rollouts.fleet_metrics import FleetMetrics
from tests.controller.rollouts.test_analysis import NEW_IMAGE, OLD_IMAGE, canary_record, sample
from tests.controller.rollouts.test_planner import NOW


def test_an_analysis_without_any_sample_has_no_data_and_names_the_updated_host() -> None:
    verdict = analyse(canary_record("restarts<=0"), FleetMetrics(), NOW)
    assert verdict.measurements == ()
    assert verdict.failure is None
    assert verdict.no_data is not None
    assert verdict.no_data.startswith("analysis has no data: ")
    assert "host-000" in verdict.no_data  # the canary, the one updated host
    assert "host-001" not in verdict.no_data
    # A rollout without checks misses nothing.
    assert analyse(canary_record(), FleetMetrics(), NOW) == analyse_without_checks()


def test_samples_gone_stale_or_only_of_the_old_version_are_no_data() -> None:
    record = canary_record("restarts<=0")
    view = FleetMetrics()
    view.add(sample("host-000", NEW_IMAGE, restarts=3))
    assert analyse(record, view, NOW + timedelta(minutes=5)).no_data is not None
    old_only = FleetMetrics()
    old_only.add(sample("host-000", OLD_IMAGE, restarts=3))
    verdict = analyse(record, old_only, NOW)
    assert verdict.no_data is not None
    assert verdict.failure is None


def test_while_the_metrics_feed_is_down_the_reason_says_so() -> None:
    view = FleetMetrics(feed_problem="cannot read FLEET_METRICS: stream not found")
    verdict = analyse(canary_record("restarts<=0"), view, NOW)
    assert verdict.no_data is not None
    assert "metrics feed is down" in verdict.no_data
    assert "cannot read FLEET_METRICS: stream not found" in verdict.no_data


def test_memory_ratio_without_the_old_versions_memory_is_no_data_but_one_value_is_data() -> None:
    view = FleetMetrics(feed_problem="down a moment ago, the sample is still fresh")
    view.add(sample("host-000", NEW_IMAGE, restarts=1))
    alone = analyse(canary_record("memory_ratio<=1.5"), view, NOW)
    assert alone.no_data is not None
    assert "memory_ratio" in alone.no_data

    with_restarts = analyse(canary_record("restarts<=0", "memory_ratio<=1.5"), view, NOW)
    assert with_restarts.no_data is None
    assert with_restarts.failure == "analysis check restarts failed: restarts = 1, limit 0"


def analyse_without_checks() -> Verdict:
    return Verdict(measurements=(), no_data=None)
