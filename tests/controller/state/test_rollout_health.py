"""The health a rollout's passes plan against, kept between passes and brought up to date
from the heartbeats heard meanwhile and those grown too old, is at every pass what the
README's rules give for each host's last heartbeat at that moment."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js.kv import KeyValue

from controller.rollouts.host_health import HostHealth
from controller.rollouts.model import HostRecord
from controller.state.inventory import Inventory
from controller.state.rollout_health import RolloutHealth
from protocol.models import ContainerState, Health, ServiceStatus
from tests.controller.state.test_inventory_health import NOW, TIMEOUT, by_the_readme, statuses
from tests.support.heartbeats import facts_with
from tests.support.records import web_rollout

HOSTS = tuple(f"h{i}" for i in range(6))
OTHERS = ("o1", "o2")
"""Other matching hosts a convergence rollout counts against its budget."""


STEPS = (0.0, 0.1, 15.0, 29.9, 30.1)
"""Seconds between two passes: heartbeats grow older than the host timeout meanwhile."""


@st.composite
def news(draw: st.DrawFn) -> tuple[str, str, float, tuple[ServiceStatus, ...]]:
    """Between two passes: a host's heartbeat (its age when it comes, its services), its
    entry gone from the bucket, a host taking part in the rollout from now on, or one
    matching the service in place of another (as many others as before)."""
    host = draw(st.sampled_from([*HOSTS, *OTHERS, "joiner", "stranger", "o3"]))
    what = draw(st.sampled_from(["beat", "beat", "gone", "joins", "matches"]))
    age = draw(st.sampled_from([0.0, 0.0, 29.9, 30.1]))
    return what, host, age, tuple(draw(st.lists(statuses, max_size=2)))


def test_a_rollouts_kept_health_follows_the_readme_rules_as_hosts_beat_and_fall_silent() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(
        passes=st.lists(
            st.tuples(st.sampled_from(STEPS), st.lists(news(), max_size=8)),
            min_size=1,
            max_size=6,
        ),
        kept=st.sampled_from([3, 10_000]),
    )
    def check(
        passes: list[tuple[float, list[tuple[str, str, float, tuple[ServiceStatus, ...]]]]],
        kept: int,
    ) -> None:
        inventory = Inventory(cast(KeyValue, None), TIMEOUT, heard_kept=kept)
        record = web_rollout({h: HostRecord(since=NOW) for h in HOSTS[:3]}, NOW)
        record = record.model_copy(update={"others": OTHERS})
        health = RolloutHealth(inventory, TIMEOUT, whole_every=3600.0)  # never whole again
        now = NOW
        health.of(record, now)
        health.noted(record.id, health.looked_at(record.id))
        before = {h: by_the_readme(None, "web") for h in record.hosts}
        for step, between in passes:
            now += timedelta(seconds=step)
            for what, host, age, services in between:
                if what == "beat":
                    inventory.add(host, facts_with(host, services, now - timedelta(seconds=age)))
                elif what == "gone":
                    inventory.forget(host)
                elif what == "matches":
                    if host not in record.others and host not in record.hosts:
                        others = (*record.others[1:], host)
                        record = record.model_copy(update={"others": others})
                        reached["another host matches, as many as before"] += 1
                else:
                    joined = {**record.hosts, host: HostRecord(since=NOW)}
                    record = record.model_copy(update={"hosts": joined})
            view = health.of(record, now)

            asked = [*record.hosts, *record.others]
            expected = {h: by_the_readme(inventory.facts.get(h), "web", now) for h in asked}
            assert {h: view[h] for h in asked} == expected
            # What the offline notes are made of: every host whose health changed is
            # among those looked at again.
            looked = health.looked_at(record.id)
            moved = {h for h in before if h in expected and expected[h] != before[h]}
            assert looked is None or moved <= looked
            health.noted(record.id, looked)
            reached["passes compared"] += 1
            reached["hosts that changed were named"] += looked is not None and bool(moved)
            reached["a kept host's health changed"] += bool(moved)
            reached["a host fell silent with no news of it"] += any(
                before[h].online and not expected[h].online and h not in {n[1] for n in between}
                for h in before
                if h in expected
            )
            before = {h: expected[h] for h in record.hosts}
            reached["a host gone between passes"] += any(w[0] == "gone" for w in between)
            reached["a host joined between passes"] += any(w[0] == "joins" for w in between)
            reached["more heard than the log keeps"] += len(between) > kept

    check()
    for case in (
        "passes compared",
        "a kept host's health changed",
        "hosts that changed were named",
        "a host fell silent with no news of it",
        "a host gone between passes",
        "a host joined between passes",
        "another host matches, as many as before",
        "more heard than the log keeps",
    ):
        assert reached[case] >= 10, reached


def test_a_host_that_falls_silent_is_offline_once_its_heartbeat_is_too_old() -> None:
    inventory = Inventory(cast(KeyValue, None), TIMEOUT)
    record = web_rollout({"h0": HostRecord(since=NOW), "h1": HostRecord(since=NOW)}, NOW)
    running = ServiceStatus(name="web", state=ContainerState.RUNNING, health=Health.HEALTHY)
    for host in record.hosts:
        inventory.add(host, facts_with(host, (running,), NOW))
    health = RolloutHealth(inventory, TIMEOUT, whole_every=3600.0)
    serving = HostHealth(online=True, serving=True, last_seen=NOW)
    assert health.of(record, NOW) == {"h0": serving, "h1": serving}

    # h1 beats on; h0 says nothing more. At the host timeout h0 is still online; just
    # past it, offline (README: its last heartbeat is older than the host timeout),
    # though nothing was heard of it and health is never made whole again here.
    at_timeout = NOW + timedelta(seconds=TIMEOUT)
    inventory.add("h1", facts_with("h1", (running,), at_timeout))
    assert health.of(record, at_timeout)["h0"] == serving
    just_past = at_timeout + timedelta(milliseconds=1)
    found = health.of(record, just_past)

    silent = HostHealth(online=False, serving=None, last_seen=NOW)
    assert found == {
        "h0": silent,
        "h1": HostHealth(online=True, serving=True, last_seen=at_timeout),
    }
