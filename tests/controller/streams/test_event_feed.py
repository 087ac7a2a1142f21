"""FLEET_EVENTS as a Kafka user expects it: replay, durable resume, consumer groups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client

from controller.broker import NatsServer
from controller.state.store import ensure_streams
from controller.streams.feed import FleetFeed
from protocol import subjects
from protocol.codec import encode
from protocol.models import UpdatePhase, UpdateProgress
from protocol.streams import GIB, StreamLimits, StreamRetention
from tests.support.fleet import fleetctl, fleetctl_executable

pytestmark = pytest.mark.integration


async def publish_progress(
    client: Client, count: int, host: str = "h1", rollout: str = "web-r2"
) -> list[str]:
    js = client.jetstream(timeout=5)
    ids = []
    for index in range(count):
        event = UpdateProgress(
            sender=host,
            host=host,
            service="web",
            operation_id=f"op-{index}",
            rollout_id=rollout,
            phase=UpdatePhase.PROBING,
            detail=f"event {index}",
        )
        await js.publish(
            subjects.host_event_subject(host, "update_progress"),
            encode(event),
            headers={"Nats-Msg-Id": event.id},
        )
        ids.append(event.id)
    return ids


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_server.url, connect_timeout=5)
    await ensure_streams(connection.jetstream(timeout=5), StreamRetention())
    yield connection
    await connection.close()


async def test_a_durable_consumer_stopped_and_restarted_gets_every_message_exactly_once(
    client: Client,
) -> None:
    published = await publish_progress(client, 50)
    seen: list[str] = []
    async with aclosing(FleetFeed(client).events(durable="audit")) as first:
        async for delivered in first:
            seen.append(delivered.message.id)
            await delivered.ack()
            if len(seen) == 20:
                break
    more = await publish_progress(client, 10)
    async with aclosing(FleetFeed(client).events(durable="audit")) as second:
        async for delivered in second:
            seen.append(delivered.message.id)
            await delivered.ack()
    assert seen == published + more


async def test_replay_starts_at_a_time_or_a_sequence_and_filters_by_host_and_rollout(
    client: Client,
) -> None:
    await publish_progress(client, 5, host="h1", rollout="web-r1")
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    later = await publish_progress(client, 4, host="h2", rollout="web-r2")
    feed = FleetFeed(client)
    since = [d.message.id async for d in feed.events(since=middle)]
    assert since == later
    by_sequence = [d.sequence async for d in feed.events(start_sequence=7)]
    assert by_sequence == [7, 8, 9]
    assert [d.message.id async for d in feed.events(host="h2")] == later
    assert [d.message.id async for d in feed.events(rollout="web-r2")] == later
    assert [d.message.id async for d in feed.events(since=middle + timedelta(hours=1))] == []


async def test_workers_sharing_a_durable_name_split_the_stream_and_redeliver_a_dead_workers_share(
    client: Client, nats_server: NatsServer
) -> None:
    published = await publish_progress(client, 40)
    abandoned: list[str] = []
    # A worker that takes five messages and dies without acking them: its connection is
    # gone before it can hand anything back, so only ack_wait brings them back.
    dying = await nats.connect(nats_server.url, connect_timeout=5)
    dead = FleetFeed(dying).events(durable="group", ack_wait=1.0, batch=5)
    for _ in range(5):
        abandoned.append((await anext(dead)).message.id)
    await dying.close()
    await dead.aclose()

    handled: dict[str, list[str]] = {"a": [], "b": []}

    async def worker(name: str) -> None:
        feed = FleetFeed(client).events(durable="group", ack_wait=1.0, batch=3, follow=True)
        async with aclosing(feed) as stream:
            async for delivered in stream:
                handled[name].append(delivered.message.id)
                await delivered.ack()
                await asyncio.sleep(0.01)  # let the other worker take its turn
                if sum(len(ids) for ids in handled.values()) >= len(published):
                    return

    await asyncio.wait_for(asyncio.gather(worker("a"), worker("b")), 30)
    together = handled["a"] + handled["b"]
    assert sorted(together) == sorted(published)  # every message once, none twice
    assert handled["a"]
    assert handled["b"]
    assert set(abandoned) <= set(together)  # the dead worker's share came back


async def test_a_garbage_message_in_the_stream_is_skipped_and_counted_not_fatal(
    client: Client,
) -> None:
    js = client.jetstream(timeout=5)
    await js.publish("fleet.evt.h1.update_progress", b"\xc1 not msgpack")
    good = await publish_progress(client, 2)
    feed = FleetFeed(client)
    assert [d.message.id async for d in feed.events(durable="tolerant")] == good
    assert feed.stats.undecodable == 1


async def test_fleetctl_events_replays_filters_and_follows(
    client: Client, nats_server: NatsServer
) -> None:
    old = await publish_progress(client, 3, host="h1", rollout="web-r1")
    new = await publish_progress(client, 2, host="h2", rollout="web-r2")
    replay = await fleetctl(nats_server.url, "events", "--since", "10m", "-o", "json")
    assert replay.code == 0, replay
    lines = [json.loads(line) for line in replay.stdout.splitlines()]
    assert [line["id"] for line in lines] == old + new
    assert lines[0]["subject"] == "fleet.evt.h1.update_progress"
    only = await fleetctl(nats_server.url, "events", "--rollout", "web-r2")
    assert only.code == 0, only
    assert len(only.stdout.splitlines()) == 2
    assert all(" h2 update_progress web probing" in line for line in only.stdout.splitlines())
    bad = await fleetctl(nats_server.url, "events", "--since", "yesterday-ish")
    assert bad.code == 2
    assert "--since" in bad.stderr

    follower = await asyncio.create_subprocess_exec(
        fleetctl_executable(),
        "events",
        "-f",
        "--host",
        "h3",
        f"--nats={nats_server.url}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        await asyncio.sleep(1.0)  # subscribed and caught up
        await publish_progress(client, 1, host="h3")
        line = await asyncio.wait_for(follower.stdout.readline(), 15)
        assert b" h3 update_progress web probing event 0" in line
    finally:
        follower.terminate()
        await follower.wait()


async def test_streams_take_the_configured_retention_and_fleetctl_leaves_it_alone(
    client: Client,
) -> None:
    js = client.jetstream(timeout=5)
    tuned = StreamRetention(duplicate_window=60, logs=StreamLimits(max_age=3600, max_bytes=GIB))
    await ensure_streams(js, tuned)
    await ensure_streams(js, None)  # what fleetctl's verbs do
    logs = (await js.stream_info(subjects.LOGS_STREAM)).config
    assert (logs.max_age, logs.max_bytes, logs.duplicate_window) == (3600, GIB, 60)
    assert logs.subjects == [subjects.LOGS_WILDCARD]
