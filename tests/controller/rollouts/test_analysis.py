"""Canary analysis: parsing checks, measuring them on metrics, and what a failure does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.rollouts.analysis import baseline_memory, first_failure, measure
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.model import (
    AnalysisCheck,
    AnalysisMetric,
    FailureAction,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutStatus,
)
from controller.rollouts.planner import HostHealth, plan
from protocol.models import ContainerMetrics, Health, MetricsSample
from tests.controller.rollouts.test_planner import NOW, fresh_record

NEW_DIGEST = "sha256:" + "b" * 64
OLD_IMAGE = "127.0.0.1:5000/demo/web@sha256:" + "a" * 64
NEW_IMAGE = f"127.0.0.1:5000/demo/web@{NEW_DIGEST}"
MiB = 1024 * 1024


def sample(
    host: str, image: str, memory: int = 10 * MiB, restarts: int = 0, **extra: object
) -> MetricsSample:
    return MetricsSample(
        sender=host,
        host=host,
        sent_at=NOW,
        interval=10,
        cpu_percent=5,
        memory_used=1,
        memory_total=2,
        disk_used=1,
        disk_total=2,
        load_1m=0.1,
        containers=(
            ContainerMetrics(
                service="web",
                container_id=f"c-{host}",
                image=image,
                cpu_percent=1.0,
                memory_bytes=memory,
                restart_count=restarts,
                **extra,
            ),
        ),
    )


def canary_record(
    *checks: str, failure_action: FailureAction = FailureAction.PAUSE
) -> RolloutRecord:
    record = fresh_record(
        3,
        canary=1,
        failure_action=failure_action,
        analysis=tuple(AnalysisCheck.parse(c) for c in checks),
    )
    hosts = {
        name: HostRecord(
            phase=HostPhase.DONE if name == "host-000" else HostPhase.READY,
            since=NOW,
            digest=NEW_DIGEST,
        )
        for name in record.hosts
    }
    return record.model_copy(update={"hosts": hosts, "status": RolloutStatus.AWAITING_PROMOTION})


def test_a_check_is_written_as_an_optional_name_and_a_rule() -> None:
    plain = AnalysisCheck.parse("restarts<=0")
    assert (plain.name, plain.metric, plain.max) == ("restarts", AnalysisMetric.RESTARTS, 0.0)
    named = AnalysisCheck.parse("mem=memory_ratio <= 1.5")
    assert (named.name, named.metric, named.max) == ("mem", AnalysisMetric.MEMORY_RATIO, 1.5)


@pytest.mark.parametrize("text", ["restarts", "restarts<0", "latency<=3", "restarts<=-1", "=x<=1"])
def test_a_check_that_does_not_parse_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="check"):
        AnalysisCheck.parse(text)


def test_only_the_new_version_on_updated_hosts_is_measured() -> None:
    record = canary_record("restarts<=0", "memory_bytes<=100000000")
    view = FleetMetrics()
    view.add(sample("host-000", NEW_IMAGE, memory=20 * MiB))
    view.add(sample("host-001", OLD_IMAGE, memory=90 * MiB, restarts=7))  # old: not counted
    values = {m.check.name: m.value for m in measure(record, view, NOW)}
    assert values == {"restarts": 0.0, "memory_bytes": 20.0 * MiB}
    assert first_failure(record, view, NOW) is None


def test_a_restart_on_the_canary_fails_the_check_with_its_value() -> None:
    record = canary_record("restarts<=0")
    view = FleetMetrics()
    view.add(sample("host-000", NEW_IMAGE, restarts=2))
    assert first_failure(record, view, NOW) == (
        "analysis check restarts failed: restarts = 2, limit 0"
    )


def test_memory_ratio_compares_with_the_old_versions_median() -> None:
    record = canary_record("memory_ratio<=1.5")
    view = FleetMetrics()
    for host, memory in (("host-001", 10 * MiB), ("host-002", 30 * MiB)):
        view.add(sample(host, OLD_IMAGE, memory=memory))
    baseline = baseline_memory(record, view, NOW)
    assert baseline == 20 * MiB
    record = record.model_copy(update={"baseline_memory": baseline})
    view.add(sample("host-000", NEW_IMAGE, memory=35 * MiB))
    assert first_failure(record, view, NOW) == (
        "analysis check memory_ratio failed: memory_ratio = 1.75, limit 1.5"
    )


def test_stale_or_missing_metrics_neither_pass_nor_fail_a_check() -> None:
    record = canary_record("restarts<=0", "unhealthy<=0")
    view = FleetMetrics()
    assert measure(record, view, NOW) == []
    view.add(sample("host-000", NEW_IMAGE, restarts=3, health=Health.UNHEALTHY))
    assert measure(record, view, NOW + timedelta(minutes=5)) == []  # 3 intervals passed
    assert len(measure(record, view, NOW)) == 2


def test_a_failed_check_pauses_or_reverts_as_the_failure_action_says() -> None:
    health = {
        h: HostHealth(online=True, serving=True) for h in ("host-000", "host-001", "host-002")
    }
    why = "analysis check restarts failed: restarts = 1, limit 0"
    paused = canary_record("restarts<=0").model_copy(update={"analysis_failure": why})
    decision = plan(paused, health, NOW)
    assert decision.status is RolloutStatus.PAUSED
    assert why in decision.reason
    assert not decision.apply

    reverting = canary_record("restarts<=0", failure_action=FailureAction.REVERT)
    decision = plan(reverting.model_copy(update={"analysis_failure": why}), health, NOW)
    assert decision.status is RolloutStatus.REVERTING
    assert decision.revert == ("host-000",)

    overridden = paused.model_copy(update={"analysis_overridden": True, "promoted": True})
    assert plan(overridden, health, NOW).status is RolloutStatus.RUNNING
