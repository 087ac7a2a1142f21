"""fleetctl's tables where operators read them: an 80-column pipe and an 80-column terminal.

Rows carry long image references and ids; each row must stay one line (no cell wrapped
into several), whole in a pipe, within the width on a terminal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from controller.broker import NatsServer
from fleet_lab.agent_client import AgentHandle
from fleet_lab.stack import LocalStack
from tests.support.fleet import fleet_spec
from tests.support.terminal import Ran, run_in_terminal, run_piped_with

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
WIDTH = 80
LONG_REPOSITORY = "fleetwave/examples/a-web-frontend-with-a-name-longer-than-a-column"
LONG_TAG = "1.0.0-rc.1-build.20240101.abcdef"


async def fleetctl_piped(url: str, *args: str, **settings: str) -> Ran:
    return await asyncio.to_thread(run_piped_with, args, {"FLEET_NATS_URL": url, **settings})


async def fleetctl_on_terminal(url: str, *args: str) -> Ran:
    return await asyncio.to_thread(run_in_terminal, *args, FLEET_NATS_URL=url)


def rows_naming(ran: Ran, *words: str) -> dict[str, list[str]]:
    return {word: [line for line in ran.lines if word in line] for word in words}


def assert_one_line_each_within_width(ran: Ran, *words: str) -> None:
    """On a terminal: every word (an id, a host) whole on exactly one line of the box."""
    assert ran.code == 0, ran.stderr
    for word, lines in rows_naming(ran, *words).items():
        assert len(lines) == 1, f"{word!r} is on {len(lines)} lines:\n{ran.stdout}"
    assert all(len(line) <= WIDTH for line in ran.lines), ran.stdout
    boxed = [line for line in ran.lines if line.startswith("│")]
    assert len(boxed) == len(words), ran.stdout  # no row continued on a second line


async def start_rollouts(
    nats_server: NatsServer, local_stack: LocalStack, tmp_path: Path, services: list[str]
) -> str:
    """A rollout of each service to a long image reference; no controller drives them."""
    image = f"{local_stack.registry}/{LONG_REPOSITORY}:{LONG_TAG}"
    for service in services:
        spec = fleet_spec(image).model_copy(update={"name": service})
        path = tmp_path / f"{service}.json"
        path.write_text(spec.model_dump_json())
        # Not pinned: nothing is pushed under this long name, and no host pulls it.
        started = await fleetctl_piped(
            nats_server.url, "rollout", "start", service, "--spec", str(path),
            FLEET_PIN_DIGESTS="false",
        )  # fmt: skip
        assert started.code == 0, started
    return image


async def test_rollout_and_host_tables_piped_at_80_columns_print_one_line_per_row(
    agent_factory: AgentFactory,
    nats_server: NatsServer,
    local_stack: LocalStack,
    tmp_path: Path,
    test_id: str,
) -> None:
    labels = {"region": "europe-west-amsterdam-2", "tier": "canary-with-long-label-values"}
    agent = await agent_factory(labels=labels)
    services = [f"checkout-frontend-{test_id}", f"web-{test_id}"]
    image = await start_rollouts(nats_server, local_stack, tmp_path, services)
    ids = [f"{service}-r1" for service in services]

    listed = await fleetctl_piped(nats_server.url, "rollout", "status")
    assert listed.code == 0, listed
    assert listed.lines[0].split() == ["ID", "SERVICE", "ROLLS", "OUT", "STATUS", "DONE", "CREATED"]
    assert sorted(line.split()[0] for line in listed.lines[1:]) == sorted(ids)

    history = await fleetctl_piped(nats_server.url, "rollout", "history", services[0])
    assert history.code == 0, history
    assert len(history.lines) == 2, history.stdout
    assert ids[0] in history.lines[1].split()
    assert f"{LONG_REPOSITORY.rsplit('/', 1)[-1]}:{LONG_TAG}" in history.lines[1].split()

    hosts = await fleetctl_piped(nats_server.url, "hosts")
    assert hosts.code == 0, hosts
    assert len(hosts.lines) == 2, hosts.stdout
    assert hosts.lines[1].split()[:2] == [
        agent.host,
        ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
    ]

    # Everything a table leaves out is in -o json.
    full = json.loads(
        (await fleetctl_piped(nats_server.url, "rollout", "status", "-o", "json")).stdout
    )
    assert {record["target"]["image"] for record in full} == {image}


async def test_rollout_and_host_tables_on_an_80_column_terminal_keep_each_row_on_one_line(
    agent_factory: AgentFactory,
    nats_server: NatsServer,
    local_stack: LocalStack,
    tmp_path: Path,
    test_id: str,
) -> None:
    agent = await agent_factory(labels={"region": "europe-west-amsterdam-2", "tier": "canary"})
    services = [f"checkout-{test_id}", f"web-{test_id}"]
    await start_rollouts(nats_server, local_stack, tmp_path, services)
    ids = [f"{service}-r1" for service in services]

    listed = await fleetctl_on_terminal(nats_server.url, "rollout", "status")
    assert_one_line_each_within_width(listed, *ids)
    history = await fleetctl_on_terminal(nats_server.url, "rollout", "history", services[0])
    assert_one_line_each_within_width(history, ids[0])
    hosts = await fleetctl_on_terminal(nats_server.url, "hosts")
    assert_one_line_each_within_width(hosts, agent.host)


async def test_config_list_piped_at_80_columns_prints_one_line_per_file(
    nats_server: NatsServer, tmp_path: Path, test_id: str
) -> None:
    content = tmp_path / "app.conf"
    content.write_text("message=hello\n")
    service = f"payments-gateway-{test_id}"
    names = ["application-settings.conf", "feature-flags-for-the-canary-tier.json"]
    labels = "region=europe-west-amsterdam-2,tier=canary-with-long-label-values"
    for name in names:
        for scope in ((), ("--selector", labels)):  # the base, then an override
            stored = await fleetctl_piped(
                nats_server.url, "config", "set", service, name, "--file", str(content), *scope
            )
            assert stored.code == 0, stored

    listed = await fleetctl_piped(nats_server.url, "config", "list")
    assert listed.code == 0, listed
    assert len(listed.lines) == 1 + len(names), listed.stdout
    assert sorted(line.split()[1] for line in listed.lines[1:]) == sorted(names)
