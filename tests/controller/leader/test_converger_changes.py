"""The convergence pass between full passes: only the hosts whose heartbeats changed are
judged, and a convergence rollout in progress takes the ones that need its revision.

The real converger over a real nats-server's KV; heartbeats are built (no agents).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import nats
import pytest

from controller.broker import NatsServer
from controller.leader.convergence_loop import ConvergenceLoop, reckoner
from controller.leader.converger import Converger, Passed
from controller.rollouts.convergence import Desired, DriftPolicy, convergence_record
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from controller.state.inventory import Inventory
from controller.state.rollout_store import RolloutStore
from controller.state.services import ServiceStore
from controller.state.store import open_buckets
from protocol.models import ConvergenceAction, ConvergenceEvent, Drift, Envelope, utc_now
from protocol.spec import ServiceSpec
from tests.support.heartbeats import heartbeat
from tests.support.records import web_rollout

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
SPEC = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")


async def test_only_changed_hosts_are_judged_and_a_convergence_rollout_takes_the_late_ones(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        rollouts_kv, services_kv, _ = await open_buckets(client.jetstream(timeout=5))
        rollouts, services = RolloutStore(rollouts_kv), ServiceStore(services_kv)
        policy = RolloutSpec(max_unavailable=1)
        await services.add_revision("web", SPEC, lambda n: f"web-r{n}", NOW, policy=policy)
        await services.mark_current("web", 1)
        told: list[Envelope] = []

        async def publish(subject: str, event: Envelope) -> None:
            told.append(event)

        converger = Converger(rollouts, services, publish, host_timeout=30)
        facts = {host: heartbeat(host, {}, None, NOW) for host in ("a", "b", "c")}

        # An idle service, and only a's heartbeat changed: a convergence rollout of a.
        first = await converger.run_pass({}, facts, NOW, only={"a"})
        (started,) = first.started
        rollout_id = started.id
        stored = await rollouts.get(rollout_id)
        assert stored is not None
        assert stored.record == started
        assert (set(started.hosts), first.joins) == ({"a"}, {})

        # While it runs, b's heartbeat changes: b joins it; c was not judged.
        running: dict[str, RolloutRecord | None] = {"web": stored.record}
        assert await converger.run_pass(running, facts, NOW, only={"b"}) == Passed(
            joins={rollout_id: ["b"]}
        )
        # The full pass judges every host: b and c (a is in it already), and counts the
        # fleet it is paced against again: e, which runs the service already, came. (b and
        # c are not its hosts yet; once taken in, they leave its others: see reckoner.)
        facts["e"] = heartbeat("e", {}, SPEC, NOW)
        assert await converger.run_pass(running, facts, NOW) == Passed(
            joins={rollout_id: ["b", "c"]}, others={rollout_id: ("b", "c", "e")}
        )
        del facts["e"]
        # A drifted host taken into it is announced repaired once the rollout did it.
        facts["d"] = heartbeat("d", {}, SPEC, NOW, Drift.REMOVED)
        assert await converger.run_pass(running, facts, NOW, only={"d"}) == Passed(
            joins={rollout_id: ["d"]}
        )
        done = HostRecord(phase=HostPhase.DONE, since=NOW)
        finished = stored.record.model_copy(
            update={"hosts": {"a": done, "d": done}, "status": RolloutStatus.COMPLETE}
        )
        await converger.finished(finished, NOW)
        # An operator's rollout in progress, or a claim without its record: nobody judged.
        operator = stored.record.model_copy(update={"converging": False})
        assert await converger.run_pass({"web": operator}, facts, NOW) == Passed()
        assert await converger.run_pass({"web": None}, facts, NOW) == Passed()
    finally:
        await client.close()
    # Each host's need told once, when first judged.
    assert [(e.host, e.action) for e in told if isinstance(e, ConvergenceEvent)] == [
        ("a", ConvergenceAction.DEPLOY),
        ("b", ConvergenceAction.DEPLOY),
        ("c", ConvergenceAction.DEPLOY),
        ("d", ConvergenceAction.DRIFT_DETECTED),
        ("d", ConvergenceAction.DRIFT_REPAIRED),
    ]


def test_the_others_of_a_convergence_rollout_leave_out_the_hosts_it_has_taken_in() -> None:
    record = convergence_record(
        Desired("web", 1, SPEC, {}, DriftPolicy.REPAIR), RolloutSpec(), ["a", "b"], NOW
    )
    counted = reckoner(("b", "c", "e"))(record)
    assert counted.others == ("c", "e")  # b is one of its own hosts by now
    assert reckoner(("c", "e"))(counted) is counted  # nothing changed: the same record
    operators = record.model_copy(update={"converging": False})
    assert reckoner(("c",))(operators) is operators  # only a convergence rollout has others


async def test_a_host_left_to_an_operators_rollout_is_judged_as_soon_as_that_rollout_ends(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        rollouts_kv, services_kv, hosts_kv = await open_buckets(client.jetstream(timeout=5))
        services = ServiceStore(services_kv)
        declared = RolloutSpec(max_unavailable=1)
        await services.add_revision("web", SPEC, lambda n: f"web-r{n}", NOW, policy=declared)
        await services.mark_current("web", 1)

        async def publish(subject: str, event: Envelope) -> None:
            pass

        converger = Converger(RolloutStore(rollouts_kv), services, publish, host_timeout=30)
        inventory = Inventory(hosts_kv, host_timeout=30)
        # A full pass once an hour: only the end of the rollout can make one come sooner.
        loop = ConvergenceLoop(converger, inventory, interval=3600)
        began = utc_now()
        inventory.add("a", heartbeat("a", {}, SPEC, began))
        assert await loop.full_if_due() == Passed()  # a runs web: nothing to do

        # An operator's rollout of web has just written itself complete; until the
        # leader has released the service it is web's rollout, and a host without web
        # that comes now (after it ended, so judged by the README's rule) is left to it.
        ended = web_rollout({"a": HostRecord(since=began)}, began, RolloutStatus.COMPLETE)
        loop.active = {"web": ended}
        inventory.add("late", heartbeat("late", {}, None, began + timedelta(seconds=1)))
        assert await loop.changes() == Passed()
        assert await loop.changes() is None  # taken, and nobody would look at it again
        converger.settled(ended)

        # Another rollout's end (one this one superseded) changes nothing.
        loop.ended(ended.model_copy(update={"id": "web-r1"}))
        assert loop.active == {"web": ended}
        assert await loop.changes() is None

        loop.ended(ended)
        passed = await loop.changes()

        assert passed is not None
        (started,) = passed.started
        assert (started.service, set(started.hosts)) == ("web", {"late"})
        assert loop.active == {"web": started}
        assert await loop.changes() is None  # the next full pass an hour on, as before
    finally:
        await client.close()
