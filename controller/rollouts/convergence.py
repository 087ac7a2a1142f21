"""Convergence: which live hosts differ from a service's accepted revision, and how.

Pure, like the planner: the declaration, the hosts' last heartbeats and the service's
revision history in; per-host needs out. The controller turns the needs into a
convergence rollout (an ordinary rollout record of the accepted revision over just those
hosts), so pre-flight, the budget, retries and events are the rollouts' own.

The yardstick is the accepted revision (the one the last completed rollout left as
current), never a newer one: a host that a failed rollout left on a newer revision is
"ahead" and left alone until the operator decides (undo, or another rollout).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

from controller.rollouts.model import (
    FailureAction,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    Strategy,
)
from controller.rollouts.workload import Mark, Workload, mark_of
from protocol.models import ContainerState, Drift, HostFacts, ServiceStatus
from protocol.spec import COLOURS, Colour, ServiceSpec, coloured


class DriftPolicy(StrEnum):
    REPAIR = "repair"
    """Converge a drifted container back, paced like any update, with an event."""
    REPORT = "report"
    """An event and a mark in `fleetctl services`; nothing is touched."""


class Need(StrEnum):
    DEPLOY = "deploy"
    """The host matches the selector and lacks the service."""
    UPDATE = "update"
    """The host runs an older (or unknown) revision."""
    REPAIR = "repair"
    """The container drifted and the policy is repair."""
    REPORT = "report"
    """The container drifted and the policy is report: nothing is done."""
    AHEAD = "ahead"
    """A failed rollout left the host on a newer revision: left alone."""
    REMOVE = "remove"
    """The host runs the service but is off the selector, or the service was deleted."""
    ENGINE_DOWN = "engine_down"
    """Its agent reports its engine down: nothing can change there, it is judged again
    once the engine answers (and it does not count as converged meanwhile)."""


ACTS = frozenset({Need.DEPLOY, Need.UPDATE, Need.REPAIR})
"""The needs a convergence rollout acts on."""
CONVERGENCE_DEADLINE = 120.0
"""Seconds without progress after which a convergence rollout ends (its stuck hosts are
retried later): shorter than a rollout's, since it holds the service meanwhile."""


@dataclass(frozen=True)
class Desired:
    """A declared service as convergence sees it: the accepted revision and its rules."""

    service: str
    revision: int
    spec: Workload
    selector: Mapping[str, str]
    drift: DriftPolicy
    newer: tuple[Workload, ...] = ()
    """Specs of revisions after the accepted one (from rollouts that did not complete)."""
    deleted: bool = False
    """`fleetctl delete service`: no host should run it any more."""
    colour: Colour | None = None
    """Blue-green: the colour the service's traffic goes to (set by its first switch)."""

    @cached_property
    def serving(self) -> Colour | None:
        """The colour hosts serve the accepted spec in; None for a plain service, and for
        one no blue-green rollout has switched yet (its hosts run the plain spec)."""
        spec = self.spec
        return self.colour if isinstance(spec, ServiceSpec) and spec.blue_green else None

    @cached_property
    def applied(self) -> Workload:
        """What a host converged to this revision runs: the spec in the serving colour."""
        spec = self.spec
        if self.serving is None or not isinstance(spec, ServiceSpec):
            return spec
        return coloured(spec, self.serving)

    @cached_property
    def marks(self) -> tuple[Mark, ...]:
        """What a converged host's agent may report it applied, hashed once, not once a
        host: the applied spec; while blue serves, also the plain spec, since a container
        from before blue-green counts as blue (a switch back to it is one)."""
        if self.serving == "blue":
            return mark_of(self.applied), mark_of(self.spec)
        return (mark_of(self.applied),)

    @cached_property
    def newer_marks(self) -> tuple[Mark, ...]:
        marks = [mark_of(spec) for spec in self.newer]
        for spec in self.newer:  # either colour: a failed blue-green rollout's copies
            if isinstance(spec, ServiceSpec) and spec.blue_green is not None:
                marks.extend(mark_of(coloured(spec, colour)) for colour in COLOURS)
        return tuple(marks)


@dataclass(frozen=True)
class HostNeed:
    host: str
    need: Need
    detail: str


def _same(mark: Mark, status: ServiceStatus) -> bool:
    """Whether the agent last applied the spec of ``mark`` (its settings, and its digest
    if pinned)."""
    fingerprint, digest = mark
    if status.fingerprint != fingerprint:
        return False
    return digest is None or status.applied_digest == digest


def host_need(desired: Desired, facts: HostFacts) -> HostNeed | None:
    """What one host that matches the selector needs, or None when it is converged."""
    status = _status_of(facts, desired.service)
    host = facts.host
    if status is None or (status.fingerprint is None and status.state is ContainerState.ABSENT):
        return HostNeed(host, Need.DEPLOY, f"{desired.service} is not on the host")
    if status.fingerprint is None:
        return None  # an agent too old to say what it applied: not judged
    if not any(_same(mark, status) for mark in desired.marks):
        if any(_same(mark, status) for mark in desired.newer_marks):
            return HostNeed(host, Need.AHEAD, "on a revision a rollout did not complete")
        where = f" in {desired.serving}" if desired.serving else ""
        return HostNeed(host, Need.UPDATE, f"not on revision {desired.revision}{where}")
    if status.drift is None:
        return None
    if desired.drift is DriftPolicy.REPORT:
        return HostNeed(host, Need.REPORT, _drift_detail(status.drift))
    return HostNeed(host, Need.REPAIR, _drift_detail(status.drift))


def _status_of(facts: HostFacts, service: str) -> ServiceStatus | None:
    for status in facts.services:  # a loop, not next(genexpr): this runs once a host a pass
        if status.name == service:
            return status
    return None


def _drift_detail(drift: Drift) -> str:
    return f"container {drift.value} by hand"


def live_facts(
    facts: Mapping[str, HostFacts], now: datetime, host_timeout: timedelta
) -> dict[str, HostFacts]:
    """The hosts whose last heartbeat is recent enough to count them as there."""
    cutoff = now - host_timeout
    return {host: f for host, f in facts.items() if f.sent_at >= cutoff}


class LiveHosts:
    """The live hosts of one full pass, found once and only if a rollout asks."""

    def __init__(self, facts: Mapping[str, HostFacts], now: datetime, timeout: float) -> None:
        self._facts, self._now, self._timeout = facts, now, timedelta(seconds=timeout)
        self._live: dict[str, HostFacts] | None = None

    def hosts(self) -> dict[str, HostFacts]:
        if self._live is None:
            self._live = live_facts(self._facts, self._now, self._timeout)
        return self._live


def matches(facts: HostFacts, selector: Mapping[str, str]) -> bool:
    if not selector:
        return True
    labels = facts.labels
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass
class Verdicts:
    """Each host's need as one service's passes last judged it, with the heartbeat it
    was judged on. A full pass over 10,000 hosts judged each afresh; between two passes
    most hosts send no new heartbeat, and the same heartbeat under the same declaration
    needs the same thing."""

    desired: Desired | None = None
    judged: dict[str, tuple[HostFacts, HostNeed | None]] = field(default_factory=dict)
    reused: int = 0
    """Verdicts taken as they were (a count, for tests and benches)."""

    def keep_only(self, hosts: Collection[str]) -> None:
        """Forget hosts no longer live (after a pass over the whole fleet)."""
        if len(self.judged) > len(hosts):
            self.judged = {h: v for h, v in self.judged.items() if h in hosts}


def needs(
    desired: Desired, live: Mapping[str, HostFacts], verdicts: Verdicts | None = None
) -> list[HostNeed]:
    """Every live host's need, in host order (deterministic): on the selector, what
    brings it to the accepted revision; off it (or the service deleted), a removal.
    ``verdicts``: those of earlier passes, taken for hosts with the same heartbeat."""
    verdicts = Verdicts() if verdicts is None else verdicts
    if verdicts.desired != desired:
        verdicts.desired, verdicts.judged = desired, {}
    judged = verdicts.judged
    found = []
    judged_again = 0
    for host, facts in live.items():  # kept lean: a full pass runs it for every host
        known = judged.get(host)
        if known is not None and known[0] is facts:
            need = known[1]
        else:
            need = _verdict(desired, host, facts)
            judged[host] = (facts, need)
            judged_again += 1
        if need is not None:
            found.append(need)
    verdicts.reused += len(live) - judged_again
    found.sort(key=lambda need: need.host)  # the few in need, not the whole fleet
    return found


def _verdict(desired: Desired, host: str, facts: HostFacts) -> HostNeed | None:
    if facts.engine_down:  # nothing can change there until its engine is back
        concerned = runs(facts, desired.service) or (
            not desired.deleted and matches(facts, desired.selector)
        )
        return HostNeed(host, Need.ENGINE_DOWN, "its engine is down") if concerned else None
    if desired.deleted or not matches(facts, desired.selector):
        if runs(facts, desired.service):
            why = "the service was deleted" if desired.deleted else "off the selector"
            return HostNeed(host, Need.REMOVE, why)
        return None
    return host_need(desired, facts)


def runs(facts: HostFacts, service: str) -> bool:
    """Whether the host's agent manages the service (a container, or its record of one)."""
    return any(
        s.name == service and (s.fingerprint is not None or s.state is not ContainerState.ABSENT)
        for s in facts.services
    )


def matching_hosts(desired: Desired, live: Mapping[str, HostFacts]) -> tuple[str, ...]:
    """The live hosts the service belongs on, in host order."""
    if desired.deleted:
        return ()
    return tuple(host for host in sorted(live) if matches(live[host], desired.selector))


def others_now(
    rollout: RolloutRecord,
    desired: Desired,
    facts: Mapping[str, HostFacts],
    live: Mapping[str, HostFacts],
) -> tuple[str, ...]:
    """A convergence rollout's other matching hosts as the fleet is now, in host order:
    the live hosts on the selector, and those it counted before that went silent while
    still on it (an offline host is out of service, as in any rollout). Hosts whose
    labels took them off the selector, and all of a deleted service's, no longer count."""
    if desired.deleted:
        return ()
    kept = {h for h in rollout.others if h in facts and matches(facts[h], desired.selector)}
    kept.update(matching_hosts(desired, live))
    return tuple(sorted(host for host in kept if host not in rollout.hosts))


def fleet_size(desired: Desired, live: Mapping[str, HostFacts]) -> int:
    """The hosts the service should run on now (for a deleted one, those that still run
    it): what percentages are taken of."""
    if desired.deleted:
        return sum(1 for facts in live.values() if runs(facts, desired.service))
    return sum(1 for facts in live.values() if matches(facts, desired.selector))


def convergence_spec(policy: RolloutSpec) -> RolloutSpec:
    """The declared policy as a convergence rollout uses it: its pace (which the planner
    takes of the whole matching fleet, not of the few hosts converged), and none of its
    gates. A host that fails or is not ready is retried later; it never stops the others."""
    return RolloutSpec(
        strategy=Strategy.ROLLING,
        max_unavailable=policy.max_unavailable,
        max_surge=policy.max_surge,
        selector=dict(policy.selector),
        min_healthy_time=policy.min_healthy_time,
        # A host that goes away mid-way must not hold the service for long: the rest
        # are converged in the next pass, and it when it is back.
        progress_deadline=min(policy.progress_deadline, CONVERGENCE_DEADLINE),
        max_failure_ratio=1.0,
        failure_action=FailureAction.PAUSE,
        min_ready="0%",
        preflight_parallelism=policy.preflight_parallelism,
        allow_downgrade=True,
        allow_major=True,
    )


def convergence_id(service: str, revision: int, now: datetime) -> str:
    return f"{service}-r{revision}-converge-{now.strftime('%Y%m%d%H%M%S%f')}"


NAMED_HOSTS = 20
"""Hosts a convergence rollout's reason names; the rest are counted (a fleet's worth of
names would not fit the record's reason)."""


def named(hosts: list[str]) -> str:
    ordered = sorted(hosts)
    shown = ", ".join(ordered[:NAMED_HOSTS])
    rest = len(ordered) - NAMED_HOSTS
    return f"{shown} and {rest} more" if rest > 0 else shown


def convergence_record(
    desired: Desired,
    policy: RolloutSpec,
    hosts: list[str],
    now: datetime,
    *,
    removing: bool = False,
    others: tuple[str, ...] = (),
) -> RolloutRecord:
    """The rollout that brings ``hosts`` to the accepted revision under the policy, or
    (``removing``) takes the service off them: no pre-flight, the same pace."""
    if removing:
        rollout_id = f"{desired.service}-remove-{now.strftime('%Y%m%d%H%M%S%f')}"
    else:
        rollout_id = convergence_id(desired.service, desired.revision, now)
    first = HostPhase.READY if removing else HostPhase.PENDING
    return RolloutRecord(
        id=rollout_id,
        service=desired.service,
        revision=desired.revision,
        spec=convergence_spec(policy),
        target=desired.spec,
        previous=None,
        in_colour=desired.serving,
        hosts={host: HostRecord(phase=first, since=now) for host in hosts},
        reason=("removing from " if removing else "converging ") + named(hosts),
        converging=True,
        removing=removing,
        others=tuple(host for host in others if host not in hosts),
        created_at=now,
        updated_at=now,
        last_progress_at=now,
    )
