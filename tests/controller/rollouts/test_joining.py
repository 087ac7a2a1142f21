"""Hosts that come back during a rollout join it, by the README's rules: a live host on
the rollout's selector that it lacks is one more host of a rolling or recreate image
rollout in progress (pre-flight first, then its turn within the budget); a canary not
yet promoted, a partitioned, blue-green, config, convergence or removal rollout, and a
rollout that is stopping or over, take nobody."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.rollouts.convergence import live_facts
from controller.rollouts.joining import join, joining_hosts, takes_converging_hosts
from controller.rollouts.model import (
    ConfigTarget,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
)
from controller.rollouts.planner import HostHealth, plan
from protocol.config_files import ConfigContent, ConfigDocument
from protocol.spec import ServiceSpec
from tests.support.heartbeats import heartbeat

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
TARGET = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0")
PREVIOUS = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")


def rollout(phases: dict[str, HostPhase], **changes: Any) -> RolloutRecord:
    spec = changes.pop("spec", RolloutSpec(max_unavailable=1, selector={"role": "web"}))
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=spec,
        target=TARGET,
        previous=PREVIOUS,
        hosts={h: HostRecord(phase=p, since=NOW) for h, p in phases.items()},
        status=RolloutStatus.RUNNING,
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
    )
    return record.model_copy(update=changes)


def fleet(**roles: str) -> dict[str, Any]:
    return {host: heartbeat(host, {"role": role}, PREVIOUS, NOW) for host, role in roles.items()}


RUNNING = {"a": HostPhase.DONE, "b": HostPhase.UPDATING, "c": HostPhase.READY}


def test_a_live_host_on_the_selector_that_the_rollout_lacks_joins_it() -> None:
    live = fleet(a="web", b="web", c="web", back="web", db="db")
    assert joining_hosts(rollout(RUNNING), live) == ["back"]


def test_a_host_whose_last_heartbeat_is_too_old_is_not_live_and_does_not_join() -> None:
    facts = fleet(a="web", back="web")
    facts["back"] = facts["back"].model_copy(update={"sent_at": NOW - timedelta(seconds=31)})
    live = live_facts(facts, NOW, timedelta(seconds=30))
    assert sorted(live) == ["a"]
    assert joining_hosts(rollout(RUNNING), live) == []


CONFIG = ConfigTarget(
    name="app.conf",
    document=ConfigDocument(
        service="web", name="app.conf", version=2, content=ConfigContent.of(b"x"), changed_at=NOW
    ),
)
NOT_TAKING = {
    "canary not promoted": {"spec": RolloutSpec(canary=1)},
    "partitioned": {"partition": 1},
    "blue-green": {"spec": RolloutSpec(strategy=Strategy.BLUE_GREEN)},
    "config": {"config": CONFIG},
    "convergence": {"converging": True},
    "removal": {"converging": True, "removing": True},
    "aborted": {"aborted": True},
    **{
        status.value: {"status": status}
        for status in RolloutStatus
        if status not in (RolloutStatus.PREFLIGHT, RolloutStatus.RUNNING)
    },
    # Paused for failures: more hosts would dilute the failure ratio and roll on.
    "paused for failures": {"status": RolloutStatus.PAUSED},
    "paused by the operator": {"status": RolloutStatus.PAUSED, "paused": True},
}


@pytest.mark.parametrize("changes", NOT_TAKING.values(), ids=NOT_TAKING.keys())
def test_rollouts_that_cannot_take_a_host_mid_way_take_nobody(changes: dict[str, Any]) -> None:
    live = fleet(a="web", b="web", c="web", back="web")
    assert joining_hosts(rollout(RUNNING, **changes), live) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"status": RolloutStatus.PREFLIGHT},
        {"spec": RolloutSpec(canary=1), "promoted": True},
        {"spec": RolloutSpec(strategy=Strategy.RECREATE)},
    ],
    ids=["pre-flight", "promoted canary", "recreate"],
)
def test_rollouts_in_progress_take_a_returning_host(changes: dict[str, Any]) -> None:
    live = fleet(a="web", back="web")
    assert joining_hosts(rollout(RUNNING, **changes), live) == ["back"]


def test_a_joined_host_is_checked_first_then_updated_within_the_budget() -> None:
    record = join(rollout(RUNNING), ["back"], NOW)
    assert record.hosts["back"] == HostRecord(phase=HostPhase.PENDING, since=NOW)
    assert {h: e.phase for h, e in record.hosts.items() if h != "back"} == RUNNING
    health = {h: HostHealth(online=True, serving=h != "b") for h in record.hosts}
    checked = plan(record, health, NOW)
    assert (checked.status, checked.prepare, checked.apply) == (
        RolloutStatus.RUNNING,
        ("back",),
        (),
    )
    ready = record.model_copy(
        update={"hosts": {**record.hosts, "back": HostRecord(phase=HostPhase.READY, since=NOW)}}
    )
    # b is still updating and max_unavailable is 1: nobody else starts, the joiner waits.
    assert plan(ready, health, NOW).apply == ()
    b_done = {**ready.hosts, "b": HostRecord(phase=HostPhase.DONE, since=NOW)}
    health["b"] = HostHealth(online=True, serving=True)
    after = plan(ready.model_copy(update={"hosts": b_done}), health, NOW)
    assert after.apply == ("back",)  # host order: back before c


@pytest.mark.parametrize(
    ("changes", "takes"),
    [
        ({"converging": True}, True),
        ({"converging": True, "status": RolloutStatus.PREFLIGHT}, True),
        ({"converging": True, "removing": True}, False),
        ({"converging": True, "paused": True}, False),
        ({"converging": True, "aborted": True}, False),
        ({"converging": True, "status": RolloutStatus.COMPLETE}, False),
        ({}, False),
    ],
    ids=["running", "pre-flight", "removal", "paused", "aborted", "complete", "operator's"],
)
def test_a_convergence_rollout_in_progress_takes_hosts_the_convergence_pass_names(
    changes: dict[str, Any], takes: bool
) -> None:
    assert takes_converging_hosts(rollout(RUNNING, **changes)) is takes


def test_a_joined_host_being_checked_holds_up_nobody_and_the_rollout_waits_for_it() -> None:
    done = HostRecord(phase=HostPhase.DONE, since=NOW)
    record = join(
        rollout({"a": HostPhase.DONE, "b": HostPhase.DONE, "c": HostPhase.READY}), ["back"], NOW
    )
    health = {h: HostHealth(online=True, serving=True) for h in record.hosts}
    both = plan(record, health, NOW)
    # c goes on with its update while the joiner is checked.
    assert (both.status, both.prepare, both.apply) == (RolloutStatus.RUNNING, ("back",), ("c",))
    # Everyone else done: the rollout is not complete while the joiner is being checked...
    checking = {**record.hosts, "c": done, "back": HostRecord(phase=HostPhase.PREPARING, since=NOW)}
    waiting = plan(record.model_copy(update={"hosts": checking}), health, NOW)
    assert (waiting.status, waiting.prepare, waiting.apply) == (RolloutStatus.RUNNING, (), ())
    # ...then it takes its turn, and then it is.
    ready = {**checking, "back": HostRecord(phase=HostPhase.READY, since=NOW)}
    assert plan(record.model_copy(update={"hosts": ready}), health, NOW).apply == ("back",)
    over = {**ready, "back": done}
    assert plan(record.model_copy(update={"hosts": over}), health, NOW).status is (
        RolloutStatus.COMPLETE
    )
