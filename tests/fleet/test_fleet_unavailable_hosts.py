"""An unavailable host is visible as such, through fleetctl, on a real fleet.

One agent is frozen (SIGSTOP) in the middle of its update while another probes a slow
new version: `rollout status` shows the frozen one offline for a growing time, the
rollout that misses its progress deadline names both and why, and `fleetctl hosts`
marks the frozen host stale. The README's rule is the oracle: a host is offline when no
heartbeat came within the host timeout (the fixture controller's --host-timeout).
"""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from protocol import subjects
from protocol.models import RolloutEvent, utc_now
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import HOST_TIMEOUT, fleet_spec
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

T = TypeVar("T")
DEADLINE = 30
"""The rollout's --progress-deadline: room to see the frozen host go offline first."""
SLOW_SECONDS = 120
"""The slow build answers 503 this long: still probing when the deadline passes."""
HEARTBEAT_SLACK = timedelta(seconds=5)
"""The test agents beat every second; a loaded machine may delay the last one."""
FLEETCTL_ENV = {"FLEET_HOST_TIMEOUT": f"{HOST_TIMEOUT.total_seconds():g}"}
"""fleetctl hosts judges staleness with the same timeout as the fixture controller."""


async def status(fleet: LocalFleet) -> dict[str, Any]:
    result = await fleet.fleetctl("rollout", "status", "web", "-o", "json")
    assert result.code == 0, result
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def hosts(fleet: LocalFleet) -> dict[str, dict[str, Any]]:
    result = await fleet.fleetctl("hosts", "-o", "json", env=FLEETCTL_ENV)
    assert result.code == 0, result
    return {host["host"]: host for host in json.loads(result.stdout)}


def slow_spec(fleet: LocalFleet) -> str:
    """demo/web 3.0.2-slow, whose health check fails for SLOW_SECONDS after start."""
    spec = fleet_spec(fleet.stack.demo_image("3.0.2-slow"), deadline=SLOW_SECONDS + 60)
    container = spec.container.model_copy(
        update={"env": {**spec.container.env, "SLOW_SECONDS": str(SLOW_SECONDS)}}
    )
    path = fleet.work_dir / "web-slow.json"
    path.write_text(spec.model_copy(update={"container": container}).model_dump_json())
    return str(path)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_frozen_agent_is_shown_offline_named_by_the_deadline_and_listed_stale(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(3)
    frozen, probing, idle = (agent.api.host for agent in fleet.agents)  # in host order
    rollouts = subjects.controller_event_subject("rollout")
    async with EventRecorder(fleet.agents[2].api.client, rollouts) as events:
        started = await fleet.fleetctl(
            *("rollout", "start", "web", "--spec", slow_spec(fleet), "--allow-major"),
            *("--max-unavailable", "2", "--progress-deadline", str(DEADLINE)),
        )
        assert started.code == 0, started
        updating = await eventually(
            lambda: status(fleet),
            lambda s: s["hosts"][frozen]["phase"] == s["hosts"][probing]["phase"] == "updating",
            "two hosts updating",
        )
        assert updating["hosts"][idle]["phase"] == "ready"
        fleet.agents[0].process.send(signal.SIGSTOP)
        frozen_at = utc_now()  # after the signal: no heartbeat of it can be newer
        try:
            offline = await eventually(
                lambda: status(fleet),
                lambda s: s["hosts"][frozen]["offline_for"] is not None,
                f"{frozen} offline",
            )
            first = offline["hosts"][frozen]
            # Its last heartbeat came before the freeze, and is older than the timeout.
            since = at(first["offline_since"])
            assert frozen_at - HEARTBEAT_SLACK <= since <= frozen_at
            assert first["offline_for"] > HOST_TIMEOUT.total_seconds()
            assert first["phase"] == "updating"
            later = await eventually(
                lambda: status(fleet),
                lambda s: s["hosts"][frozen]["offline_for"] > first["offline_for"],
                "the offline time growing",
            )
            assert at(later["hosts"][frozen]["offline_since"]) == since
            for state in (offline, later):
                assert state["hosts"][probing]["offline_for"] is None
                assert state["hosts"][idle]["offline_for"] is None
            assert later["hosts"][probing]["detail"] == "probing"  # the agent's own phase

            listed = await hosts(fleet)
            assert listed[frozen]["status"] == "stale"
            assert at(listed[frozen]["sent_at"]) <= frozen_at
            assert listed[frozen]["heartbeat_age"] > HOST_TIMEOUT.total_seconds()
            assert {s["health"] for s in listed[frozen]["services"]} == {"unknown"}
            for alive in (probing, idle):
                assert listed[alive]["status"] == "up"
                assert at(listed[alive]["sent_at"]) > frozen_at  # it kept beating
            table = await fleet.fleetctl("hosts", env=FLEETCTL_ENV)
            assert table.code == 0, table
            rows = {line.split()[0]: line for line in table.lines[1:]}
            assert " stale " in rows[frozen]
            assert " stale " not in rows[probing]
            assert " stale " not in rows[idle]

            ended = await fleet.fleetctl("rollout", "status", "web", "-w")
            assert ended.code == 1, (ended, fleet.controller.log_text())
            failed = await events.wait_for(
                lambda m: isinstance(m, RolloutEvent) and m.status == "failed"
            )
            piped = await fleet.fleetctl("rollout", "status", "web")
        finally:
            fleet.agents[0].process.send(signal.SIGCONT)

    final = await status(fleet)
    assert final["status"] == "failed"
    reason = final["reason"]
    match = re.fullmatch(
        rf"progress_deadline {DEADLINE}s passed; held up by {frozen} \(offline (\d+)s\), "
        rf"{probing} \(updating: probing\)",
        reason,
    )
    assert match is not None, reason
    assert int(match.group(1)) > HOST_TIMEOUT.total_seconds()
    assert isinstance(failed, RolloutEvent)
    assert failed.reason == reason
    assert idle not in reason

    assert piped.code == 0, piped
    cells = {line.split()[1]: line.split() for line in piped.lines if len(line.split()) > 4}
    assert cells[frozen][2] == "offline"
    assert cells[frozen][4].startswith("updating")  # the phase it is stuck in leads the detail
    assert cells[idle][2] == "ready"
    # Both updates still wait out the slow health check: a drain at teardown would only
    # wait for it (30 s), so the two agents are killed here.
    for agent in fleet.agents[:2]:
        agent.process.send(signal.SIGKILL)
