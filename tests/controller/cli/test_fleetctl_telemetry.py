"""fleetctl logs, top and exporter, reading what real agents shipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import docker
import pytest

from controller.broker import NatsServer, reserve_loopback_port
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import AnyMessage, LogBatch, MetricsSample
from tests.support.events import EventRecorder
from tests.support.fleet import fleetctl, fleetctl_running
from tests.support.prometheus import scrape_until

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


def logs_of(host: str) -> Callable[[AnyMessage], bool]:
    """Matches a log batch shipped by ``host``."""
    return lambda m: isinstance(m, LogBatch) and m.host == host


async def read_until(process: asyncio.subprocess.Process, text: str, seen: list[str]) -> None:
    """Collect stdout lines into ``seen`` until one contains ``text``."""
    assert process.stdout is not None
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), 60)
        assert raw, f"fleetctl ended before printing {text!r}; printed: {seen}"
        seen.append(raw.decode().rstrip("\n"))
        if text in seen[-1]:
            return


async def test_logs_follow_a_service_across_a_container_replacement(
    agent_factory: AgentFactory, local_stack: LocalStack, nats_server: NatsServer
) -> None:
    agent = await agent_factory()
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    seen: list[str] = []
    async with fleetctl_running(nats_server.url, "logs", "web", "-f") as follower:
        await read_until(follower, "demo/web 1.0.0 (healthy) starting", seen)
        await apply_ok(agent, demo_spec(local_stack.demo_image("1.1.0"), port))
        await read_until(follower, "demo/web 1.1.0 (healthy) starting", seen)
    old = next(i for i, line in enumerate(seen) if "1.0.0 (healthy) starting" in line)
    new = next(i for i, line in enumerate(seen) if "1.1.0 (healthy) starting" in line)
    assert old < new
    # The old container's shutdown is in the stream between the two starts.
    assert any("SIGTERM: shutting down" in line for line in seen[old:new])
    assert all(line.startswith(f"{agent.host} | ") for line in seen)


async def test_a_late_reader_replays_from_since_and_tail_keeps_the_newest_lines(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    nats_server: NatsServer,
    docker_client: docker.DockerClient,
) -> None:
    first, second = await agent_factory(), await agent_factory()
    async with EventRecorder(first.client, subjects.LOGS_WILDCARD) as logs:
        for agent in (first, second):  # host networking: a port each
            reply = await apply_ok(
                agent, demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
            )
            await logs.wait_for(logs_of(agent.host))
        between = datetime.now(UTC)
        await asyncio.sleep(0.1)
        container = docker_client.containers.get(reply.status.container_id or "")
        await asyncio.to_thread(container.kill, signal="SIGHUP")
        await logs.wait_for(
            lambda m: isinstance(m, LogBatch) and any("reloaded" in e.line for e in m.lines)
        )

    everything = await fleetctl(nats_server.url, "logs", "web")
    assert everything.code == 0, everything.stderr
    starts = [line for line in everything.lines if "starting on port" in line]
    assert sorted(line.split(" | ")[0].strip() for line in starts) == sorted(
        [first.host, second.host]
    )

    later = await fleetctl(nats_server.url, "logs", "web", "--since", between.isoformat())
    assert later.code == 0, later.stderr
    assert [line.split(" | ", 1)[1] for line in later.lines] == ["reloaded /config/app.conf"]

    tail = await fleetctl(nats_server.url, "logs", "web", "--tail", "2", "-o", "json")
    assert tail.code == 0, tail.stderr
    rows = [json.loads(line) for line in tail.lines]
    assert len(rows) == 2
    assert rows[-1]["line"] == "reloaded /config/app.conf"
    assert rows[-1]["host"] == second.host
    assert rows[0]["timestamp"] <= rows[1]["timestamp"]

    one_host = await fleetctl(nats_server.url, "logs", "web", "--host", first.host)
    assert one_host.lines
    assert all(line.startswith(first.host) for line in one_host.lines)


async def test_top_shows_each_host_with_its_services(
    agent_factory: AgentFactory, local_stack: LocalStack, nats_server: NatsServer
) -> None:
    agent = await agent_factory(metrics_interval=0.5)
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port()))
    async with EventRecorder(agent.client, subjects.metrics_subject(agent.host)) as metrics:
        await metrics.wait_for(
            lambda m: isinstance(m, MetricsSample) and any(c.service == "web" for c in m.containers)
        )
    table = await fleetctl(nats_server.url, "top", "--once")
    assert table.code == 0, table.stderr
    row = next(line for line in table.lines if agent.host in line)
    assert "web" in row

    rows = json.loads((await fleetctl(nats_server.url, "top", "-o", "json")).stdout)
    assert [row["host"] for row in rows] == [agent.host]
    assert rows[0]["fresh"] is True
    assert [c["service"] for c in rows[0]["containers"]] == ["web"]


async def test_the_exporter_serves_fleet_metrics_that_prometheus_can_parse(
    agent_factory: AgentFactory, local_stack: LocalStack, nats_server: NatsServer
) -> None:
    agent = await agent_factory(metrics_interval=0.5)
    port = reserve_loopback_port()
    async with fleetctl_running(
        nats_server.url, "exporter", "--listen", f"127.0.0.1:{port}"
    ) as exporter:
        try:
            await scrape_until(port, "fleet_host_up", {"host": agent.host}, 1.0)
            spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
            await apply_ok(agent, spec)
            series = await scrape_until(port, "fleet_service_hosts_up", {"service": "web"}, 1.0)
            series = await scrape_until(
                port, "fleet_updates_total", {"service": "web", "outcome": "done"}, 1.0
            )
        except AssertionError as exc:  # (CI once saw the exporter stop answering mid-test)
            exporter.terminate()
            _, err = await exporter.communicate()
            why = f"exporter exit {exporter.returncode}: {err.decode()[-3000:]}"
            raise AssertionError(f"{exc}\n{why}") from None
    host = (("host", agent.host),)
    web = (("host", agent.host), ("service", "web"))
    assert series["fleet_host_memory_total_bytes"][host] > 0
    assert 0 < series["fleet_container_memory_bytes"][web] <= 64 * 1024 * 1024
    assert series["fleet_container_restarts"][web] == 0
