"""A host's health for the planner, from its last heartbeat, by the README's rules: the
inventory's view (made once a heartbeat) and fleet_health (made once a pass) both."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import cast

from hypothesis import event, given, settings
from hypothesis import strategies as st
from nats.js.kv import KeyValue

from controller.rollouts.host_health import HostHealth
from controller.state.inventory import Inventory, fleet_health
from protocol.models import ContainerState, Health, HostFacts, ServiceStatus
from tests.support.heartbeats import facts_with

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
def heartbeats(draw: st.DrawFn, host: str, at: datetime = NOW) -> HostFacts:
    """One heartbeat of ``host``, of any age at ``at`` around the host timeout."""
    age = draw(st.sampled_from([0.0, 29.9, 30.0, 30.1, 300.0]))
    services = tuple(draw(st.lists(statuses, max_size=3)))
    engine_down = draw(st.sampled_from([False, False, False, True]))
    return facts_with(host, services, at - timedelta(seconds=age), engine_down=engine_down)


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, HostFacts]:
    hosts = draw(st.lists(st.sampled_from([f"h{i}" for i in range(8)]), unique=True))
    return {host: draw(heartbeats(host)) for host in hosts}


def by_the_readme(facts: HostFacts | None, service: str, at: datetime = NOW) -> HostHealth:
    """Offline: never heard of, or the last heartbeat (at ``at``) older than the host
    timeout. Online, the service is serving while its container runs and is not
    unhealthy, not serving otherwise, and absent (None) where the host does not run it.
    A host whose agent reports its engine down is out of rollouts (not online), whatever
    its services were last seen doing."""
    if facts is None:
        return HostHealth(online=False, serving=None, last_seen=None)
    if (at - facts.sent_at).total_seconds() > TIMEOUT:
        return HostHealth(online=False, serving=None, last_seen=facts.sent_at)
    if facts.engine_down:
        return HostHealth(online=False, serving=None, last_seen=facts.sent_at, engine_down=True)
    reported = [s for s in facts.services if s.name == service]
    if not reported or reported[0].state is ContainerState.ABSENT:
        return HostHealth(online=True, serving=None, last_seen=facts.sent_at)
    status = reported[0]
    serving = status.state is ContainerState.RUNNING and status.health is not Health.UNHEALTHY
    return HostHealth(online=True, serving=serving, last_seen=facts.sent_at)


def test_the_planners_view_of_each_host_follows_the_readme_rules() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(fleets(), st.sampled_from(SERVICES))
    def check(facts: dict[str, HostFacts], service: str) -> None:
        inventory = Inventory(cast(KeyValue, None))
        for host, host_facts in facts.items():
            inventory.add(host, host_facts)
        asked = [*facts, "never-heard-of"]
        expected = {host: by_the_readme(facts.get(host), service) for host in asked}
        found = inventory.health(asked, service, NOW, TIMEOUT)
        assert found == expected
        assert fleet_health(asked, service, facts, NOW, TIMEOUT) == expected
        for health in found.values():
            kind = "offline" if not health.online else f"serving={health.serving}"
            kind = "engine down" if health.engine_down else kind
            event(kind)
            reached[kind] += 1

    check()
    # Each verdict was compared, many times over.
    assert set(reached) == {
        "offline",
        "engine down",
        "serving=True",
        "serving=False",
        "serving=None",
    }
    assert min(reached.values()) >= 20, reached


def test_a_heartbeat_marks_its_host_changed_only_when_convergence_would_judge_it_anew() -> None:
    inventory = Inventory(cast(KeyValue, None), host_timeout=TIMEOUT)
    woken = Counter[str]()
    inventory.on_change = lambda: woken.update(["wake"])
    running = ServiceStatus(name="web", state=ContainerState.RUNNING, fingerprint="f1")

    def beat(age: float, *statuses: ServiceStatus, **labels: str) -> HostFacts:
        return facts_with("h1", statuses, NOW + timedelta(seconds=age), labels)

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
    last = steps[-1][1]
    steps += [
        ("its engine down", last.model_copy(update={"engine_down": True}), True),
        ("still down", last.model_copy(update={"engine_down": True, "cpus": 3}), False),
        ("its engine back", last.model_copy(update={"cpus": 4}), True),
    ]
    for what, facts, changed in steps:
        inventory.add("h1", facts)
        assert (what, inventory.take_changed()) == (what, {"h1"} if changed else set())
    assert woken["wake"] == sum(1 for _, _, changed in steps if changed)
