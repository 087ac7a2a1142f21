"""An app as the controller sees it, by the README's rules ("Apps from Compose files"):
its declaration from a Compose file's x-fleetwave block, what applying it changes, how a
host's heartbeat line for it is judged, and the commands a rollout of it sends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.compose.project import compose_app
from controller.rollouts.commands import pinned_app, prepare_command
from controller.rollouts.convergence import Desired, DriftPolicy, Need, host_need
from controller.rollouts.declaration import Change, Declaration, change_of
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutSpec
from controller.rollouts.transitions import reply_news
from controller.rollouts.workload import target_of
from node_agent.apps.status import app_status
from protocol.app import AppSpec, Condition, Member, NamedVolume
from protocol.errors import ConfigurationError
from protocol.models import (
    ContainerState,
    Health,
    PrepareAppCommand,
    PrepareReply,
    ServiceStatus,
)
from protocol.spec import ServiceSpec
from tests.node_agent.apps.app_files import APP_FILE
from tests.support.heartbeats import facts_with

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
DIGEST = {tag: f"sha256:{c * 64}" for tag, c in (("1.0.0", "a"), ("1.1.0", "b"))}


def shop(tmp_path: Path, **tags: str) -> AppSpec:
    path = tmp_path / "compose.yaml"
    path.write_text(APP_FILE)
    return compose_app(path, "shop", {"REGISTRY": "registry.local", **tags}).app


def pinned_everywhere(app: AppSpec) -> AppSpec:
    """Each member pinned as a rollout pins it (``repo:tag@digest`` of its tag), written
    out here rather than by the code under test."""

    def pinned(member: Member) -> Member:
        image = member.spec.image
        if "@" not in image:
            image = f"{image}@{DIGEST[image.rsplit(':', 1)[1]]}"
        return member.model_copy(update={"spec": member.spec.model_copy(update={"image": image})})

    found = app.model_copy(update={"members": tuple(pinned(m) for m in app.members)})
    assert all("@" in member.spec.image for member in found.members)
    return found


def running(app: AppSpec) -> ServiceStatus:
    """The app's heartbeat line, as an agent that applied ``app`` sends it: every member
    running (the migration ended, done)."""
    members = {
        m.name: ServiceStatus(name=m.spec.name, state=ContainerState.RUNNING, health=Health.HEALTHY)
        for m in app.members
    }
    return app_status(app, dict(members), set())


def with_member(app: AppSpec, changed: Member) -> AppSpec:
    members = tuple(changed if m.name == changed.name else m for m in app.members)
    return app.model_copy(update={"members": members})


def test_the_x_fleetwave_block_gives_the_selector_the_update_policy_and_the_drift_rule(
    tmp_path: Path,
) -> None:
    app = shop(tmp_path)
    declared = Declaration.of_app(
        app, {"selector": {"role": "edge"}, "update": {"max_unavailable": 1}, "drift": "report"}
    )
    assert declared.spec == app
    assert declared.policy == RolloutSpec(max_unavailable=1, selector={"role": "edge"})
    assert declared.drift is DriftPolicy.REPORT
    assert Declaration.of_app(app, {}).policy == RolloutSpec()


def test_a_key_the_x_fleetwave_block_does_not_take_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"x-fleetwave\.strategy: not a key of Fleetwave's"):
        Declaration.of_app(shop(tmp_path), {"strategy": "canary"})
    checks = {"analysis": [{"name": "restarts", "metric": "restarts", "max": 0}]}
    with pytest.raises(ValueError, match=r"x-fleetwave\.update\.analysis: analysis checks"):
        Declaration.of_app(shop(tmp_path), {"update": checks})
    with pytest.raises(ValidationError) as raised:
        Declaration.of_app(shop(tmp_path), {"update": {"max_unavailable": "many"}})
    assert raised.value.errors()[0]["loc"][:2] == ("update", "max_unavailable")


def test_applying_an_app_again_rolls_only_when_a_member_changed(tmp_path: Path) -> None:
    accepted = pinned_everywhere(shop(tmp_path))  # as the last rollout left it: pinned
    policy = RolloutSpec()

    def change(**tags: str) -> Change:
        declared = Declaration.of_app(shop(tmp_path, **tags), {})
        return change_of(declared, accepted, policy, DriftPolicy.REPAIR)

    assert change() is Change.UNCHANGED  # the tags the accepted digests pin
    assert change(WEB_TAG="1.1.0") is Change.ROLL
    assert change(MIGRATE_EXIT="1") is Change.ROLL  # a member's settings
    moved = Declaration.of_app(shop(tmp_path), {"selector": {"role": "db"}})
    assert change_of(moved, accepted, policy, DriftPolicy.REPAIR) is Change.CONFIGURE
    first = Declaration.of_app(shop(tmp_path), {})
    assert change_of(first, None, None, DriftPolicy.REPAIR) is Change.CREATE


def test_a_digest_the_file_names_for_one_member_counts_while_the_others_name_tags(
    tmp_path: Path,
) -> None:
    named = {"MIGRATE_TAG": f"1.0.0@{DIGEST['1.0.0']}"}
    accepted = pinned_everywhere(shop(tmp_path, **named))
    policy = RolloutSpec()

    def change(**tags: str) -> Change:
        declared = Declaration.of_app(shop(tmp_path, **tags), {})
        return change_of(declared, accepted, policy, DriftPolicy.REPAIR)

    assert change(**named) is Change.UNCHANGED
    assert change(MIGRATE_TAG=f"1.0.0@{DIGEST['1.1.0']}") is Change.ROLL  # another digest


def test_a_service_cannot_become_an_app_of_its_name_nor_back(tmp_path: Path) -> None:
    app = shop(tmp_path)
    service = ServiceSpec(name="shop", image="registry.local/demo/web:1.0.0")
    with pytest.raises(ConfigurationError, match="shop is a service: an app cannot take its"):
        target_of(app, None, blue_green=False, known=service)
    with pytest.raises(ConfigurationError, match="shop is an app: a service cannot take its"):
        target_of(service, None, blue_green=False, known=app)
    assert target_of(app, None, blue_green=False, known=app) == app


def test_a_host_is_judged_by_its_app_line_as_one_unit(tmp_path: Path) -> None:
    accepted = pinned_everywhere(shop(tmp_path))
    newer = pinned_everywhere(shop(tmp_path, WEB_TAG="1.1.0"))
    desired = Desired("shop", 1, accepted, {}, DriftPolicy.REPAIR, newer=(newer,))

    def need(*lines: ServiceStatus) -> Need | None:
        found = host_need(desired, facts_with("h1", lines, NOW))
        return None if found is None else found.need

    assert need(running(accepted)) is None
    assert need() is Need.DEPLOY
    assert need(running(pinned_everywhere(shop(tmp_path, CACHE_TAG="1.1.0")))) is Need.UPDATE
    assert need(running(newer)) is Need.AHEAD
    # The same tags at other digests (another push of 1.0.0) are another app.
    other = dict.fromkeys(("migrate", "cache", "web"), "sha256:" + "c" * 64)
    repinned = pinned_app(shop(tmp_path), other, None)
    assert need(running(repinned)) is Need.UPDATE
    # README: health checks do not count (a change of probe timing restarts nothing);
    # the app's volumes and what a member waits for do.
    cache = accepted.member("cache")
    assert cache.spec.health is not None
    slower = cache.spec.health.model_copy(update={"healthy_deadline": 300.0})
    probed = with_member(
        accepted,
        cache.model_copy(update={"spec": cache.spec.model_copy(update={"health": slower})}),
    )
    assert need(running(probed)) is None
    with_volume = accepted.model_copy(update={"volumes": (NamedVolume(name="shop_data"),)})
    assert need(running(with_volume)) is Need.UPDATE
    web = accepted.member("web")
    started_only = tuple(
        d.model_copy(update={"condition": Condition.STARTED}) for d in web.depends_on
    )
    assert (
        need(running(with_member(accepted, web.model_copy(update={"depends_on": started_only}))))
        is Need.UPDATE
    )


def test_an_app_is_rolled_out_with_its_own_images_and_never_blue_green(tmp_path: Path) -> None:
    app = shop(tmp_path)
    assert target_of(app, None, blue_green=False) == app
    with pytest.raises(ConfigurationError, match="shop is an app: its images are in its Compose"):
        target_of(app, "registry.local/demo/web:2.0.0", blue_green=False)
    with pytest.raises(ConfigurationError, match="shop is an app: blue-green is for single"):
        target_of(app, None, blue_green=True)


def test_an_apps_pre_flight_is_one_command_and_its_digests_pin_each_member(
    tmp_path: Path,
) -> None:
    app = shop(tmp_path, WEB_TAG="1.1.0")
    record = RolloutRecord(
        id="shop-r2", service="shop", revision=2, spec=RolloutSpec(), target=app,
        hosts={"h1": HostRecord(phase=HostPhase.PREPARING, since=NOW, command_id="c1")},
        created_at=NOW, updated_at=NOW, last_progress_at=NOW,
    )  # fmt: skip
    check = prepare_command(record, "h1", NOW)
    assert isinstance(check, PrepareAppCommand)
    assert check.app == app

    digests = {"migrate": DIGEST["1.0.0"], "cache": DIGEST["1.0.0"], "web": DIGEST["1.1.0"]}
    answer = PrepareReply(
        sender="h1", in_reply_to="c1", service="shop", ready=True, digests=digests
    )
    # The answer goes into the host's entry; the update sent later pins each member by it.
    ready = reply_news("h1", "c1", answer, NOW, False).change(record.hosts["h1"])
    assert ready.phase is HostPhase.READY
    assert ready.digests == digests
    sent = pinned_app(app, ready.digests, None)
    assert {m.name: m.spec.image for m in sent.members} == {
        "migrate": f"registry.local/demo/web:1.0.0@{DIGEST['1.0.0']}",
        "cache": f"registry.local/demo/web:1.0.0@{DIGEST['1.0.0']}",
        "web": f"registry.local/demo/web:1.1.0@{DIGEST['1.1.0']}",
    }
