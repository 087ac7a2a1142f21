"""Canary analysis on a real fleet: a restart on the canary stops the rollout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import docker
import pytest

from tests.conftest import FleetFactory, LocalFleet

pytestmark = pytest.mark.integration
FAST_METRICS = {"FLEET_METRICS_INTERVAL": "0.5"}


async def status_of(fleet: LocalFleet) -> dict[str, Any]:
    result = await fleet.fleetctl("rollout", "status", "web", "-o", "json")
    assert result.code == 0, result
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def settled(fleet: LocalFleet) -> dict[str, Any]:
    """The rollout once it is finished (-w stops early, at awaiting_promotion)."""
    for _ in range(150):
        record = await status_of(fleet)
        if record["status"] in ("reverted", "failed", "complete", "paused"):
            return record
        await asyncio.sleep(0.2)
    raise AssertionError(f"the rollout never finished: {record}")


async def test_a_canary_whose_container_restarts_trips_the_restart_check_and_is_reverted(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(3, agent_env=dict.fromkeys(range(3), FAST_METRICS))
    waiting = await fleet.roll(
        "1.1.0",
        "--canary",
        "1",
        "--check",
        "restarts<=0",
        "--check",
        "memory=memory_ratio<=50",
        "--failure-action",
        "revert",
        "-w",
    )
    assert waiting.code == 10, waiting
    record = await status_of(fleet)
    assert record["status"] == "awaiting_promotion"
    assert record["baseline_memory"] > 0  # the old version's median, measured at the start
    canary = next(h for h, entry in record["hosts"].items() if entry["phase"] == "done")
    agent = next(a for a in fleet.agents if a.api.host == canary)

    # The canary's container dies; its restart policy brings it back, so the host stays
    # healthy to the agent, and only the metrics tell that it restarted.
    container = docker_client.containers.get(agent.container("web"))
    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
    for _ in range(150):
        record = await status_of(fleet)
        if record["status"] in ("reverted", "failed", "complete"):
            break
        await asyncio.sleep(0.2)
    top = (await fleet.fleetctl("top", "-o", "json")).stdout
    assert record["status"] == "reverted", (
        record["hosts"],
        top,
        fleet.controller.log_text()[-3000:],
    )
    assert "analysis check restarts failed: restarts = 1, limit 0" in record["reason"]
    versions = await fleet.versions()
    assert set(versions.values()) == {"1.0.0"}


async def test_checks_that_hold_let_the_canary_be_promoted(fleet_factory: FleetFactory) -> None:
    fleet = await fleet_factory(2, agent_env=dict.fromkeys(range(2), FAST_METRICS))
    done = await fleet.roll(
        "1.1.0", "--canary", "1", "--auto-promote-after", "3", "--check", "restarts<=0", "-w"
    )
    assert done.code == 10, done  # the canary waits; then it promotes itself
    record = await settled(fleet)
    assert record["status"] == "complete", record
    assert record["analysis_failure"] is None
    assert set((await fleet.versions()).values()) == {"1.1.0"}
