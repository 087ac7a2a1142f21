"""A whole-prefix read of a bucket while its stream elects a new leader, on a real
nats-server: JetStream answers "unavailable" or not at all for a few seconds, and the
read is started again whole instead of failing the operator's command (seen in CI: a
`rollout status -w` ended with `KV read of host.web-r1.* failed: ServiceUnavailableError`
while the cluster test killed a node)."""

from __future__ import annotations

import re
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.kv import KeyValue

from controller.state.store import kv_latest
from protocol import jetstream_start
from protocol.errors import BrokerError

pytestmark = pytest.mark.integration


class ElectingJetStream(JetStreamContext):
    """The bucket's JetStream, refusing the first ``refusals`` reads as a stream whose
    leader is being elected does, and, with ``cut_after`` set, timing out the first
    read after that many batches (a leader lost half-way)."""

    def __init__(self, client: Client, refusals: int, cut_after: int | None = None) -> None:
        super().__init__(client, timeout=5)
        self.refusals = refusals
        self.cut_after = cut_after
        self.reads_started = 0

    async def add_consumer(self, *args: Any, **kwargs: Any) -> ConsumerInfo:
        self.reads_started += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise nats.js.errors.ServiceUnavailableError(code=503, description="no leader")
        return await super().add_consumer(*args, **kwargs)

    async def pull_subscribe_bind(
        self, *args: Any, **kwargs: Any
    ) -> JetStreamContext.PullSubscription:
        subscription = await super().pull_subscribe_bind(*args, **kwargs)
        if self.cut_after is not None:
            cut_after, self.cut_after = self.cut_after, None
            subscription.fetch = cut_short(subscription.fetch, cut_after)  # type: ignore[method-assign]
        return subscription


def cut_short(fetch: Any, batches: int) -> Any:
    left = [batches]

    async def fetch_then_time_out(*args: Any, **kwargs: Any) -> Any:
        if left[0] == 0:
            raise TimeoutError
        left[0] -= 1
        return await fetch(*args, **kwargs)

    return fetch_then_time_out


def electing(bucket: KeyValue, js: ElectingJetStream) -> KeyValue:
    return KeyValue(bucket._name, bucket._stream, bucket._pre, js, bucket._direct)


async def written(bucket: KeyValue, count: int) -> dict[str, bytes]:
    values = {f"host.web-r1.h{i:05d}": f"entry {i}".encode() for i in range(count)}
    for key, value in values.items():
        await bucket.put(key, value)
    return values


async def test_a_read_refused_while_a_leader_is_elected_is_asked_again_and_gets_every_entry(
    bucket: KeyValue,
) -> None:
    values = await written(bucket, 40)
    js = ElectingJetStream(bucket._js._nc, refusals=2)
    latest = await kv_latest(electing(bucket, js), "host.web-r1.")
    assert {key: entry.value for key, entry in latest.items()} == values
    assert js.reads_started == 3


async def test_a_read_cut_half_way_is_started_again_whole_not_taken_in_part(
    bucket: KeyValue,
) -> None:
    values = await written(bucket, 2500)  # three batches of at most 1,000
    js = ElectingJetStream(bucket._js._nc, refusals=0, cut_after=1)
    latest = await kv_latest(electing(bucket, js), "host.web-r1.")
    assert {key: entry.value for key, entry in latest.items()} == values
    assert js.reads_started == 2


async def test_a_stream_that_stays_unavailable_fails_the_read_with_a_named_error(
    bucket: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await written(bucket, 3)
    monkeypatch.setattr(jetstream_start, "FAILOVER_SECONDS", 0.5)
    js = ElectingJetStream(bucket._js._nc, refusals=1_000)
    with pytest.raises(
        BrokerError, match=re.escape("KV read of host.web-r1.* failed: ServiceUnavailable")
    ):
        await kv_latest(electing(bucket, js), "host.web-r1.")
    assert js.reads_started > 1
