"""Apps across a fleet: `fleetctl apply -f compose.yaml --app NAME` declares a Compose
project as one app, rolled out, updated, undone and converged like a service (README,
"Apps from Compose files").

Real agents as processes, a real controller, the real engine and registry. What runs is
read from the engine: each member's container, its id and image.
"""

from __future__ import annotations

import json
import re
from typing import Any

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from tests.conftest import FleetFactory, LocalFleet
from tests.node_agent.apps.app_files import APP_FILE
from tests.support.engine_events import container_events
from tests.support.fleet import fleetctl_running
from tests.support.polling import eventually
from tests.support.prometheus import scrape_until
from tests.support.registry_digest import registry_digest

pytestmark = pytest.mark.integration
MEMBERS = ("migrate", "cache", "web")
POLICY = """\
x-fleetwave:
  update:
    max_unavailable: 1
    min_healthy_time: 1
"""


def compose_file(fleet: LocalFleet, policy: str = POLICY) -> str:
    path = fleet.work_dir / "compose.yaml"
    path.write_text(APP_FILE + policy)
    return str(path)


async def fleetctl_app(fleet: LocalFleet, *args: str, **tags: str) -> Any:
    """fleetctl with the file's variables (the registry, and each member's tag)."""
    return await fleet.fleetctl(*args, env={"REGISTRY": fleet.stack.registry, **tags})


async def demo_tags(fleet: LocalFleet) -> dict[str, str]:
    """The demo image's tags by the digest the registry gives each (members run pinned)."""
    tags = ("1.0.0", "1.1.0", "3.0.0-crash")
    return {await registry_digest(fleet.stack.demo_image(tag)): tag for tag in tags}


def members(
    fleet: LocalFleet, client: docker.DockerClient, tags: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per host, per member: the container's id, image tag (``tags``: by digest), and
    whether it runs (or, for the one-shot migration, ended with 0)."""
    found: dict[str, dict[str, Any]] = {}
    for agent in fleet.agents:
        for member in MEMBERS:
            try:
                info = client.api.inspect_container(agent.container(f"shop-{member}"))
            except docker.errors.NotFound:
                continue
            state = info["State"]
            found.setdefault(agent.api.host, {})[member] = {
                "id": info["Id"],
                "tag": tags.get(info["Config"]["Image"].rsplit("@", 1)[-1], "?"),
                "fine": state["Running"] or (member == "migrate" and state["ExitCode"] == 0),
            }
    return found


def tags_of(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {host: {m: c["tag"] for m, c in by.items() if c["fine"]} for host, by in found.items()}


def everywhere(fleet: LocalFleet, **tags: str) -> dict[str, dict[str, str]]:
    wanted = {member: tags.get(member, "1.0.0") for member in MEMBERS}
    return {agent.api.host: dict(wanted) for agent in fleet.agents}


async def test_an_app_is_deployed_updated_member_by_member_undone_and_reaches_a_late_host(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    tags = await demo_tags(fleet)
    path = compose_file(fleet)
    created = await fleetctl_app(fleet, "apply", "-f", path, "--app", "shop", "-w")
    assert created.code == 0, created
    assert created.stdout.splitlines()[-1] == "shop: created; rollout shop-r1 complete on 2 host(s)"
    deployed = members(fleet, docker_client, tags)
    assert tags_of(deployed) == everywhere(fleet)
    # `fleetctl logs shop`: every member's lines, from every host, each with its member.
    said = {(a.api.host, f"shop-{m}") for a in fleet.agents for m in ("cache", "web")}
    await eventually(
        lambda: _log_lines(fleet), lambda lines: said <= set(lines), "each member's logs", 60
    )
    table = await fleet.fleetctl("logs", "shop")
    cache_starts = (
        rf"^{fleet.agents[0].api.host} +shop-cache +\| demo/web 1\.0\.0 \(healthy\) starting"
    )
    assert re.search(cache_starts, table.stdout, re.MULTILINE), table.stdout

    # `fleetctl top`: each member sampled as a service of its own.
    running = {(a.api.host, f"shop-{m}") for a in fleet.agents for m in ("cache", "web")}
    await eventually(
        lambda: _sampled(fleet), lambda found: running <= found, "each member's metrics", 60
    )

    # The exporter: the app as one declared workload (converged on both hosts), each
    # member's container as a service of its own.
    port = reserve_loopback_port()
    async with fleetctl_running(fleet.nats_url, "exporter", "--listen", f"127.0.0.1:{port}"):
        app = {"service": "shop", "kind": "app", "state": "converged"}
        await scrape_until(port, "fleet_declared_hosts", app, 2.0)
        await scrape_until(port, "fleet_service_hosts_up", {"service": "shop-web"}, 2.0)

    # Only web's image changes: the migration and the cache keep their containers.
    changed = await fleetctl_app(fleet, "apply", "-f", path, "--app", "shop", "-w", WEB_TAG="1.1.0")
    assert changed.code == 0, changed
    updated = members(fleet, docker_client, tags)
    assert tags_of(updated) == everywhere(fleet, web="1.1.0")
    for host, by_member in updated.items():
        for member in ("migrate", "cache"):
            assert by_member[member]["id"] == deployed[host][member]["id"], (host, member)
        assert by_member["web"]["id"] != deployed[host]["web"]["id"], host

    # The rollout shows each member's image, pinned and vetted before it started.
    status = await fleet.fleetctl("rollout", "status", "shop")
    assert status.code == 0, status
    for member, tag in (("migrate", "1.0.0"), ("cache", "1.0.0"), ("web", "1.1.0")):
        image = re.escape(fleet.stack.demo_image(tag))
        line = rf"^member {member}: {image}@sha256:[0-9a-f]{{64}}  vetted: "
        assert re.search(line, status.stdout, re.MULTILINE), status.stdout

    history = await fleet.fleetctl("rollout", "history", "shop", "-o", "json")
    assert history.code == 0, history
    revisions = json.loads(history.stdout)["revisions"]
    assert [r["revision"] for r in revisions] == [1, 2]
    assert [m["spec"]["image"].split("@")[0][-5:] for m in revisions[1]["spec"]["members"]] == [
        "1.0.0",
        "1.0.0",
        "1.1.0",
    ]

    undone = await fleet.fleetctl("rollout", "undo", "shop", "-w")
    assert undone.code == 0, undone
    back = members(fleet, docker_client, tags)
    assert tags_of(back) == everywhere(fleet)
    for host, by_member in back.items():
        assert by_member["cache"]["id"] == deployed[host]["cache"]["id"], host

    late = await fleet.join()
    await eventually(
        lambda: _services(fleet),
        lambda rows: rows["shop"]["converged"] == 3,
        "the late host converged to the app",
        90,
    )
    assert (
        tags_of(members(fleet, docker_client, tags))[late.api.host]
        == everywhere(fleet)[late.api.host]
    )


async def test_a_member_that_fails_restores_the_whole_app_and_a_selector_off_every_host_removes_it(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    tags = await demo_tags(fleet)
    # (3.0.0-crash is a major version up: allowed, so that the update is tried.)
    path = compose_file(fleet, POLICY + "    failure_action: revert\n    allow_major: true\n")
    created = await fleetctl_app(fleet, "apply", "-f", path, "--app", "shop", "-w")
    assert created.code == 0, created
    deployed = members(fleet, docker_client, tags)
    # web is the fleet's service: an app may not take its name (exit 2, invalid).
    taken = await fleetctl_app(fleet, "apply", "-f", path, "--app", "web")
    assert (taken.code, taken.stderr.strip()) == (
        2,
        "fleetctl: web is a service: an app cannot take its name (choose another name)",
    ), taken

    # The cache changes to a working image, web to one that crashes: on the first host
    # the cache is replaced, web fails, and both are restored (the same containers).
    # Started by hand this time (`rollout start --compose`), with the policy as flags.
    demo = fleet.stack.demo_image("1.0.0")
    policy = ["--max-unavailable", "1", "--min-healthy-time", "1", "--allow-major"]
    with container_events(docker_client, "create", demo) as created_names:
        failed = await fleetctl_app(
            fleet, "rollout", "start", "shop", "--compose", path, *policy,
            "--failure-action", "revert", "-w", CACHE_TAG="1.1.0", WEB_TAG="3.0.0-crash",
        )  # fmt: skip
    assert failed.code == 1, failed  # README: 1, the rollout failed or was reverted
    rollout = await fleet.fleetctl("rollout", "status", "shop", "-o", "json")
    record = json.loads(rollout.stdout)
    assert record["status"] == "reverted", record
    first, second = sorted(record["hosts"])  # hosts go in name order, one at a time
    assert record["hosts"][first]["phase"] == "failed", record["hosts"]
    assert record["hosts"][first]["detail"].startswith("rolled_back: web"), record["hosts"]
    # Each replaced member's reason, as the host gave them: web failed, the cache was put
    # back because of it.
    reasons = [(r["code"], r["text"]) for r in record["hosts"][first]["reasons"]]
    assert [code for code, _ in reasons] == ["member_failed", "member_restored"], reasons
    assert reasons[1][1] == "cache: put back, as web failed", reasons
    # The second host passed its pre-flight (every host's comes first) and was spared.
    assert record["hosts"][second]["phase"] == "ready", record["hosts"]
    # The first host's cache was replaced (a new container made under its name), then
    # put back; the second host's never was.
    cache = {a.api.host: a.container("shop-cache") for a in fleet.agents}
    made = {host: created_names.count(name) for host, name in cache.items()}
    assert made == {first: 1, second: 0}
    restored = members(fleet, docker_client, tags)
    for host in deployed:
        assert {m: c["id"] for m, c in restored[host].items() if c["fine"]} == {
            m: c["id"] for m, c in deployed[host].items()
        }, host

    # Off every host's selector: the controller removes the app (its members) everywhere.
    away = await fleetctl_app(
        fleet, "apply", "-f", path, "--app", "shop", "--selector", "role=nowhere"
    )
    assert away.code == 0, away
    assert away.stdout.strip() == "shop: configured (nothing restarts)"
    await eventually(
        lambda: _containers_left(fleet, docker_client), lambda left: not left, "app removed", 90
    )


async def _log_lines(fleet: LocalFleet) -> dict[tuple[str, str], list[str]]:
    """`fleetctl logs shop -o json`: the lines by host and member service."""
    shown = await fleet.fleetctl("logs", "shop", "-o", "json")
    assert shown.code == 0, shown
    lines: dict[tuple[str, str], list[str]] = {}
    for text in shown.stdout.splitlines():
        line = json.loads(text)
        lines.setdefault((line["host"], line["service"]), []).append(line["line"])
    return lines


async def _sampled(fleet: LocalFleet) -> set[tuple[str, str]]:
    """`fleetctl top -o json`: (host, service) of every container sampled."""
    shown = await fleet.fleetctl("top", "-o", "json")
    assert shown.code == 0, shown
    return {(h["host"], c["service"]) for h in json.loads(shown.stdout) for c in h["containers"]}


async def _services(fleet: LocalFleet) -> dict[str, dict[str, Any]]:
    listed = await fleet.fleetctl("services", "-o", "json")
    assert listed.code == 0, listed
    return {row["service"]: row for row in json.loads(listed.stdout)}


async def _containers_left(fleet: LocalFleet, client: docker.DockerClient) -> list[str]:
    names = [a.container(f"shop-{m}") for a in fleet.agents for m in MEMBERS]
    left = []
    for name in names:
        try:
            client.api.inspect_container(name)
        except docker.errors.NotFound:
            continue
        left.append(name)
    return left
