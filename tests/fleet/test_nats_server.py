"""The test broker is a real nats-server with JetStream that tests can kill and restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import pytest
from nats.js.api import KeyValueConfig

from controller.broker import NatsServer
from protocol.subjects import HOSTS_BUCKET
from tests.conftest import ClusterFactory

T = TypeVar("T")

pytestmark = pytest.mark.integration


async def test_nats_server_accepts_a_connection_and_a_jetstream_kv_put_and_get(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        kv = await client.jetstream().create_key_value(bucket=HOSTS_BUCKET)
        revision = await kv.put("web-1", b"facts")
        entry = await kv.get("web-1")
        assert entry.value == b"facts"
        assert entry.revision == revision
        assert await kv.keys() == ["web-1"]
    finally:
        await client.close()


async def test_a_killed_server_restarts_on_its_port_with_its_jetstream_data(
    nats_server: NatsServer,
) -> None:
    url = nats_server.url
    client = await nats.connect(url, connect_timeout=5)
    kv = await client.jetstream().create_key_value(bucket=HOSTS_BUCKET)
    await kv.put("web-1", b"before the crash")
    await client.close()

    await nats_server.kill()
    assert not nats_server.running
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(nats_server.host, nats_server.port)

    await nats_server.start()
    assert nats_server.url == url
    client = await nats.connect(url, connect_timeout=5)
    try:
        kv = await client.jetstream().key_value(HOSTS_BUCKET)
        assert (await kv.get("web-1")).value == b"before the crash"
    finally:
        await client.close()


async def test_a_client_reconnects_by_itself_after_the_server_comes_back(
    nats_server: NatsServer,
) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client = await nats.connect(
        nats_server.url, reconnected_cb=on_reconnect, reconnect_time_wait=0.1, connect_timeout=2
    )
    try:
        await nats_server.kill()
        await nats_server.start()
        await asyncio.wait_for(reconnected.wait(), timeout=15)
        reply_subject = "smoke.echo"
        subscription = await client.subscribe(reply_subject)
        await client.publish(reply_subject, b"still here")
        message = await subscription.next_msg(timeout=5)
        assert message.data == b"still here"
    finally:
        await client.close()


async def test_a_three_node_cluster_keeps_replicated_kv_readable_when_one_node_dies(
    nats_cluster: ClusterFactory,
) -> None:
    servers = await nats_cluster(3)
    urls = [server.url for server in servers]
    client = await nats.connect(servers=urls, connect_timeout=5, reconnect_time_wait=0.1)
    try:
        js = client.jetstream(timeout=10)
        kv = await _retry_until_cluster_ready(
            lambda: js.create_key_value(KeyValueConfig(bucket=HOSTS_BUCKET, replicas=3))
        )
        await kv.put("web-1", b"replicated")
        await servers[0].kill()
        survivor = await nats.connect(urls[1], connect_timeout=5)
        try:
            survivor_kv = await _retry_until_cluster_ready(
                lambda: survivor.jetstream(timeout=10).key_value(HOSTS_BUCKET)
            )
            entry = await _retry_until_cluster_ready(lambda: survivor_kv.get("web-1"))
            assert entry.value == b"replicated"
        finally:
            await survivor.close()
    finally:
        await client.close()


async def _retry_until_cluster_ready(
    make_call: Callable[[], Awaitable[T]], attempts: int = 50
) -> T:
    """JetStream answers 'no suitable peers' or times out until the meta leader is elected."""
    for attempt in range(attempts):
        try:
            return await make_call()
        except (
            nats.js.errors.ServiceUnavailableError,
            nats.js.errors.APIError,
            TimeoutError,
            nats.errors.TimeoutError,
        ):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")
