"""The command the leader sends for each phase of a host in an app's rollout, and how
long it waits for the answer (README, "Apps from Compose files"): built without a bus."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from controller.compose.project import compose_app
from controller.leader.dispatch import Dispatch
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutSpec
from controller.settings import ControllerSettings
from protocol.app import AppSpec
from protocol.models import ApplyAppCommand, PrepareAppCommand, RemoveCommand
from tests.node_agent.apps.app_files import APP_FILE

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
OLD, NEW = f"sha256:{'a' * 64}", f"sha256:{'b' * 64}"
DEPENDENCY_WAIT = 120.0
"""README: a member waits up to 120 s for each dependency's condition."""


def shop(tmp_path: Path, web_tag: str) -> AppSpec:
    path = tmp_path / "compose.yaml"
    path.write_text(APP_FILE)
    return compose_app(path, "shop", {"REGISTRY": "r.local", "WEB_TAG": web_tag}).app


def rollout(tmp_path: Path, phase: HostPhase, *, removing: bool = False) -> RolloutRecord:
    digests = {"migrate": OLD, "cache": OLD, "web": NEW}
    entry = HostRecord(phase=phase, since=NOW, command_id="c1", digests=digests)
    return RolloutRecord(
        id="shop-r2", service="shop", revision=2, spec=RolloutSpec(),
        target=shop(tmp_path, "1.1.0"), previous=shop(tmp_path, "1.0.0"),
        hosts={"h1": entry}, removing=removing,
        created_at=NOW, updated_at=NOW, last_progress_at=NOW,
    )  # fmt: skip


def built(record: RolloutRecord) -> tuple[object, float]:
    dispatch = Dispatch(None, ControllerSettings(), asyncio.Event(), {})  # type: ignore[arg-type]
    return dispatch._build(record, "h1", "c1", check=False)


def test_an_update_sends_the_whole_app_each_member_pinned_to_what_its_host_pulled(
    tmp_path: Path,
) -> None:
    command, timeout = built(rollout(tmp_path, HostPhase.UPDATING))
    assert isinstance(command, ApplyAppCommand)
    assert {m.name: m.spec.image for m in command.app.members} == {
        "migrate": f"r.local/demo/web:1.0.0@{OLD}",
        "cache": f"r.local/demo/web:1.0.0@{OLD}",
        "web": f"r.local/demo/web:1.1.0@{NEW}",
    }
    # The worst case by the README's rules, from the file's own values: each member
    # stopped (10 s, the default grace) and checked (the cache's check: 60 s at least; a
    # member with no check: up to 30 s), and again if it is put back; web waiting for
    # the cache and for the migration (120 s each); then the command slack.
    stop, cache_check, unchecked = 10.0, 60.0, 30.0
    worst = 2 * (3 * stop + cache_check + 2 * unchecked) + 2 * DEPENDENCY_WAIT
    assert timeout == worst + ControllerSettings().command_slack


def test_a_revert_sends_the_previous_app(tmp_path: Path) -> None:
    command, _ = built(rollout(tmp_path, HostPhase.REVERTING))
    assert isinstance(command, ApplyAppCommand)
    assert command.app.member("web").spec.image == "r.local/demo/web:1.0.0"


def test_a_pre_flight_is_one_command_for_the_app_and_a_removal_names_the_app(
    tmp_path: Path,
) -> None:
    check, timeout = built(rollout(tmp_path, HostPhase.PREPARING))
    assert isinstance(check, PrepareAppCommand)
    assert timeout == 3 * ControllerSettings().prepare_timeout  # three pulls, in turn
    removal, _ = built(rollout(tmp_path, HostPhase.UPDATING, removing=True))
    assert isinstance(removal, RemoveCommand)
    assert removal.service == "shop"


def test_an_update_that_drops_a_member_waits_for_each_of_its_copies_to_stop(
    tmp_path: Path,
) -> None:
    record = rollout(tmp_path, HostPhase.UPDATING)
    previous = record.previous
    assert isinstance(previous, AppSpec)
    worker = previous.member("web").model_copy(
        update={
            "name": "worker",
            "depends_on": (),
            "spec": previous.member("web").spec.model_copy(
                update={"name": "shop-worker", "stop_grace_period": 7.0}
            ),
        }
    )
    had_worker = previous.model_copy(update={"members": (*previous.members, worker)})
    _, without = built(record)
    _, dropping = built(record.model_copy(update={"previous": had_worker}))
    # The update removes it: each of its five possible copies (serving, set aside, next,
    # either colour) stopped in turn, as a removal allows for.
    assert dropping - without == 5 * 7.0
