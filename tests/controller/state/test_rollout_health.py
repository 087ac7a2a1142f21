"""The health a rollout's passes plan against, kept between passes and brought up to date
from the heartbeats heard meanwhile, is at every pass what the README's rules give for
each host's last heartbeat (the time is fixed here: going silent is a tick's business)."""

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
from protocol.models import ContainerState, Health, HostFacts, ServiceStatus
from tests.controller.state.test_inventory_health import NOW, TIMEOUT, by_the_readme, heartbeats
from tests.support.heartbeats import facts_with
from tests.support.records import web_rollout

HOSTS = tuple(f"h{i}" for i in range(6))
TICK = 0.5
"""The controller's tick: health is made whole at least this often."""
OTHERS = ("o1", "o2")
"""Other matching hosts a convergence rollout counts against its budget."""


@st.composite
def news(draw: st.DrawFn) -> tuple[str, str, HostFacts | None]:
    """Between two passes: a host's heartbeat, its entry gone from the bucket, or a host
    taking part in the rollout from now on."""
    host = draw(st.sampled_from([*HOSTS, *OTHERS, "joiner", "stranger"]))
    what = draw(st.sampled_from(["beat", "beat", "gone", "joins"]))
    return what, host, draw(heartbeats(host)) if what == "beat" else None


def test_a_rollouts_kept_health_follows_the_readme_rules_after_every_heartbeat() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, deadline=None)
    @given(
        passes=st.lists(st.lists(news(), max_size=8), min_size=1, max_size=6),
        kept=st.sampled_from([3, 10_000]),
    )
    def check(passes: list[list[tuple[str, str, HostFacts | None]]], kept: int) -> None:
        inventory = Inventory(cast(KeyValue, None), TIMEOUT, heard_kept=kept)
        record = web_rollout({h: HostRecord(since=NOW) for h in HOSTS[:3]}, NOW)
        record = record.model_copy(update={"others": OTHERS})
        health = RolloutHealth(inventory, TIMEOUT, whole_every=TICK)
        health.of(record, NOW, whole=True)
        before = {h: by_the_readme(inventory.facts.get(h), "web") for h in record.hosts}
        for between in passes:
            for what, host, facts in between:
                if facts is not None:
                    inventory.add(host, facts)
                elif what == "gone":
                    inventory.forget(host)
                else:
                    joined = {**record.hosts, host: HostRecord(since=NOW)}
                    record = record.model_copy(update={"hosts": joined})
            view = health.of(record, NOW, whole=False)

            asked = [*record.hosts, *record.others]
            expected = {h: by_the_readme(inventory.facts.get(h), "web") for h in asked}
            assert {h: view[h] for h in asked} == expected
            reached["passes compared"] += 1
            reached["a kept host's health changed"] += any(
                expected[h] != before[h] for h in before if h in expected
            )
            before = expected
            reached["a host gone between passes"] += any(w == "gone" for w, _, _ in between)
            reached["a host joined between passes"] += any(w == "joins" for w, _, _ in between)
            reached["more heard than the log keeps"] += len(between) > kept

    check()
    for case in (
        "passes compared",
        "a kept host's health changed",
        "a host gone between passes",
        "a host joined between passes",
        "more heard than the log keeps",
    ):
        assert reached[case] >= 10, reached


def test_a_host_that_falls_silent_is_offline_once_a_tick_has_gone_by() -> None:
    inventory = Inventory(cast(KeyValue, None), TIMEOUT)
    record = web_rollout({"h0": HostRecord(since=NOW), "h1": HostRecord(since=NOW)}, NOW)
    running = ServiceStatus(name="web", state=ContainerState.RUNNING, health=Health.HEALTHY)
    for host in record.hosts:
        inventory.add(host, facts_with(host, (running,), NOW))
    health = RolloutHealth(inventory, TIMEOUT, whole_every=TICK)
    serving = HostHealth(online=True, serving=True, last_seen=NOW)
    assert health.of(record, NOW, whole=True) == {"h0": serving, "h1": serving}

    # h1 beats on; h0 says nothing more. Past the host timeout, and a tick later than
    # the last whole pass, h0 is offline (README: its last heartbeat is older than the
    # host timeout), though no whole pass was asked for.
    later = NOW + timedelta(seconds=TIMEOUT + TICK)
    inventory.add("h1", facts_with("h1", (running,), later))
    found = health.of(record, later, whole=False)

    silent = HostHealth(online=False, serving=None, last_seen=NOW)
    assert found == {"h0": silent, "h1": HostHealth(online=True, serving=True, last_seen=later)}
