"""The inventory's health view (made once a heartbeat) says what fleet_health says from
the same facts (made once a pass): differential, over generated fleets."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import cast

from hypothesis import event, given, settings
from hypothesis import strategies as st
from nats.js.kv import KeyValue

from controller.state.inventory import Inventory, fleet_health
from protocol.models import ContainerState, Health, HostFacts, ServiceStatus

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
TIMEOUT = 30.0
SERVICES = ("web", "db")

statuses = st.builds(
    ServiceStatus,
    name=st.sampled_from(SERVICES),
    # Running half the time: serving hosts are the ones rollouts count on.
    state=st.sampled_from(ContainerState) | st.just(ContainerState.RUNNING),
    health=st.sampled_from(Health),
)


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, HostFacts]:
    hosts = draw(st.lists(st.sampled_from([f"h{i}" for i in range(8)]), unique=True))
    found = {}
    for host in hosts:
        age = draw(st.sampled_from([0.0, 29.9, 30.0, 30.1, 300.0]))
        found[host] = HostFacts(
            sender=host,
            host=host,
            sent_at=NOW - timedelta(seconds=age),
            agent_version="test",
            cpus=1,
            memory_total=1,
            memory_available=1,
            disk_total=1,
            disk_free=1,
            services=tuple(draw(st.lists(statuses, max_size=3))),
        )
    return found


def test_the_inventory_health_is_fleet_health_of_the_same_facts() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(fleets(), st.sampled_from(SERVICES))
    def check(facts: dict[str, HostFacts], service: str) -> None:
        inventory = Inventory(cast(KeyValue, None))
        for host, host_facts in facts.items():
            inventory.add(host, host_facts)
        asked = [*facts, "never-heard-of"]
        found = inventory.health(asked, service, NOW, TIMEOUT)
        assert found == fleet_health(asked, service, facts, NOW, TIMEOUT)
        for health in found.values():
            kind = "offline" if not health.online else f"serving={health.serving}"
            event(kind)
            reached[kind] += 1

    check()
    # Each verdict was compared, many times over.
    assert set(reached) == {"offline", "serving=True", "serving=False", "serving=None"}
    assert min(reached.values()) >= 20, reached


def test_a_heartbeat_marks_its_host_changed_only_when_convergence_would_judge_it_anew() -> None:
    inventory = Inventory(cast(KeyValue, None), host_timeout=TIMEOUT)
    woken = Counter[str]()
    inventory.on_change = lambda: woken.update(["wake"])
    running = ServiceStatus(name="web", state=ContainerState.RUNNING, fingerprint="f1")

    def beat(age: float, *statuses: ServiceStatus, **labels: str) -> HostFacts:
        return HostFacts(
            sender="h1",
            host="h1",
            sent_at=NOW + timedelta(seconds=age),
            labels=labels,
            agent_version="test",
            cpus=1,
            memory_total=1,
            memory_available=1,
            disk_total=1,
            disk_free=1,
            services=statuses,
        )

    steps = [
        ("first heard of", beat(0, running), True),
        ("the same again, memory aside", beat(1, running).model_copy(update={"cpus": 2}), False),
        ("another fingerprint", beat(2, running.model_copy(update={"fingerprint": "f2"})), True),
        (
            "drifted",
            beat(3, running.model_copy(update={"fingerprint": "f2", "drift": "removed"})),
            True,
        ),
        (
            "labels changed",
            beat(
                4, running.model_copy(update={"fingerprint": "f2", "drift": "removed"}), role="db"
            ),
            True,
        ),
        (
            "back after a silence",
            beat(
                4 + TIMEOUT + 1,
                running.model_copy(update={"fingerprint": "f2", "drift": "removed"}),
                role="db",
            ),
            True,
        ),
    ]
    for what, facts, changed in steps:
        inventory.add("h1", facts)
        assert (what, inventory.take_changed()) == (what, {"h1"} if changed else set())
    assert woken["wake"] == sum(1 for _, _, changed in steps if changed)
