"""Fleet rollouts end to end: fleetctl, a controller process, five agents, real Docker."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from protocol import subjects
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import BudgetChecker

pytestmark = pytest.mark.integration


async def recorder(fleet: LocalFleet) -> EventRecorder:
    return EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD)


async def test_a_rolling_update_reaches_every_host_within_max_unavailable(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    assert set((await fleet.versions()).values()) == {"1.0.0"}
    async with await recorder(fleet) as events:
        result = await fleet.roll(
            "1.1.0",
            "--max-unavailable",
            "2",
            "-w",
        )
    assert result.code == 0, (result, fleet.controller.log_text())
    assert set((await fleet.versions()).values()) == {"1.1.0"}
    checker = BudgetChecker.of(events)
    assert checker.peak() <= 2
    assert checker.updates_per_host() == {agent.api.host: 1 for agent in fleet.agents}


async def rollout_json(fleet: LocalFleet, target: str = "web") -> dict[str, Any]:
    result = await fleet.fleetctl("rollout", "status", target, "-o", "json")
    assert result.code == 0, result
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def host_reaches(fleet: LocalFleet, host: str, phase: str, deadline: float = 60) -> None:
    async def poll() -> None:
        while True:
            if (await rollout_json(fleet))["hosts"][host]["phase"] == phase:
                return
            await asyncio.sleep(0.2)

    await asyncio.wait_for(poll(), deadline)


async def offline_longer_than(
    fleet: LocalFleet, host: str, seconds: float, deadline: float = 60
) -> dict[str, Any]:
    """The rollout's state once it shows ``host`` offline for more than ``seconds``."""

    async def poll() -> dict[str, Any]:
        while True:
            state = await rollout_json(fleet)
            away = state["hosts"][host].get("offline_for")
            if away is not None and away > seconds:
                return state
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), deadline)


def tags(versions: dict[str, str | None]) -> list[str | None]:
    return [versions[host] for host in sorted(versions)]


async def test_a_crashing_image_stops_at_the_failure_ratio_and_touches_no_more_hosts(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    async with await recorder(fleet) as events:
        result = await fleet.roll(
            "3.0.0-crash",
            "--allow-major",
            "--max-unavailable",
            "2",
            "-w",
        )
    assert result.code == 10, result  # paused, waiting for the operator
    state = await rollout_json(fleet)
    assert state["status"] == "paused"
    assert "failed" in state["reason"]
    failed = sorted(h for h, e in state["hosts"].items() if e["phase"] == "failed")
    untouched = sorted(h for h, e in state["hosts"].items() if e["phase"] == "ready")
    # The first failure stops new work; at most the other host in flight also failed.
    assert 1 <= len(failed) <= 2
    assert len(failed) + len(untouched) == 5
    details = {h: e["detail"] for h, e in state["hosts"].items()}
    assert tags(await fleet.versions()) == ["1.0.0"] * 5, details
    checker = BudgetChecker.of(events)
    assert sorted(checker.updates_per_host()) == failed


async def test_with_failure_action_revert_every_host_ends_on_the_old_version_and_healthy(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    result = await fleet.roll(
        "3.0.0-crash",
        "--allow-major",
        "--max-unavailable",
        "2",
        "--failure-action",
        "revert",
        "-w",
    )
    assert result.code == 1, result
    assert (await rollout_json(fleet))["status"] == "reverted"
    assert tags(await fleet.versions()) == ["1.0.0"] * 5


async def test_canary_waits_for_promote_and_abort_reverts_only_the_updated_hosts(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    image = fleet.stack.demo_image("1.1.0")
    waiting = await fleet.fleetctl(
        "rollout", "start", "web", "--image", image, "--canary", "2", "-w"
    )
    assert waiting.code == 10, waiting
    assert (await rollout_json(fleet))["status"] == "awaiting_promotion"
    assert tags(await fleet.versions()) == ["1.1.0", "1.1.0", "1.0.0", "1.0.0", "1.0.0"]

    promoted = await fleet.fleetctl("rollout", "promote", "web")
    assert promoted.code == 0, promoted
    done = await fleet.fleetctl("rollout", "status", "web", "-w")
    assert done.code == 0, done
    assert tags(await fleet.versions()) == ["1.1.0"] * 5

    again = await fleet.roll(
        "2.0.0",
        "--allow-major",
        "--canary",
        "1",
        "-w",
    )
    assert again.code == 10, again
    aborted = await fleet.fleetctl("rollout", "abort", "web")
    assert aborted.code == 0, aborted
    end = await fleet.fleetctl("rollout", "status", "web", "-w")
    assert end.code == 1, end
    assert (await rollout_json(fleet))["status"] == "aborted"
    assert tags(await fleet.versions()) == ["1.1.0"] * 5


async def test_lowering_the_partition_in_steps_updates_hosts_from_the_top_down(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    image = fleet.stack.demo_image("1.1.0")
    held = await fleet.fleetctl(
        "rollout", "start", "web", "--image", image, "--partition", "3", "-w"
    )
    assert held.code == 10, held
    assert tags(await fleet.versions()) == ["1.0.0", "1.0.0", "1.0.0", "1.1.0", "1.1.0"]
    assert (await fleet.fleetctl("rollout", "partition", "web", "1")).code == 0
    assert (await fleet.fleetctl("rollout", "status", "web", "-w")).code == 10
    assert tags(await fleet.versions()) == ["1.0.0", "1.1.0", "1.1.0", "1.1.0", "1.1.0"]
    assert (await fleet.fleetctl("rollout", "partition", "web", "0")).code == 0
    assert (await fleet.fleetctl("rollout", "status", "web", "-w")).code == 0
    assert tags(await fleet.versions()) == ["1.1.0"] * 5


async def test_a_failed_pre_flight_touches_nothing_and_names_the_host_and_its_reason(
    fleet_factory: FleetFactory,
) -> None:
    # Host 2 refuses plain HTTP to the loopback registry: it can never be ready.
    fleet = await fleet_factory(
        5, agent_env={2: {"FLEET_LOOPBACK_REGISTRIES_INSECURE": "false"}}, deploy_min_ready="80%"
    )
    before = await fleet.versions()
    async with await recorder(fleet) as events:
        result = await fleet.roll("1.1.0", "-w")
    assert result.code == 1, result
    state = await rollout_json(fleet)
    assert state["status"] == "failed"
    bad_host = fleet.agents[2].api.host
    assert f"{bad_host}: registry_tls" in state["reason"]
    assert await fleet.versions() == before
    checker = BudgetChecker.of(events)
    assert checker.updates_per_host() == {}


async def test_a_controller_killed_mid_rollout_is_replaced_by_a_standby_that_finishes_it(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    standby = fleet.another_controller("c1")
    await standby.start()
    try:
        async with await recorder(fleet) as events:
            started = await fleet.roll(
                "1.1.0",
                "--max-unavailable",
                "1",
                "--min-healthy-time",
                "2",
            )
            assert started.code == 0, started
            await host_reaches(fleet, fleet.agents[0].api.host, "done")
            fleet.controller.kill()
            finished = await fleet.fleetctl("rollout", "status", "web", "-w")
        assert finished.code == 0, (finished, standby.log_text())
        assert "is the leader" in standby.log_text()
        assert tags(await fleet.versions()) == ["1.1.0"] * 5
        checker = BudgetChecker.of(events)
        assert checker.peak() <= 1
        assert checker.updates_per_host() == {agent.api.host: 1 for agent in fleet.agents}
    finally:
        await standby.stop()


async def test_a_frozen_agent_counts_as_unavailable_and_the_rollout_waits_for_it(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(5)
    frozen = fleet.agents[4]
    frozen.process.send(signal.SIGSTOP)
    try:
        started = await fleet.roll(
            "1.1.0",
            "--max-unavailable",
            "1",
        )
        assert started.code == 0, started
        # Until the controller has counted it offline for longer than its 6 s host timeout,
        # it had every pass it needed to start another host, had it ignored the outage.
        state = await offline_longer_than(fleet, frozen.api.host, seconds=8)
        assert state["status"] in {"preflight", "running"}
        assert state["hosts"][frozen.api.host]["phase"] in {"preparing", "pending"}
    finally:
        frozen.process.send(signal.SIGCONT)
    done = await fleet.fleetctl("rollout", "status", "web", "-w")
    assert done.code == 0, done
    assert tags(await fleet.versions()) == ["1.1.0"] * 5


async def test_a_frozen_agent_fails_the_rollout_at_the_progress_deadline(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(3)
    fleet.agents[1].process.send(signal.SIGSTOP)
    try:
        result = await fleet.roll(
            "1.1.0",
            "--progress-deadline",
            "8",
            "-w",
        )
    finally:
        fleet.agents[1].process.send(signal.SIGCONT)
    assert result.code == 1, result
    state = await rollout_json(fleet)
    assert state["status"] == "failed"
    assert "deadline" in state["reason"]
    assert tags(await fleet.versions()) == ["1.0.0"] * 3


async def test_dry_run_conflicts_undo_history_and_bad_input_through_fleetctl(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(2)
    new_image = fleet.stack.demo_image("1.1.0")
    dry = await fleet.fleetctl("rollout", "start", "web", "--image", new_image, "--dry-run")
    assert dry.code == 0, dry
    assert "pre-flight" in dry.stdout
    assert "would end: complete" in dry.stdout
    assert (await rollout_json(fleet))["id"] == "web-r1"  # the dry run wrote nothing

    gated = await fleet.fleetctl(
        "rollout",
        "start",
        "web",
        "--image",
        new_image,
        "--strategy",
        "canary",
        "--canary",
        "1",
        "-w",
    )
    assert gated.code == 10, gated
    refused = await fleet.fleetctl("rollout", "start", "web", "--image", new_image)
    assert refused.code == 3, refused
    assert "still in progress" in refused.stderr
    assert (await fleet.fleetctl("rollout", "promote", "web")).code == 0
    assert (await fleet.fleetctl("rollout", "status", "web", "-w")).code == 0
    assert tags(await fleet.versions()) == ["1.1.0", "1.1.0"]

    undone = await fleet.fleetctl("rollout", "undo", "web", "-w")
    assert undone.code == 0, undone
    assert tags(await fleet.versions()) == ["1.0.0", "1.0.0"]
    history = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
    assert history.code == 0, history
    parsed = json.loads(history.stdout)
    assert [r["revision"] for r in parsed["revisions"]] == [1, 2, 3]
    assert parsed["current"] == 3
    # Every revision's image was pinned to its digest when its rollout started.
    assert parsed["revisions"][2]["spec"]["image"].startswith(
        fleet.stack.demo_image("1.0.0") + "@sha256:"
    )

    invalid = await fleet.fleetctl("rollout", "start", "web", "--image", "Not A/Valid:Ref")
    assert invalid.code == 2, invalid
    unknown = await fleet.fleetctl("rollout", "status", "no-such-service")
    assert unknown.code == 4, unknown
    finished = await fleet.fleetctl("rollout", "pause", "web")
    assert finished.code == 3, finished
