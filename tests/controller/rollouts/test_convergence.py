"""Convergence against the README's rules, with hypothesis.

Each generated host is built from what it was given (no service, one of the revisions,
or a spec no revision has) and whether its container drifted, so the oracle knows the
right need without hashing anything: a missing service is deployed, an older or unknown
revision updated, a newer one (from a rollout that did not complete) left alone, a drift
on the accepted revision repaired or reported by policy; hosts off the selector and
converged hosts need nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controller.rollouts.convergence import (
    ACTS,
    Desired,
    DriftPolicy,
    Need,
    Verdicts,
    convergence_record,
    needs,
    others_now,
)
from controller.rollouts.host_health import HostHealth
from controller.rollouts.model import HostPhase, HostRecord, RolloutSpec, RolloutStatus
from controller.rollouts.planner import plan
from protocol.models import Drift, HostFacts
from protocol.spec import ContainerSettings, ServiceSpec
from tests.support.heartbeats import heartbeat

NOW = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
REVISIONS = tuple(
    ServiceSpec(
        name="web",
        image=f"registry.local/web:1.{n}@sha256:{str(n) * 64}",
        container=ContainerSettings(env={"N": str(n % 2)}),
    )
    for n in range(1, 5)
)
STRANGER = ServiceSpec(name="web", image="registry.local/web:0.9")


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    given: int | None
    """Index into REVISIONS, -1 for a spec no revision has, None for no service."""
    drift: Drift | None
    engine_down: bool = False


def facts_of(host: Host) -> HostFacts:
    applied = None
    if host.given is not None:
        applied = STRANGER if host.given < 0 else REVISIONS[host.given]
    facts = heartbeat(host.name, {"role": host.role}, applied, NOW, host.drift)
    return facts.model_copy(update={"engine_down": host.engine_down})


def oracle(
    host: Host, accepted: int, policy: DriftPolicy, on_selector: bool, deleted: bool
) -> Need | None:
    """The README's rules."""
    if host.engine_down:  # judged once its engine is back; not converged meanwhile
        concerned = host.given is not None or (on_selector and not deleted)
        return Need.ENGINE_DOWN if concerned else None
    if deleted or not on_selector:
        return None if host.given is None else Need.REMOVE
    if host.given is None:
        return Need.DEPLOY
    if host.given > accepted:
        return Need.AHEAD
    if host.given != accepted:
        return Need.UPDATE
    if host.drift is None:
        return None
    return Need.REPAIR if policy is DriftPolicy.REPAIR else Need.REPORT


hosts_st = st.lists(
    st.builds(
        Host,
        name=st.sampled_from([f"h{n:02d}" for n in range(30)]),
        role=st.sampled_from(["edge", "core"]),
        given=st.none() | st.integers(min_value=-1, max_value=len(REVISIONS) - 1),
        drift=st.none() | st.sampled_from(Drift),
        engine_down=st.sampled_from([False, False, False, True]),
    ),
    max_size=20,
    unique_by=lambda h: h.name,
)


def declared_as(
    accepted: int, policy: DriftPolicy, selector: dict[str, str], deleted: bool
) -> Desired:
    """The service declared with REVISIONS[accepted] accepted (the later ones newer)."""
    return Desired(
        service="web",
        revision=accepted + 1,
        spec=REVISIONS[accepted],
        selector=selector,
        drift=policy,
        newer=REVISIONS[accepted + 1 :],
        deleted=deleted,
    )


@st.composite
def declarations(draw: st.DrawFn) -> tuple[int, DriftPolicy, dict[str, str], bool]:
    """What a pass judges against: accepted revision, drift policy, selector, deleted."""
    return (
        draw(st.integers(min_value=0, max_value=len(REVISIONS) - 1)),
        draw(st.sampled_from(DriftPolicy)),
        draw(st.sampled_from([{}, {"role": "edge"}])),
        draw(st.booleans()),
    )


def test_needs_judged_again_only_for_new_heartbeats_are_what_the_readme_says() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=200)
    @given(
        fleet=hosts_st,
        passes=st.lists(st.tuples(declarations(), hosts_st, st.booleans()), min_size=1, max_size=5),
    )
    def check(
        fleet: list[Host],
        passes: list[tuple[tuple[int, DriftPolicy, dict[str, str], bool], list[Host], bool]],
    ) -> None:
        verdicts = Verdicts()
        hosts = {h.name: h for h in fleet}
        live = {h.name: facts_of(h) for h in fleet}
        previous = None
        for declared, beats, same_declaration in passes:
            if same_declaration and previous is not None:
                declared = previous  # as most passes are: the declaration unchanged
            previous = declared
            accepted, policy, selector, deleted = declared
            # New heartbeats: some hosts come or change, each a new heartbeat object.
            for host in beats:
                hosts[host.name] = host
                live[host.name] = facts_of(host)
            desired = declared_as(accepted, policy, selector, deleted)
            reused = verdicts.reused
            found = {n.host: n.need for n in needs(desired, live, verdicts)}
            for name, host in hosts.items():
                on_selector = all(host.role == v for v in selector.values())
                assert found.get(name) == oracle(host, accepted, policy, on_selector, deleted)
            seen["passes"] += 1
            seen["verdicts reused"] += verdicts.reused > reused
            seen["hosts judged again"] += bool(beats) and verdicts.reused > reused

    check()
    for case in ("passes", "verdicts reused", "hosts judged again"):
        assert seen[case] >= 10, seen


def test_each_host_on_the_selector_needs_what_the_readme_says() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=400)
    @given(
        hosts=hosts_st,
        accepted=st.integers(min_value=0, max_value=len(REVISIONS) - 1),
        policy=st.sampled_from(DriftPolicy),
        selector=st.sampled_from([{}, {"role": "edge"}]),
        deleted=st.booleans(),
    )
    def check(
        hosts: list[Host],
        accepted: int,
        policy: DriftPolicy,
        selector: dict[str, str],
        deleted: bool,
    ) -> None:
        desired = declared_as(accepted, policy, selector, deleted)
        live = {h.name: facts_of(h) for h in hosts}
        found = {n.host: n.need for n in needs(desired, live)}
        for host in hosts:
            on_selector = all(host.role == v for v in selector.values())
            expected = oracle(host, accepted, policy, on_selector, deleted)
            assert found.get(host.name) == expected, (host, found)
            seen[str(expected)] += 1
            # An engine down where the host would otherwise be acted on: the rule bites.
            bites = oracle(replace(host, engine_down=False), accepted, policy, on_selector, deleted)
            seen["engine down instead of acting"] += host.engine_down and bites in ACTS
            event(f"need: {expected}")
        # Deterministic: the same needs whatever order the facts came in.
        assert needs(desired, live) == needs(desired, dict(reversed(live.items())))

        acting = sorted(h for h, n in found.items() if n in ACTS)
        if acting:
            record = convergence_record(desired, RolloutSpec(max_unavailable="50%"), acting, NOW)
            # Never toward a revision the operator has not accepted.
            assert record.target == REVISIONS[accepted]
            assert record.revision == accepted + 1
            assert sorted(record.hosts) == acting
            seen["record"] += 1
        removals = sorted(h for h, n in found.items() if n is Need.REMOVE)
        if removals:
            record = convergence_record(desired, RolloutSpec(), removals, NOW, removing=True)
            assert record.removing
            assert sorted(record.hosts) == removals
            assert {h.phase for h in record.hosts.values()} == {HostPhase.READY}  # no pull
            seen["removal"] += 1

    check()
    for need in (*(str(n) for n in Need), "None", "record", "removal"):
        assert seen[need] > 0, (need, seen)  # every rule was reached by some example
    assert seen["engine down instead of acting"] > 0, seen


@given(
    own=st.integers(min_value=1, max_value=40),
    others=st.integers(min_value=0, max_value=400),
    amount=st.sampled_from([0, 1, 3, "0%", "10%", "25%", "100%"]),
)
def test_the_convergence_pace_is_the_policy_taken_of_the_whole_matching_fleet_as_it_is_now(
    own: int, others: int, amount: int | str
) -> None:
    desired = Desired("web", 1, REVISIONS[0], {}, DriftPolicy.REPAIR)
    mine = [f"late-{i:03d}" for i in range(own)]
    record = convergence_record(
        desired,
        RolloutSpec(max_unavailable=amount),
        mine,
        NOW,
        others=tuple(f"host-{i:03d}" for i in range(others)),
    )
    ready = {h: HostRecord(phase=HostPhase.READY, since=NOW) for h in mine}
    running = record.model_copy(update={"hosts": ready, "status": RolloutStatus.RUNNING})
    healthy = HostHealth(online=True, serving=True, last_seen=NOW)
    health = {h: healthy for h in [*mine, *running.others]}

    started = plan(running, health, NOW).apply

    # README: the policy's max_unavailable of every matching host (a count as is, a
    # percentage rounded down), at least one host at a time.
    fleet = own + others
    allowed = amount if isinstance(amount, int) else fleet * int(amount.rstrip("%")) // 100
    assert len(started) == min(own, max(allowed, 1))
    assert running.spec.canary is None
    assert running.spec.partition is None
    assert not running.spec.analysis
    event("every host at once" if len(started) == own else "some hosts wait")


def test_a_convergence_rollout_of_ten_thousand_hosts_names_twenty_and_counts_the_rest() -> None:
    desired = Desired("web", 1, REVISIONS[0], {}, DriftPolicy.REPAIR)
    hosts = [f"host-{i:05d}" for i in range(10_000)]
    record = convergence_record(desired, RolloutSpec(), list(reversed(hosts)), NOW)
    assert record.reason == "converging " + ", ".join(hosts[:20]) + " and 9980 more"
    assert len(record.hosts) == 10_000
    removal = convergence_record(desired, RolloutSpec(), hosts[:3], NOW, removing=True)
    assert removal.reason == "removing from host-00000, host-00001, host-00002"


@dataclass(frozen=True)
class Other:
    name: str
    role: str
    """Its labels as its last heartbeat gave them."""
    online: bool
    counted: bool
    """Among the rollout's other matching hosts when it was last counted."""
    known: bool
    """The controller has its facts at all."""
    taken: bool
    """The rollout took it in meanwhile (one of its own hosts)."""


others_st = st.lists(
    st.builds(
        Other,
        name=st.sampled_from([f"h{n:02d}" for n in range(30)]),
        role=st.sampled_from(["edge", "core"]),
        online=st.booleans(),
        counted=st.booleans(),
        known=st.booleans(),
        taken=st.booleans(),
    ),
    max_size=20,
    unique_by=lambda o: o.name,
)


def test_a_convergence_rollout_counts_the_matching_fleet_as_it_is_now() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300)
    @given(fleet=others_st, deleted=st.booleans())
    def check(fleet: list[Other], deleted: bool) -> None:
        selector = {"role": "edge"}
        desired = Desired("web", 1, REVISIONS[0], selector, DriftPolicy.REPAIR, deleted=deleted)
        own = [o.name for o in fleet if o.taken] or ["late-000"]
        before = tuple(sorted(o.name for o in fleet if o.counted))  # taken ones too
        record = convergence_record(desired, RolloutSpec(), own, NOW).model_copy(
            update={"others": before}
        )
        facts = {o.name: heartbeat(o.name, {"role": o.role}, None, NOW) for o in fleet if o.known}
        live = {o.name: facts[o.name] for o in fleet if o.known and o.online}

        counted = others_now(record, desired, facts, live)

        # README: live hosts on the selector count, and so do those counted before that
        # went offline while on it; hosts off the selector, a deleted service's, and the
        # rollout's own hosts do not. In host order.
        def counts(o: Other) -> bool:
            on_it = not deleted and not o.taken and o.known and o.role == "edge"
            return on_it and (o.online or o.counted)

        assert list(counted) == sorted(o.name for o in fleet if counts(o))
        for o in fleet:
            if counts(o):
                seen["offline, still counted" if not o.online else "live, counted"] += 1
            elif o.counted and o.taken:
                seen["counted before, taken in since"] += 1
            elif o.counted and deleted:
                seen["counted before, service deleted"] += 1
            elif o.counted and not o.known:
                seen["counted before, facts gone"] += 1
            elif o.counted and o.role != "edge":
                seen["counted before, off the selector now"] += 1
            elif not o.counted and not o.online and o.role == "edge":
                seen["offline and never counted"] += 1

    check()
    for case in (
        "live, counted",
        "offline, still counted",
        "counted before, taken in since",
        "counted before, service deleted",
        "counted before, facts gone",
        "counted before, off the selector now",
        "offline and never counted",
    ):
        assert seen[case] > 0, (case, seen)


STATES = {
    "serving": HostHealth(online=True, serving=True, last_seen=NOW),
    "lacking": HostHealth(online=True, serving=None, last_seen=NOW),
    "stopped": HostHealth(online=True, serving=False, last_seen=NOW),
    "offline": HostHealth(online=False, serving=None, last_seen=NOW),
    "unhealthy": HostHealth(online=True, serving=False, last_seen=NOW),
}
OWN_STATES = ("lacking", "stopped", "offline")


def test_a_convergence_rollout_never_takes_more_out_of_service_than_its_budget() -> None:
    reached = Counter[str]()

    @settings(max_examples=300, derandomize=True)  # the reached-counts below are fixed
    @given(
        own=st.lists(
            st.tuples(st.sampled_from(["waiting", "updating"]), st.sampled_from(OWN_STATES)),
            min_size=1,
            max_size=30,
        ),
        others=st.lists(st.sampled_from(["serving", "offline", "unhealthy"]), max_size=60),
        amount=st.sampled_from([0, 1, 3, "0%", "10%", "25%", "100%"]),
        removing=st.booleans(),
    )
    def check(
        own: list[tuple[str, str]], others: list[str], amount: int | str, removing: bool
    ) -> None:
        desired = Desired("web", 1, REVISIONS[0], {}, DriftPolicy.REPAIR)
        mine = [f"late-{i:03d}" for i in range(len(own))]
        theirs = [f"host-{i:03d}" for i in range(len(others))]
        record = convergence_record(
            desired, RolloutSpec(max_unavailable=amount), mine, NOW, removing=removing
        )
        phases = {"waiting": HostPhase.READY, "updating": HostPhase.UPDATING}
        hosts = {
            h: HostRecord(phase=phases[s], since=NOW) for h, (s, _) in zip(mine, own, strict=True)
        }
        running = record.model_copy(
            update={"hosts": hosts, "others": tuple(theirs), "status": RolloutStatus.RUNNING}
        )
        # Its own hosts are out of service already (that is why they are in it): the
        # service missing or stopped, or the host gone offline since.
        health = {h: STATES[state] for h, (_, state) in zip(mine, own, strict=True)}
        health.update({h: STATES[s] for h, s in zip(theirs, others, strict=True)})

        started = plan(running, health, NOW).apply

        # README: max_unavailable of every matching host (a count as is, a percentage
        # rounded down; one host at a time when that is zero), less the hosts it is
        # updating and the other matching hosts out of service (offline or not serving);
        # of its own hosts only those it updates count. An offline host is not started.
        fleet = len(own) + len(others)
        allowed = amount if isinstance(amount, int) else fleet * int(amount.rstrip("%")) // 100
        others_out = sum(1 for s in others if s != "serving")
        out = sum(1 for phase, _ in own if phase == "updating") + others_out
        budget = max(0, max(allowed, 1) - out)
        startable = {
            h
            for h, (phase, state) in zip(mine, own, strict=True)
            if phase == "waiting" and state != "offline"
        }
        assert len(started) == min(len(startable), budget)
        assert set(started) <= startable
        reached["removal" if removing else "convergence"] += 1
        without_others = max(0, max(allowed, 1) - (out - others_out))
        if min(len(startable), without_others) > len(started):
            reached["fewer started because other hosts are out"] += 1
        reached["an own host out of service, not counted"] += any(
            phase == "waiting" and state != "offline" for phase, state in own
        ) and bool(started)
        reached["an own host offline, not started"] += any(
            phase == "waiting" and state == "offline" for phase, state in own
        )

    check()
    for case in (
        "removal",
        "convergence",
        "fewer started because other hosts are out",
        "an own host out of service, not counted",
        "an own host offline, not started",
    ):
        assert reached[case] >= 10, reached
