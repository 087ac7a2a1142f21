"""The fleet on a 3-node NATS cluster survives losing the node that leads its state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client

from controller.broker import NatsServer, find_nats_server_binary, start_cluster
from fleet_lab.agent_client import connect
from protocol import subjects
from protocol.models import UpdatePhase, UpdateProgress
from tests.conftest import FleetFactory
from tests.support.events import EventRecorder
from tests.support.fleet import spawn_fleetctl

pytestmark = pytest.mark.integration
REPLICATED = {"FLEET_STREAMS": json.dumps({"replicas": 3})}
BUCKET_STREAMS = tuple(
    f"KV_{bucket}"
    for bucket in (
        subjects.ROLLOUTS_BUCKET,
        subjects.SERVICES_BUCKET,
        subjects.HOSTS_BUCKET,
        subjects.CONFIG_BUCKET,
    )
)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    servers = await start_cluster(find_nats_server_binary(), tmp_path / "cluster")
    try:
        yield servers
    finally:
        await asyncio.gather(*(server.stop() for server in servers))


async def replicas_and_leader(client: Client, stream: str) -> tuple[int | None, str | None]:
    info = await client.jetstream(timeout=5).stream_info(stream)
    leader = info.cluster.leader if info.cluster is not None else None
    return info.config.num_replicas, leader


async def wait_until_current(client: Client, stream: str, peers: int) -> None:
    """Until the stream has a leader and ``peers`` other replicas that are current."""
    for _ in range(300):
        try:
            info = await client.jetstream(timeout=5).stream_info(stream)
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        replicas = (info.cluster.replicas or []) if info.cluster else []
        if info.cluster and info.cluster.leader and sum(bool(r.current) for r in replicas) >= peers:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{stream} never had a leader and {peers} current peers")


async def test_a_rollout_completes_within_budget_when_the_node_leading_its_bucket_is_killed(
    cluster: list[NatsServer], fleet_factory: FleetFactory
) -> None:
    urls = [server.url for server in cluster]
    # As an older version left it: one copy, on whichever node took it.
    old = await connect(urls)
    try:
        for _ in range(100):  # until the new cluster has elected its JetStream leader
            try:
                await old.jetstream(timeout=2).create_key_value(bucket=subjects.ROLLOUTS_BUCKET)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)
        assert (await replicas_and_leader(old, "KV_fleet_rollouts"))[0] == 1
    finally:
        await old.close()
    fleet = await fleet_factory(size=3, nats_urls=urls, env=REPLICATED)
    client = fleet.agents[0].api.client
    # Created (or, for the rollouts bucket, brought) by the fleet to the operator's replica
    # count, like the streams.
    for stream in BUCKET_STREAMS:
        assert (await replicas_and_leader(client, stream))[0] == 3, stream

    progress = f"{subjects.PREFIX}.evt.*.update_progress"
    async with EventRecorder(client, progress) as events:
        rollout = await spawn_fleetctl(
            fleet.nats_url,
            "rollout",
            "start",
            "web",
            "--image",
            fleet.stack.demo_image("1.1.0"),
            "--max-unavailable",
            "1",
            "-w",
            env={"FLEET_SIGNING_KEY_FILE": str(fleet.signing_key_file)},
        )
        await events.wait_for(
            lambda m: isinstance(m, UpdateProgress) and m.phase is UpdatePhase.STOPPING_OLD,
            timeout=60,
        )
        # The node leading the bucket now, once its peers are current, dies mid-rollout.
        await wait_until_current(client, "KV_fleet_rollouts", peers=2)
        _, leader = await replicas_and_leader(client, "KV_fleet_rollouts")
        doomed = next(server for server in cluster if server.name == leader)
        await doomed.kill()  # SIGKILL
        out, err = await asyncio.wait_for(rollout.communicate(), 180)
    assert rollout.returncode == 0, (out.decode(), err.decode(), fleet.controller.log_text())
    assert await fleet.versions() == {agent.api.host: "1.1.0" for agent in fleet.agents}
    survivors = await connect([s.url for s in cluster if s is not doomed])
    try:
        _, new_leader = await replicas_and_leader(survivors, "KV_fleet_rollouts")
        assert new_leader not in (None, doomed.name)
    finally:
        await survivors.close()
    assert "Traceback" not in fleet.controller.log_text()

    # The node comes back and catches up: every bucket is whole again.
    await doomed.start()
    for stream in BUCKET_STREAMS:
        await wait_until_current(client, stream, peers=2)
