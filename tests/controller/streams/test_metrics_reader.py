"""The canary-analysis metrics reader outlives what breaks under it, and says when it has
no data (issue 14: it "restarts after any error and reports that analysis has no data,
instead of stopping silently").

A real nats-server; samples published the way agents publish them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client

from controller.broker import NatsServer
from controller.rollouts.analysis import Verdict, analyse
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.model import RolloutRecord
from controller.state.store import ensure_streams
from controller.streams.metrics_view import MetricsReader
from protocol import subjects
from protocol.codec import encode
from protocol.models import utc_now
from tests.controller.rollouts.test_analysis import NEW_IMAGE, canary_record, sample

pytestmark = pytest.mark.integration
INTERVAL = 0.5
"""The samples' interval: stale 1.5 s after they were sent, so "no data" comes soon."""


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        await ensure_streams(nc.jetstream(timeout=5), None)
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def reading(client: Client) -> AsyncIterator[MetricsReader]:
    reader = MetricsReader(client, FleetMetrics(), first_retry=0.05, max_retry=0.4, settle=0.3)
    task = asyncio.create_task(reader.run(), name="metrics-reader")
    try:
        yield reader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def publish(client: Client, restarts: int) -> None:
    """A fresh sample of the canary (host-000) running the new version."""
    fresh = sample("host-000", NEW_IMAGE, restarts=restarts).model_copy(
        update={"sent_at": utc_now(), "interval": INTERVAL}
    )
    await client.jetstream(timeout=5).publish(
        subjects.metrics_subject("host-000"), encode(fresh), timeout=5
    )


async def until(what: str, condition: Callable[[], bool], deadline_s: float = 20.0) -> None:
    for _ in range(int(deadline_s * 20)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def verdict(record: RolloutRecord, reader: MetricsReader) -> Verdict:
    return analyse(record, reader.view, utc_now())


async def test_the_reader_reads_new_samples_after_the_metrics_stream_is_deleted_and_made_again(
    client: Client, reading: MetricsReader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetctl.metrics")
    record = canary_record("restarts<=0")
    await publish(client, restarts=0)
    await until("restarts measured", lambda: verdict(record, reading).measurements != ())

    js = client.jetstream(timeout=5)
    await js.delete_stream(subjects.METRICS_STREAM)
    started = reading.readings
    await until("three more readings tried", lambda: reading.readings >= started + 3)
    await until("no data", lambda: verdict(record, reading).no_data is not None)
    no_data = verdict(record, reading).no_data
    assert no_data is not None
    assert no_data.startswith("analysis has no data: the metrics feed is down"), no_data

    # Made again, still empty: read again, and the reason is now the missing sample.
    await ensure_streams(js, None)
    await until("read again", lambda: reading.view.feed_problem is None)
    no_data = verdict(record, reading).no_data
    assert no_data is not None
    assert no_data.startswith("analysis has no data: no fresh metrics sample"), no_data
    assert "host-000" in no_data

    await publish(client, restarts=2)
    failed = "analysis check restarts failed: restarts = 2, limit 0"
    await until("the new sample read", lambda: verdict(record, reading).failure == failed)
    said = [r.getMessage() for r in caplog.records if r.name == "fleetctl.metrics"]
    assert len(said) == 2, said  # down once, back once: not one line per attempt
    assert said[0].startswith("metrics feed down"), said
    assert said[1].startswith("metrics feed read again"), said


async def test_the_reader_reads_new_samples_after_its_consumer_is_deleted(
    client: Client, reading: MetricsReader
) -> None:
    record = canary_record("restarts<=0")
    await publish(client, restarts=0)
    await until("restarts measured", lambda: verdict(record, reading).measurements != ())

    js = client.jetstream(timeout=5)
    consumers = await js.consumers_info(subjects.METRICS_STREAM)
    assert len(consumers) == 1, consumers
    await js.delete_consumer(subjects.METRICS_STREAM, consumers[0].name)
    await publish(client, restarts=2)
    failed = "analysis check restarts failed: restarts = 2, limit 0"
    await until("the new sample read", lambda: verdict(record, reading).failure == failed)
    assert reading.readings >= 2
