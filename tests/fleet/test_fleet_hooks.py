"""Lifecycle hooks in a declaration, across a fleet: a failing pre_update is that host's
failure, and post_rollout runs on the controller after a completed rollout only."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from nats.aio.client import Client

from protocol import subjects
from protocol.models import HookName, HookRun
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import fleet_spec

pytestmark = pytest.mark.integration


def declared(fleet: LocalFleet, name: str, tag: str, hooks: dict[str, Any]) -> str:
    document = {
        **fleet_spec(fleet.stack.demo_image(tag)).model_dump(mode="json"),
        "hooks": hooks,
        "update": {"max_unavailable": 1, "failure_action": "revert"},
    }
    path = fleet.work_dir / f"{name}.json"
    path.write_text(json.dumps(document))
    return str(path)


async def leader_passes(client: Client, count: int) -> None:
    """Wait until the leader has renewed its lease ``count`` more times: it renews at the
    start of each full pass, so ``count - 1`` full passes went by, each of which would
    have run a post_rollout hook again had it not been done."""
    kv = await client.jetstream(timeout=5).key_value(subjects.ROLLOUTS_BUCKET)
    watcher = await kv.watch("leader")
    renewals = -1  # the first entry is the lease as it stands
    try:
        while renewals < count:
            entry = await watcher.updates(timeout=10)  # type: ignore[no-untyped-call]  # nats-py: KeyWatcher is unannotated
            renewals += entry is not None
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


def post_rollout_runs(events: EventRecorder) -> list[HookRun]:
    return [
        m
        for _, m in events.messages
        if isinstance(m, HookRun) and m.result.hook is HookName.POST_ROLLOUT
    ]


async def test_a_failing_pre_update_fails_its_host_and_post_rollout_follows_only_a_completed_one(
    fleet_factory: FleetFactory,
) -> None:
    allowed = {"FLEET_ALLOW_HOST_HOOKS": "true", "FLEET_ALLOW_HOOKS": "true"}
    fleet = await fleet_factory(2, env=allowed)
    refusing, other = (agent.api.host for agent in fleet.agents)
    ran = fleet.work_dir / "post-rollout"
    post_rollout = {
        "command": [
            "sh",
            "-c",
            f'echo "$FLEET_SERVICE $FLEET_REVISION $FLEET_HOSTS $FLEET_IMAGE" >> {ran}',
        ]
    }
    pre_update = {
        "run_in": "host",
        "command": ["sh", "-c", f'[ "$FLEET_HOST" != {refusing} ] || {{ echo busy; exit 4; }}'],
    }
    hooked = declared(
        fleet, "refused", "1.1.0", {"pre_update": pre_update, "post_rollout": post_rollout}
    )

    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        failed = await fleet.fleetctl("apply", "-f", hooked, "-w")
        assert failed.code == 1, failed  # reverted
        status = json.loads((await fleet.fleetctl("rollout", "status", "web", "-o", "json")).stdout)
        assert status["status"] == "reverted", status
        detail = status["hosts"][refusing]["detail"]
        assert detail == "rolled_back: the pre_update hook exited 4: busy", status
        assert await fleet.versions() == {refusing: "1.0.0", other: "1.0.0"}
        refused = [m for _, m in events.messages if isinstance(m, HookRun) and m.host == refusing]
        assert [(m.result.hook, m.result.exit_code, m.result.output) for m in refused] == [
            (HookName.PRE_UPDATE, 4, "busy\n")
        ]

        plain = declared(fleet, "accepted", "1.1.0", {"post_rollout": post_rollout})
        applied = await fleet.fleetctl("apply", "-f", plain, "-w")
        assert applied.code == 0, applied
        await events.wait_for(
            lambda m: isinstance(m, HookRun) and m.result.hook is HookName.POST_ROLLOUT
        )
        await leader_passes(fleet.agents[0].api.client, 5)
    accepted = json.loads((await fleet.fleetctl("rollout", "status", "web", "-o", "json")).stdout)
    (run,) = post_rollout_runs(events)  # none after the reverted rollout
    assert (run.result.ok, run.host, run.rollout_id) == (True, None, accepted["id"])
    assert run.sender == fleet.controller.controller_id
    image = fleet.stack.demo_image("1.1.0")
    # Once, with the revision, the host count and the image as the rollout pinned it.
    assert re.fullmatch(f"web 3 2 {re.escape(image)}@sha256:[0-9a-f]{{64}}\n", ran.read_text())
