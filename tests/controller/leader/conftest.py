"""What the leader's tests share: a client of the session's nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from controller.broker import NatsServer


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connected = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield connected
    finally:
        await connected.close()
