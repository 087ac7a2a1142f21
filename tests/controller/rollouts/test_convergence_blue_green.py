"""Convergence of blue-green services against the README's rules, with hypothesis.

Once a blue-green rollout has switched a service's traffic to a colour, a converged host
runs the accepted revision in that colour (its port in ``port_env``, its colour
labelled); while blue serves, a container from before blue-green (plain spec, no colour)
counts as blue. A host lacking the service is deployed, one on an older revision or in
the other colour is updated in place, one a failed rollout left on a newer revision (in
either colour) is ahead. A service that no switch has given a colour is judged as a
plain one. Each generated host is built from what it was given, so the oracle knows the
right need without hashing anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controller.rollouts.commands import apply_command
from controller.rollouts.convergence import (
    ACTS,
    Desired,
    DriftPolicy,
    Need,
    convergence_record,
    needs,
)
from controller.rollouts.model import RolloutSpec, Strategy
from controller.state.services import Revision, ServiceRecord
from protocol.models import Drift, HostFacts
from protocol.spec import BlueGreen, Colour, ContainerSettings, ServiceSpec, coloured
from tests.support.heartbeats import heartbeat

NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
PORTS = {"blue": 8080, "green": 8081}
BLUE_GREEN = BlueGreen(port=PORTS["blue"], alternate_port=PORTS["green"])
REVISIONS = tuple(
    ServiceSpec(
        name="web",
        image=f"registry.local/web:1.{n}@sha256:{str(n) * 64}",
        container=ContainerSettings(env={"N": str(n % 2)}),
        # Revision 3 dropped blue-green (a plain spec after a switch), 4 took it up again.
        blue_green=None if n == 3 else BLUE_GREEN,
    )
    for n in range(1, 5)
)
STRANGER = ServiceSpec(name="web", image="registry.local/web:0.9")
COLOUR_OR_NONE = st.sampled_from([None, "blue", "green"])


@dataclass(frozen=True)
class Host:
    name: str
    given: int | None
    """Index into REVISIONS, -1 for a spec no revision has, None for no service."""
    colour: Colour | None
    """The colour its copy runs in (None: the plain spec, as before blue-green); for a
    plain revision, only its label (the environment it kept from a coloured copy)."""
    drift: Drift | None


def facts_of(host: Host) -> HostFacts:
    if host.given is None:
        return heartbeat(host.name, {}, None, NOW)
    if host.given < 0:
        return heartbeat(host.name, {}, STRANGER, NOW, host.drift)
    spec = REVISIONS[host.given]
    if host.colour is not None and spec.blue_green is not None:
        spec = coloured(spec, host.colour)
    return heartbeat(host.name, {}, spec, NOW, host.drift, colour=host.colour)


def oracle(host: Host, accepted: int, colour: Colour | None, policy: DriftPolicy) -> Need | None:
    """The README's rules; ``colour``: the service's, in KV."""
    if host.given is None:
        return Need.DEPLOY
    if host.given > accepted:
        return Need.AHEAD
    if host.given != accepted:
        return Need.UPDATE
    blue_green = REVISIONS[accepted].blue_green is not None and host.given >= 0
    # A plain accepted revision, or one no switch has given a colour, is judged as a
    # plain service: a copy in a colour runs another spec than the accepted one.
    serving = colour if blue_green else None
    if serving is None and blue_green and host.colour is not None:
        return Need.UPDATE
    counts_as_blue = serving == "blue" and host.colour is None  # from before blue-green
    if serving is not None and host.colour != serving and not counts_as_blue:
        return Need.UPDATE
    if host.drift is None:
        return None
    return Need.REPAIR if policy is DriftPolicy.REPAIR else Need.REPORT


hosts_st = st.lists(
    st.builds(
        Host,
        name=st.sampled_from([f"h{n:02d}" for n in range(30)]),
        given=st.none() | st.integers(min_value=-1, max_value=len(REVISIONS) - 1),
        colour=COLOUR_OR_NONE,
        drift=st.none() | st.sampled_from(Drift),
    ),
    max_size=20,
    unique_by=lambda h: h.name,
)


def test_each_host_of_a_blue_green_service_needs_what_the_readme_says() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=400)
    @given(
        hosts=hosts_st,
        accepted=st.integers(min_value=0, max_value=len(REVISIONS) - 1),
        serving=COLOUR_OR_NONE,
        policy=st.sampled_from(DriftPolicy),
    )
    def check(
        hosts: list[Host], accepted: int, serving: Colour | None, policy: DriftPolicy
    ) -> None:
        desired = Desired(
            service="web",
            revision=accepted + 1,
            spec=REVISIONS[accepted],
            selector={},
            drift=policy,
            newer=REVISIONS[accepted + 1 :],
            colour=serving,
        )
        live = {h.name: facts_of(h) for h in hosts}
        found = {n.host: n.need for n in needs(desired, live)}
        for host in hosts:
            expected = oracle(host, accepted, serving, policy)
            assert found.get(host.name) == expected, (host, serving, found)
            wrong_colour = host.given == accepted and expected is Need.UPDATE
            case = f"{expected} (other colour)" if wrong_colour else str(expected)
            seen[case] += 1
            event(f"need: {case}")
        acting = sorted(h for h, n in found.items() if n in ACTS)
        if acting:
            record = convergence_record(desired, RolloutSpec(), acting, NOW)
            assert record.target == REVISIONS[accepted]
            assert record.spec.strategy is Strategy.ROLLING  # never a fleet-wide switch
            sent = apply_command(record, acting[0], record.target, NOW, "c1").service
            wanted = serving if REVISIONS[accepted].blue_green is not None else None
            check_applied(sent, REVISIONS[accepted], wanted)
            seen[f"applied in {wanted}"] += 1

    check()
    cases = [
        # Removals and engines down are judged alike whatever the colour (test_convergence).
        *(str(n) for n in Need if n not in (Need.REMOVE, Need.ENGINE_DOWN)),
        "None",
        f"{Need.UPDATE} (other colour)",
    ]
    for case in (*cases, "applied in None", "applied in blue", "applied in green"):
        assert seen[case] > 0, (case, seen)  # every rule was reached by some example


def check_applied(target: ServiceSpec, accepted: ServiceSpec, serving: Colour | None) -> None:
    """A convergence rollout applies the accepted revision, in the serving colour."""
    assert target.image == accepted.image
    env = dict(target.container.env)
    if serving is None:
        assert target == accepted
        return
    assert env.pop("PORT") == str(PORTS[serving])  # the default port_env
    assert env.pop("FLEET_COLOUR") == serving
    assert env == accepted.container.env


def test_a_service_record_hands_its_colour_to_convergence() -> None:
    revisions = tuple(
        Revision(revision=n, spec=REVISIONS[n - 1], rollout_id=f"web-r{n}", created_at=NOW)
        for n in (1, 2)
    )
    record = ServiceRecord(
        service="web", revisions=revisions, current=1, colour="green", policy=RolloutSpec()
    )
    desired = record.desired()
    assert desired is not None
    assert desired.colour == "green"
    assert desired.newer == (REVISIONS[1],)
    # A host on revision 1 that still serves blue (it missed the switch) is updated.
    blue = heartbeat("h01", {}, coloured(REVISIONS[0], "blue"), NOW, colour="blue")
    green = heartbeat("h02", {}, coloured(REVISIONS[0], "green"), NOW, colour="green")
    assert [(n.host, n.need, n.detail) for n in needs(desired, {"h01": blue, "h02": green})] == [
        ("h01", Need.UPDATE, "not on revision 1 in green")
    ]
