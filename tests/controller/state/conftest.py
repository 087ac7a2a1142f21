"""The rollouts bucket on the session's real nats-server, as the controller opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from controller.broker import NatsServer
from controller.state.store import open_buckets


@pytest.fixture
async def bucket(nats_server: NatsServer) -> AsyncIterator[KeyValue]:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        rollouts_kv, _, _ = await open_buckets(client.jetstream(timeout=5))
        yield rollouts_kv
    finally:
        await client.close()
