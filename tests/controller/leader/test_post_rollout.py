"""post_rollout: after a completed operator rollout only, and only where the controller
allows hooks. The hook runs for real (a subprocess); its event is collected in memory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.leader.post_rollout import HOOKS_OFF, PostRolloutHooks, runs_post_rollout
from controller.rollouts.model import RolloutRecord, RolloutSpec, RolloutStatus
from protocol.models import Envelope, HookRun
from protocol.spec import ControllerHook, Hooks, ServiceSpec

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def completed(marker: Path, **changes: Any) -> RolloutRecord:
    hook = ControllerHook(command=("sh", "-c", f'echo "$FLEET_SERVICE" > {marker}'))
    target = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0")
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(),
        target=target.model_copy(update={"hooks": Hooks(post_rollout=hook)}),
        hosts={},
        status=RolloutStatus.COMPLETE,
        created_at=NOW,
        updated_at=NOW,
        last_progress_at=NOW,
    )
    return record.model_copy(update=changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": RolloutStatus.FAILED},
        {"status": RolloutStatus.REVERTED},
        {"status": RolloutStatus.ABORTED},
        {"converging": True},
        {"converging": True, "removing": True},
    ],
    ids=["failed", "reverted", "aborted", "convergence", "removal"],
)
def test_post_rollout_follows_only_a_completed_operator_rollout(
    changes: dict[str, Any], tmp_path: Path
) -> None:
    assert runs_post_rollout(completed(tmp_path / "m"))
    assert not runs_post_rollout(completed(tmp_path / "m", **changes))


async def run_once(allowed: bool, record: RolloutRecord) -> HookRun:
    told: list[Envelope] = []
    published = asyncio.Event()

    async def publish(subject: str, event: Envelope) -> None:
        told.append(event)
        published.set()

    hooks = PostRolloutHooks(publish, "c0", allowed)
    hooks.start(record)
    await asyncio.wait_for(published.wait(), 30)
    await hooks.close()
    (event,) = told
    assert isinstance(event, HookRun)
    return event


async def test_a_controller_that_does_not_allow_hooks_runs_none_and_says_so(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    refused = await run_once(False, completed(marker))
    assert (refused.result.ok, refused.result.output) == (False, HOOKS_OFF)
    assert not marker.exists()
    ran = await run_once(True, completed(marker))
    assert (ran.result.ok, ran.result.exit_code) == (True, 0)
    assert marker.read_text() == "web\n"
