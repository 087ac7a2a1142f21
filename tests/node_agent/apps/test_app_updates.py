"""An app's update on one host, against the real engine and a real agent over NATS: the
group is deployed in dependency order, updated without touching unchanged members, and
restored whole when a member fails (the README's "Apps" rules)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from fleet_lab.agent_client import AgentHandle
from fleet_lab.stack import LocalStack
from protocol.app import AppSpec, Condition
from protocol.fingerprint import app_fingerprint
from protocol.models import (
    ContainerState,
    FailureBundle,
    Health,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    Reason,
    ServiceStatus,
)
from tests.node_agent.apps.app_files import demo_app
from tests.support.engine_events import container_events
from tests.support.registry_digest import registry_digest

pytestmark = pytest.mark.integration
StartAgent = Callable[..., Awaitable[AgentHandle]]
MEMBERS = ("migrate", "cache", "web")


def containers(docker_client: docker.DockerClient, prefix: str, app: str) -> dict[str, Any]:
    """Each member's container: id, image, running, exit code."""
    found = {}
    for member in MEMBERS:
        try:
            info = docker_client.api.inspect_container(f"{prefix}{app}-{member}")
        except docker.errors.NotFound:
            continue
        found[member] = {
            "id": info["Id"],
            "image": info["Config"]["Image"],
            "running": info["State"]["Running"],
            "exit": info["State"]["ExitCode"],
        }
    return found


def events_since(docker_client: docker.DockerClient, since: float, prefix: str) -> list[str]:
    """ "<member container> <action>" for this test's containers since ``since``, in the
    engine's order: start, die, and health_status: healthy."""
    events = docker_client.api.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": ["start", "die", "health_status"]},
    )  # fmt: skip
    return [
        f"{e['Actor']['Attributes']['name'].removeprefix(prefix)} {e['Action']}"
        for e in events
        if e["timeNano"] / 1e9 >= since and e["Actor"]["Attributes"]["name"].startswith(prefix)
    ]


def starts_since(docker_client: docker.DockerClient, since: float, prefix: str) -> list[str]:
    events = events_since(docker_client, since, prefix)
    return [e.removesuffix(" start") for e in events if e.endswith(" start")]


@dataclass
class Shop:
    """The test app, deployed by a fresh agent: its containers as they were then."""

    agent: AgentHandle
    prefix: str
    before: dict[str, Any]


@pytest.fixture
async def shop(
    agent_factory: StartAgent, local_stack: LocalStack, docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Shop:  # fmt: skip
    agent = await agent_factory()
    prefix = agent.agent.settings.container_prefix
    deployed = await applied(agent, demo_app(tmp_path, local_stack, "shop"))
    assert deployed.outcome is OperationOutcome.DONE, deployed
    return Shop(agent, prefix, containers(docker_client, prefix, "shop"))


RUNNING_WELL = (ContainerState.RUNNING, Health.HEALTHY, None)
"""An app line's state, health and drift when every member is as it should be."""


async def app_line(agent: AgentHandle) -> ServiceStatus:
    """The heartbeat's line for the test app, as the agent would send it now."""
    facts = await agent.agent.host_facts()
    return next(status for status in facts.services if status.name == "shop")


async def applied(agent: AgentHandle, app: AppSpec) -> OperationReply:
    reply = await agent.request(agent.apply_app(app), timeout=180)
    assert isinstance(reply, OperationReply), reply
    return reply


async def test_an_app_is_deployed_in_dependency_order_and_updated_without_touching_the_rest(
    agent_factory: StartAgent, local_stack: LocalStack, docker_client: docker.DockerClient,
    tmp_path: Path, test_id: str,
) -> None:  # fmt: skip
    agent = await agent_factory()
    prefix = agent.agent.settings.container_prefix
    since = time.time()
    first = await applied(agent, demo_app(tmp_path, local_stack, "shop"))
    assert first.outcome is OperationOutcome.DONE, first
    deployed = containers(docker_client, prefix, "shop")
    assert deployed["migrate"]["running"] is False
    assert deployed["migrate"]["exit"] == 0  # it ran, once, to success
    assert deployed["cache"]["running"]
    assert deployed["web"]["running"]
    # web started only once the cache was healthy and the migration had completed.
    seen = events_since(docker_client, since, prefix)
    web_start = seen.index("shop-web start")
    assert seen.index("shop-cache health_status: healthy") < web_start, seen
    assert seen.index("shop-migrate die") < web_start, seen
    assert sorted(starts_since(docker_client, since, prefix)) == [
        "shop-cache", "shop-migrate", "shop-web",
    ]  # fmt: skip

    since = time.time()
    second = await applied(agent, demo_app(tmp_path, local_stack, "shop", WEB_TAG="1.1.0"))
    assert second.outcome is OperationOutcome.DONE, second
    after = containers(docker_client, prefix, "shop")
    # Only web was replaced: the others are the very same containers, never started again.
    assert after["cache"] == deployed["cache"]
    assert after["migrate"] == deployed["migrate"]
    assert after["web"]["id"] != deployed["web"]["id"]
    assert after["web"]["image"].endswith("demo/web:1.1.0")
    assert starts_since(docker_client, since, prefix) == ["shop-web"]

    again = await applied(agent, demo_app(tmp_path, local_stack, "shop", WEB_TAG="1.1.0"))
    assert again.outcome is OperationOutcome.DONE, again
    assert containers(docker_client, prefix, "shop") == after  # nothing to do, nothing done


async def test_a_dependant_is_restarted_after_a_replaced_member_only_when_its_file_says_so(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    since = time.time()
    replaced = await applied(shop.agent, demo_app(tmp_path, local_stack, "shop", CACHE_TAG="1.1.0"))
    assert replaced.outcome is OperationOutcome.DONE, replaced
    # Without depends_on.restart, web (waiting for a healthy cache) is left running.
    assert starts_since(docker_client, since, shop.prefix) == ["shop-cache"]
    after = containers(docker_client, shop.prefix, "shop")
    assert after["web"] == shop.before["web"]

    # The flag alone restarts nothing: it is about a replaced dependency.
    since = time.time()
    flagged = demo_app(tmp_path, local_stack, "shop", CACHE_TAG="1.1.0", WEB_RESTART="true")
    unchanged = await applied(shop.agent, flagged)
    assert unchanged.outcome is OperationOutcome.DONE, unchanged
    assert starts_since(docker_client, since, shop.prefix) == []
    assert containers(docker_client, shop.prefix, "shop") == after

    since = time.time()
    back = demo_app(tmp_path, local_stack, "shop", CACHE_TAG="1.0.0", WEB_RESTART="true")
    restarted = await applied(shop.agent, back)
    assert restarted.outcome is OperationOutcome.DONE, restarted
    # With it, the same web container is restarted, once the new cache is healthy.
    seen = events_since(docker_client, since, shop.prefix)
    assert starts_since(docker_client, since, shop.prefix) == ["shop-cache", "shop-web"], seen
    assert seen.index("shop-cache health_status: healthy") < seen.index("shop-web start"), seen
    final = containers(docker_client, shop.prefix, "shop")
    assert final["web"]["id"] == shop.before["web"]["id"]
    assert final["web"]["running"]
    assert final["cache"]["id"] != after["cache"]["id"]


async def test_a_member_that_fails_restores_every_member_replaced_before_it(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    agent, prefix, before = shop.agent, shop.prefix, shop.before
    # The cache goes first (web depends on it) and is fine; web then crashes.
    bad = demo_app(tmp_path, local_stack, "shop", CACHE_TAG="1.1.0", WEB_TAG="3.0.0-crash")
    reply = await applied(agent, bad)
    assert reply.outcome is OperationOutcome.ROLLED_BACK, reply
    assert reply.failure is not None
    assert reply.failure.reason.code == "member_failed"
    assert reply.failure.reason.text.startswith("web: "), reply.failure
    assert reply.failure.last_log_lines  # the crashed member's own lines
    # A bundle per replaced member: web's is the failure; the cache, put back because of
    # it, has its own (its new container's output, read before it was removed).
    assert list(reply.member_failures) == ["cache", "web"]
    assert reply.member_failures["web"] == reply.failure
    cache = reply.member_failures["cache"]
    assert (cache.reason.code, cache.reason.text) == (
        "member_restored", "cache: put back, as web failed",
    )  # fmt: skip
    # The new cache's own output (it says its version as it starts), not the old one's.
    assert any("demo/web 1.1.0 " in line for line in cache.last_log_lines), cache
    assert reply.reasons == (reply.failure.reason, cache.reason)
    # Both replaced members are back: the same containers as before, running.
    after = containers(docker_client, prefix, "shop")
    assert after == {
        **before,
        "cache": {**before["cache"], "running": True},
        "web": {**before["web"], "running": True},
    }
    leftovers = docker_client.containers.list(all=True, filters={"name": f"{prefix}shop-"})
    assert sorted(c.name.removeprefix(prefix) for c in leftovers) == [
        "shop-cache", "shop-migrate", "shop-web",
    ]  # fmt: skip


async def test_a_migration_that_fails_stops_the_update_before_web_is_touched(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    agent, prefix, before = shop.agent, shop.prefix, shop.before
    failing = demo_app(tmp_path, local_stack, "shop", MIGRATE_EXIT="3", WEB_TAG="1.1.0")
    reply = await applied(agent, failing)
    assert reply.outcome is OperationOutcome.ROLLED_BACK, reply
    assert reply.failure is not None
    assert reply.failure.reason.text.startswith("migrate: "), reply.failure
    assert reply.failure.exit_code == 3
    assert reply.member_failures == {"migrate": reply.failure}  # the first replaced
    assert containers(docker_client, prefix, "shop") == before


async def test_an_engine_refusal_mid_update_restores_the_members_replaced_before_it(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    agent, prefix, before = shop.agent, shop.prefix, shop.before
    # The cache is replaced and healthy; the engine will not create web (no such driver).
    bad = demo_app(tmp_path, local_stack, "shop", CACHE_TAG="1.1.0", WEB_LOG_DRIVER="nope")
    reply = await applied(agent, bad)
    assert reply.outcome is OperationOutcome.ROLLED_BACK, reply
    assert reply.failure is not None
    assert reply.failure.reason.code == "engine_error"
    assert reply.failure.reason.text.startswith("web: "), reply.failure
    assert reply.member_failures == {
        "cache": FailureBundle(
            reason=Reason(code="member_restored", text="cache: put back, as web failed"),
            last_log_lines=reply.member_failures["cache"].last_log_lines,
        ),
        "web": reply.failure,
    }
    assert containers(docker_client, prefix, "shop") == before


async def test_the_heartbeat_reports_the_app_as_one_line_from_its_members(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    app = demo_app(tmp_path, local_stack, "shop")

    # Running and healthy: the migration ended, successfully, as a one-shot job should.
    running = await app_line(shop.agent)
    assert (running.state, running.health) == (ContainerState.RUNNING, Health.HEALTHY)
    assert running.fingerprint == app_fingerprint(app)  # what the controller compares
    assert running.applied_digest is None  # the file names tags, not digests
    # A member stopped by hand: the app is not running any more.
    docker_client.containers.get(f"{shop.prefix}shop-cache").stop(timeout=5)
    stopped = await app_line(shop.agent)
    assert stopped.state is not ContainerState.RUNNING, stopped


async def test_prepare_pulls_every_changed_members_image_by_digest_and_touches_nothing(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    new = demo_app(tmp_path, local_stack, "shop", WEB_TAG="1.1.0")
    ready = await shop.agent.request(shop.agent.prepare_app(new), timeout=180)
    assert isinstance(ready, PrepareReply), ready
    assert (ready.service, ready.ready, ready.reasons) == ("shop", True, ())
    # Each member's digest, as the registry has it for the member's tag (the oracle).
    expected = {m.name: await registry_digest(m.spec.image) for m in new.members}
    assert ready.digests == expected
    assert containers(docker_client, shop.prefix, "shop") == shop.before

    missing = demo_app(tmp_path, local_stack, "shop", WEB_TAG="9.9.9-none")
    refused = await shop.agent.request(shop.agent.prepare_app(missing), timeout=180)
    assert isinstance(refused, PrepareReply), refused
    assert refused.ready is False
    assert {r.text.split(":", 1)[0] for r in refused.reasons} == {"web"}, refused.reasons
    assert containers(docker_client, shop.prefix, "shop") == shop.before


async def test_removing_an_app_removes_its_members_dependants_first_and_forgets_it(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent, prefix = shop.agent, shop.prefix
    demo = local_stack.demo_image("1.0.0")
    with container_events(docker_client, "destroy", demo) as destroyed:
        reply = await agent.request(agent.remove("shop"), timeout=120)
    assert isinstance(reply, OperationReply), reply
    assert reply.outcome is OperationOutcome.DONE, reply
    gone = [name.removeprefix(prefix) for name in destroyed if name.startswith(prefix)]
    assert sorted(gone) == ["shop-cache", "shop-migrate", "shop-web"], destroyed
    # web depends on the other two: it goes first (README, "dependants first").
    assert gone[0] == "shop-web", gone
    assert containers(docker_client, prefix, "shop") == {}
    facts = await agent.agent.host_facts()
    assert "shop" not in {status.name for status in facts.services}
    again = await agent.request(agent.remove("shop"), timeout=120)
    assert isinstance(again, OperationReply), again
    assert again.outcome is OperationOutcome.DONE, again  # gone already is done


async def test_a_change_only_to_a_members_health_check_restarts_nothing(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    app = demo_app(tmp_path, local_stack, "shop")
    cache = app.member("cache")
    assert cache.spec.health is not None
    slower = cache.spec.health.model_copy(update={"healthy_deadline": 90.0})
    spec = cache.spec.model_copy(update={"health": slower})
    members = tuple(
        m.model_copy(update={"spec": spec}) if m.name == "cache" else m for m in app.members
    )
    reply = await applied(shop.agent, app.model_copy(update={"members": members}))
    assert reply.outcome is OperationOutcome.DONE, reply
    assert containers(docker_client, shop.prefix, "shop") == shop.before


async def test_a_one_shot_member_nothing_waits_for_counts_as_done_once_it_ended_with_0(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # web waits only for the migration to start: nothing waits for it to complete, and
    # still a migration that ended with 0 is a member that did its job, not one down.
    app = demo_app(tmp_path, local_stack, "shop")
    web = app.member("web")
    started = tuple(
        d.model_copy(update={"condition": Condition.STARTED}) if d.member == "migrate" else d
        for d in web.depends_on
    )
    members = tuple(
        m.model_copy(update={"depends_on": started}) if m.name == "web" else m for m in app.members
    )
    reply = await applied(shop.agent, app.model_copy(update={"members": members}))
    assert reply.outcome is OperationOutcome.DONE, reply
    assert containers(docker_client, shop.prefix, "shop")["migrate"]["exit"] == 0
    line = await app_line(shop.agent)
    assert (line.state, line.health, line.drift) == RUNNING_WELL, line


async def test_a_member_the_file_dropped_is_removed_and_the_others_left_alone(
    shop: Shop, local_stack: LocalStack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    app = demo_app(tmp_path, local_stack, "shop")
    web = app.member("web")
    waits_for_cache = tuple(d for d in web.depends_on if d.member == "cache")
    members = tuple(
        m.model_copy(update={"depends_on": waits_for_cache}) if m.name == "web" else m
        for m in app.members
        if m.name != "migrate"
    )
    smaller = app.model_copy(update={"members": members})
    reply = await applied(shop.agent, smaller)
    assert reply.outcome is OperationOutcome.DONE, reply
    after = containers(docker_client, shop.prefix, "shop")
    assert after == {"cache": shop.before["cache"], "web": shop.before["web"]}
    facts = await shop.agent.agent.host_facts()
    lines = {status.name: status for status in facts.services}
    assert "shop-migrate" not in lines  # forgotten, not only stopped
    assert lines["shop"].fingerprint == app_fingerprint(smaller)


async def test_a_migration_that_runs_a_while_then_ends_with_0_is_done_not_down(
    agent_factory: StartAgent, local_stack: LocalStack, docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Longer than a member with no check must run to count as started (3 s): it still
    # runs when its own start is judged, and web waits for it to complete.
    agent = await agent_factory()
    app = demo_app(tmp_path, local_stack, "shop", MIGRATE_SECONDS="5")
    reply = await applied(agent, app)
    assert reply.outcome is OperationOutcome.DONE, reply
    ran = containers(docker_client, agent.agent.settings.container_prefix, "shop")["migrate"]
    assert (ran["running"], ran["exit"]) == (False, 0)
    line = await app_line(agent)
    assert (line.state, line.health, line.drift) == RUNNING_WELL, line
