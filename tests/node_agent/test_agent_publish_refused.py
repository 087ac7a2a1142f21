"""A publish the server refuses for good is dropped and reported; it holds nothing up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from controller.broker import NatsServer, find_nats_server_binary
from fleet_lab.agent_client import AgentHandle, connect
from protocol import subjects
from protocol.codec import decode
from protocol.models import InspectReply, TelemetryDropped
from tests.support.events import EventRecorder

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]

# The agent may publish anything but its metrics: its permissions and what it sends have
# drifted apart, as after an operator narrowed users.conf.
CONFIG = """
listen: "127.0.0.1:-1"
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{ user: "agent", password: "agent-pw",
       permissions: {{ publish: {{ allow: [">"], deny: ["fleet.metrics.>"] }} }} }}
    {{ user: "watcher", password: "watcher-pw" }}
  ]
}}
"""


@pytest.fixture
async def narrowed_bus(tmp_path: Path) -> AsyncIterator[NatsServer]:
    config = tmp_path / "nats.conf"
    config.write_text(CONFIG.format(store=tmp_path / "jetstream"))
    server = NatsServer(find_nats_server_binary(), tmp_path / "nats", config_file=config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def as_user(url: str, user: str) -> str:
    return url.replace("nats://", f"nats://{user}:{user}-pw@")


async def test_a_refused_metrics_publish_is_dropped_and_reported_and_events_still_flow(
    narrowed_bus: NatsServer, agent_factory: AgentFactory
) -> None:
    agent = await agent_factory(
        nats_urls=(as_user(narrowed_bus.url, "agent"),), metrics_interval=0.5
    )
    watcher = await connect(as_user(narrowed_bus.url, "watcher"))
    try:
        dropped_subject = subjects.host_event_subject(agent.host, "telemetry_dropped")
        async with EventRecorder(watcher, dropped_subject) as dropped:
            # One report per refused sample, each in its turn: nothing is stuck retrying.
            found = await dropped.wait_for_many(
                lambda m: isinstance(m, TelemetryDropped), count=3, timeout=30
            )
        reports = [m for m in found if isinstance(m, TelemetryDropped)]
        metrics = subjects.metrics_subject(agent.host)
        assert {(r.reason, r.subject, r.messages) for r in reports} == {("refused", metrics, 1)}

        # Behind the refused samples, events are stored as before: a command's outcome
        # is in the stream when its reply arrives.
        reply = await agent.request(agent.inspect("web"))
        assert isinstance(reply, InspectReply), reply
        stored = await watcher.jetstream().get_last_msg(
            subjects.EVENTS_STREAM, subjects.host_event_subject(agent.host, reply.kind)
        )
        assert stored.data is not None
        assert decode(stored.data) == reply
    finally:
        await watcher.close()
