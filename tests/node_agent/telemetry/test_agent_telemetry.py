"""The agent ships its containers' logs and its host's metrics into JetStream."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import docker
import pytest

from controller.broker import NatsServer, reserve_loopback_port
from controller.streams.feed import FleetFeed
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import AnyMessage, LogBatch, MetricsSample, TelemetryDropped
from protocol.spec import ContainerSettings, ExecProbe, HealthCheck, RestartPolicy, ServiceSpec
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]
PAD = "x" * 100


def counter_spec(image: str, pause: str = "0.002") -> ServiceSpec:
    """A container that prints numbered lines ("n=0 ...", "n=1 ...") as fast as told."""
    script = f'i=0; while true; do echo "n=$i {PAD}"; i=$((i+1)); sleep {pause}; done'
    return ServiceSpec(
        name="counter",
        image=image,
        container=ContainerSettings(
            command=("sh", "-c", script), restart_policy=RestartPolicy(name="no")
        ),
        health=HealthCheck(probe=ExecProbe(command=("true",)), period=0.5, min_healthy_time=0.5),
        stop_grace_period=1.0,
    )


def line_numbers(batches: list[LogBatch]) -> list[int]:
    numbers = []
    for batch in batches:
        for entry in batch.lines:
            match = re.match(r"n=(\d+) ", entry.line)
            if match:
                numbers.append(int(match.group(1)))
    return numbers


def has_line(text: str) -> Callable[[AnyMessage], bool]:
    return lambda m: isinstance(m, LogBatch) and any(text in e.line for e in m.lines)


async def test_a_line_printed_by_a_container_reaches_a_subscriber(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory()
    spec = demo_spec(local_stack.demo_image("1.0.0"), reserve_loopback_port())
    async with EventRecorder(agent.client, subjects.log_subject(agent.host, "web")) as logs:
        reply = await apply_ok(agent, spec)
        started = await logs.wait_for(has_line("demo/web 1.0.0 (healthy) starting"))
        assert isinstance(started, LogBatch)
        assert started.host == agent.host
        assert started.container_id == reply.status.container_id

        # SIGHUP makes the demo print "reloaded ..." on stdout: a line printed now.
        container = docker_client.containers.get(reply.status.container_id or "")
        await asyncio.to_thread(container.kill, signal="SIGHUP")
        reloaded = await logs.wait_for(has_line("reloaded /config/app.conf"), timeout=10)
        assert isinstance(reloaded, LogBatch)
        entry = next(e for e in reloaded.lines if "reloaded" in e.line)
        assert entry.stream == "stdout"
        assert entry.line == "reloaded /config/app.conf"


async def test_metrics_samples_carry_host_figures_and_each_container_with_its_restarts(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory(metrics_interval=0.5)
    spec = demo_spec(
        local_stack.demo_image("1.0.0"),
        reserve_loopback_port(),
        restart_policy=RestartPolicy(name="on-failure", max_retries=5),
    )
    async with EventRecorder(agent.client, subjects.metrics_subject(agent.host)) as metrics:
        reply = await apply_ok(agent, spec)

        def with_web(restarts: int) -> Callable[[AnyMessage], bool]:
            return lambda m: (
                isinstance(m, MetricsSample)
                and any(c.service == "web" and c.restart_count == restarts for c in m.containers)
            )

        sample = await metrics.wait_for(with_web(0))
        assert isinstance(sample, MetricsSample)
        assert sample.host == agent.host
        assert 0 < sample.memory_used <= sample.memory_total
        assert 0 < sample.disk_used <= sample.disk_total
        web = next(c for c in sample.containers if c.service == "web")
        assert web.container_id == reply.status.container_id
        assert web.image == spec.image
        assert 0 < web.memory_bytes <= 64 * 1024 * 1024
        assert web.memory_limit_bytes == 64 * 1024 * 1024

        container = docker_client.containers.get(web.container_id)
        os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
        restarted = await metrics.wait_for(with_web(1))
        assert isinstance(restarted, MetricsSample)


async def test_killing_nats_during_shipping_loses_only_what_the_buffer_could_not_hold(
    agent_factory: AgentFactory, local_stack: LocalStack, nats_server: NatsServer
) -> None:
    agent = await agent_factory(telemetry_buffer_bytes=64 * 1024, metrics_interval=3600)
    async with EventRecorder(agent.client, subjects.log_subject(agent.host, "counter")) as logs:
        await apply_ok(agent, counter_spec(local_stack.demo_image("1.0.0")))
        await logs.wait_for(has_line("n=200 "))

    # About 500 lines (64 KB) a second: a 4 s outage is far more than the buffer holds.
    await nats_server.kill()
    await asyncio.sleep(4)
    await nats_server.start()

    feed = FleetFeed(agent.client)
    dropped: list[TelemetryDropped] = []
    for _ in range(200):
        async with aclosing(feed.events(host=agent.host)) as events:
            dropped = [d.message async for d in events if isinstance(d.message, TelemetryDropped)]
        if dropped:
            break
        await asyncio.sleep(0.1)
    assert dropped, "no telemetry_dropped event after NATS came back"
    await asyncio.sleep(1)  # a little more shipping after the gap
    agent.stop.set()
    await agent.task  # flushes what is buffered

    async with aclosing(feed.logs("counter", host=agent.host)) as deliveries:
        batches = [d.message async for d in deliveries if isinstance(d.message, LogBatch)]
    numbers = line_numbers(batches)
    counts = Counter(numbers)
    assert [n for n, c in counts.items() if c > 1] == [], "a line was stored twice"
    assert min(numbers) == 0
    missing = set(range(max(numbers) + 1)) - set(numbers)
    reported = sum(event.log_lines for event in dropped)
    assert reported > 0
    assert len(missing) == reported
    # Only the oldest lines of the outage were dropped: the gap is one unbroken run.
    assert max(missing) - min(missing) + 1 == len(missing)
