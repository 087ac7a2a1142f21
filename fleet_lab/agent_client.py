"""Drive a real fleet-agent over a real nats-server, as the controller will."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from node_agent.daemon import Agent
from protocol import subjects
from protocol.app import AppSpec
from protocol.codec import decode, encode
from protocol.models import (
    AnyMessage,
    ApplyAppCommand,
    ApplyCommand,
    InspectCommand,
    OperationOutcome,
    OperationReply,
    PrepareAppCommand,
    PrepareCommand,
    RemoveCommand,
    RollbackCommand,
    utc_now,
)
from protocol.spec import (
    ContainerSettings,
    HealthCheck,
    HttpProbe,
    Resources,
    RestartPolicy,
    ServiceSpec,
    VolumeMount,
)


@dataclass
class AgentClient:
    """Speaks to one agent over the bus, as the controller will."""

    client: Client
    host: str

    async def request(self, command: Any, timeout: float = 90.0) -> AnyMessage:
        return await self.request_raw(encode(command), timeout)

    async def request_raw(self, data: bytes, timeout: float = 90.0) -> AnyMessage:
        reply = await self.client.request(
            subjects.command_subject(self.host), data, timeout=timeout
        )
        return decode(reply.data)

    async def send(self, command: Any) -> None:
        """Publish without waiting for a reply (the agent may die before it answers)."""
        await self.client.publish(subjects.command_subject(self.host), encode(command))
        await self.client.flush(timeout=5)

    def command_fields(self, **extra: Any) -> dict[str, Any]:
        return {
            "sender": "controller",
            "host": self.host,
            "expires_at": utc_now() + timedelta(minutes=5),
            **extra,
        }

    def prepare(self, spec: ServiceSpec, **extra: Any) -> PrepareCommand:
        return PrepareCommand(service=spec, **self.command_fields(**extra))

    def apply(self, spec: ServiceSpec, **extra: Any) -> ApplyCommand:
        return ApplyCommand(service=spec, **self.command_fields(**extra))

    def prepare_app(self, app: AppSpec, **extra: Any) -> PrepareAppCommand:
        return PrepareAppCommand(app=app, **self.command_fields(**extra))

    def apply_app(self, app: AppSpec, **extra: Any) -> ApplyAppCommand:
        return ApplyAppCommand(app=app, **self.command_fields(**extra))

    def rollback(self, service: str) -> RollbackCommand:
        return RollbackCommand(service=service, **self.command_fields())

    def inspect(self, service: str) -> InspectCommand:
        return InspectCommand(service=service, **self.command_fields())

    def remove(self, service: str) -> RemoveCommand:
        return RemoveCommand(service=service, **self.command_fields())


@dataclass
class AgentHandle(AgentClient):
    """An agent running inside the test's own event loop."""

    agent: Agent
    task: asyncio.Task[None]
    stop: asyncio.Event


async def apply_ok(agent: AgentClient, spec: ServiceSpec) -> OperationReply:
    """Apply ``spec`` and insist it ended done."""
    reply = await agent.request(agent.apply(spec))
    assert isinstance(reply, OperationReply), reply
    assert reply.outcome is OperationOutcome.DONE, reply
    return reply


async def wait_until_serving(agent: AgentClient, deadline_s: float = 20.0) -> None:
    """Until the agent answers an Inspect (it subscribes only once it has connected)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            await agent.request(agent.inspect("probe"), timeout=1.0)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def connect(url: str | Sequence[str]) -> Client:
    """A test's own client; given every server of a cluster, it fails over like the rest."""
    servers = [url] if isinstance(url, str) else list(url)
    return await nats.connect(servers=servers, connect_timeout=5)


def demo_spec(
    image: str,
    port: int,
    *,
    name: str = "web",
    volume: str | None = None,
    deadline: float = 30.0,
    min_healthy: float = 1.0,
    grace: float = 10.0,
    env: dict[str, str] | None = None,
    **container: Any,
) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        image=image,
        container=ContainerSettings(
            env={"PORT": str(port), **(env or {})},
            volumes=(VolumeMount(source=volume, target="/data"),) if volume else (),
            restart_policy=container.pop(
                "restart_policy", RestartPolicy(name="on-failure", max_retries=2)
            ),
            resources=container.pop(
                "resources", Resources(memory_bytes=64 * 1024 * 1024, cpus=0.5)
            ),
            **container,
        ),
        health=HealthCheck(
            probe=HttpProbe(port=port, path="/health"),
            period=0.5,
            timeout=2.0,
            failure_threshold=2,
            min_healthy_time=min_healthy,
            healthy_deadline=deadline,
        ),
        stop_grace_period=grace,
    )
