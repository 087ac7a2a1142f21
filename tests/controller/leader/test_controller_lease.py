"""Controllers that start at once: exactly one leads, over a real nats-server's KV."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats
import pytest

from controller.broker import NatsServer
from controller.leader.lease import LeaderLease
from controller.rollouts.model import RolloutSpec, rollout_id
from controller.state.intents import Fleet
from controller.state.store import open_buckets
from protocol import subjects
from tests.conftest import FleetFactory
from tests.support.events import EventRecorder
from tests.support.fleet import BudgetChecker

pytestmark = pytest.mark.integration
TTL = 5.0


async def test_of_eight_controllers_racing_for_the_lease_exactly_one_wins_each_round(
    nats_server: NatsServer,
) -> None:
    clients = [await nats.connect(nats_server.url, connect_timeout=5) for _ in range(8)]
    try:
        leases = []
        for index, client in enumerate(clients):
            rollouts, _, _ = await open_buckets(client.jetstream(timeout=5))
            leases.append(LeaderLease(rollouts, f"c{index}", TTL))
        start = datetime.now(UTC)
        for round_number, offset in enumerate((0.0, 1.0, TTL + 1, TTL + 2, 3 * TTL)):
            now = start + timedelta(seconds=offset)
            won = await asyncio.gather(*(lease.hold(now) for lease in leases))
            assert sum(won) == 1, (round_number, won)
            if round_number == 0:
                first = won.index(True)
            if round_number == 1:  # before expiry only the holder renews
                assert won.index(True) == first
        holder = leases[won.index(True)]
        await holder.release()  # a clean shutdown hands over at once, no TTL wait
        later = start + timedelta(seconds=3 * TTL + 1)
        won = await asyncio.gather(*(lease.hold(later) for lease in leases if lease is not holder))
        assert sum(won) == 1
    finally:
        for client in clients:
            await client.close()


async def test_two_controllers_started_together_update_each_host_exactly_once(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(4)
    await fleet.controller.stop()
    pair = [fleet.another_controller(n) for n in ("twin-a", "twin-b")]
    await asyncio.gather(*(controller.start() for controller in pair))
    try:
        async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
            result = await fleet.roll("1.1.0", "--max-unavailable", "1", "-w")
        logs = [controller.log_text() for controller in pair]
        assert result.code == 0, (result, logs)
        leaders = [log for log in logs if "is the leader" in log]
        assert len(leaders) == 1, logs
        checker = BudgetChecker.of(events)
        assert checker.peak() <= 1
        assert checker.updates_per_host() == {agent.api.host: 1 for agent in fleet.agents}
        assert set((await fleet.versions()).values()) == {"1.1.0"}
    finally:
        for controller in pair:
            await controller.stop()


async def test_a_claim_whose_record_is_still_being_written_is_not_taken_away(
    fleet_factory: FleetFactory,
) -> None:
    """fleetctl claims the service, then writes the record: the controller's passes in
    between (several, here) must leave the claim alone, or the rollout is never driven."""
    fleet = await fleet_factory(1)
    client = await nats.connect(fleet.nats_url, connect_timeout=5)
    try:
        operator = await Fleet(client, signer=fleet.signer).open()
        record, _ = await operator.plan_rollout(
            "web", fleet.stack.demo_image("1.1.0"), RolloutSpec()
        )
        await operator.rollouts.claim_service("web", record.id)
        await asyncio.sleep(3)  # 15 passes at the fixture's 0.2 s tick
        assert await operator.rollouts.active_id("web") == record.id
        await operator.services.add_revision(
            "web", record.target, lambda n: rollout_id("web", n), record.created_at
        )
        await operator.rollouts.create(record)
    finally:
        await client.close()
    done = await fleet.fleetctl("rollout", "status", "web", "-w")
    assert done.code == 0, (done, fleet.controller.log_text())
    assert set((await fleet.versions()).values()) == {"1.1.0"}
