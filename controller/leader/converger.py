"""The leader's convergence pass: every declared service kept true on every live host.

Each full pass, for each service with an accepted revision and no rollout in progress,
the live hosts that match its selector are compared with that revision
(controller.rollouts.convergence). Hosts that need a deploy, an update or a drift repair
become one convergence rollout, which the executor drives like any other: pre-flight,
the declared max_unavailable, retries. A host that could not be converged is tried again
after a growing pause, and never holds up the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.rollouts.convergence import (
    ACTS,
    Desired,
    HostNeed,
    Need,
    Verdicts,
    convergence_record,
    live_facts,
    matching_hosts,
    needs,
    others_now,
)
from controller.rollouts.joining import deploys, takes_converging_hosts
from controller.rollouts.model import TERMINAL, UPDATED, HostPhase, RolloutRecord, RolloutSpec
from controller.rollouts.workload import blue_green_of
from controller.state.rollout_store import RolloutStore
from controller.state.services import ServiceRecord, ServiceStore
from controller.state.store import RolloutConflict
from protocol import subjects
from protocol.agent_service import AGENT_SERVICE
from protocol.models import ColourSwitch, ConvergenceAction, ConvergenceEvent, Envelope, HostFacts

log = logging.getLogger("fleetctl.controller")
Publish = Callable[[str, Envelope], Awaitable[None]]
FIRST_RETRY = 10.0
LAST_RETRY = 600.0
ACTION_OF = {
    Need.DEPLOY: ConvergenceAction.DEPLOY,
    Need.UPDATE: ConvergenceAction.UPDATE,
    Need.REPAIR: ConvergenceAction.DRIFT_DETECTED,
    Need.REPORT: ConvergenceAction.DRIFT_DETECTED,
    Need.REMOVE: ConvergenceAction.REMOVE,
}


@dataclass
class Passed:
    started: list[RolloutRecord] = field(default_factory=list)
    """Convergence rollouts started."""
    joins: dict[str, list[str]] = field(default_factory=dict)
    """Per convergence rollout in progress, hosts that need what it converges to."""
    others: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per convergence rollout in progress whose fleet changed (a full pass), its other
    matching hosts now: its pace is taken of them."""


@dataclass
class Retry:
    attempts: int
    not_before: datetime


class Converger:
    def __init__(
        self, rollouts: RolloutStore, services: ServiceStore, publish: Publish, host_timeout: float
    ) -> None:
        self._rollouts = rollouts
        self._services = services
        self._publish = publish
        self._host_timeout = timedelta(seconds=host_timeout)
        self._retries: dict[tuple[str, str], Retry] = {}
        self._told: dict[tuple[str, str], str] = {}
        """The last need announced per (service, host): told once per change, not per pass."""
        self._repairs: dict[tuple[str, str], str] = {}
        """Drift being repaired, per (service, host): announced as repaired once done."""
        self._settled: dict[str, datetime] | None = None
        """When each service's last rollout ended: only heartbeats sent after it are
        judged (an older one may not show yet what that rollout did)."""
        self._verdicts: dict[str, Verdicts] = {}
        """Each service's hosts as last judged, kept for hosts with no new heartbeat."""

    async def run_pass(
        self,
        active: Mapping[str, RolloutRecord | None],
        facts: Mapping[str, HostFacts],
        now: datetime,
        only: set[str] | None = None,
    ) -> Passed:
        """Start a convergence rollout for each idle service that needs one, and name the
        hosts a convergence rollout in progress should take in. ``only``: judge just
        these hosts (their heartbeats changed), not the whole fleet."""
        if self._settled is None:  # a new leader: from the records the last one left
            self._settled = {}
            for ended in await self._rollouts.all():
                self.settled(ended)
        live = live_facts(facts, now, self._host_timeout) if only is None else None
        judged = live if live is not None else self._live_of(facts, only or set(), now)
        passed = Passed()
        services = await self._services.names()
        if live is not None:  # a full pass: only live hosts of declared services are kept
            self._verdicts = {s: v for s, v in self._verdicts.items() if s in services}
            for verdicts in self._verdicts.values():
                verdicts.keep_only(live.keys())
        for service in services:
            if service == AGENT_SERVICE:
                # The agent itself is upgraded only by `fleetctl agent upgrade`: a host
                # whose upgrade failed, or whose agent is no container, is not tried again
                # and again behind the operator's back.
                continue
            record, _ = await self._services.get(service)
            desired = record.desired()
            if desired is None:
                continue
            rollout = active.get(service)
            if service in active and (rollout is None or not takes_converging_hosts(rollout)):
                continue  # its rollout decides; convergence looks again once it ended
            since = self._settled.get(service)
            known = (
                judged if since is None else {h: f for h, f in judged.items() if f.sent_at > since}
            )
            found = needs(desired, known, self._verdicts.setdefault(service, Verdicts()))
            if rollout is not None:  # a convergence rollout in progress takes them along
                joining = [
                    n
                    for n in found
                    if n.need in ACTS
                    and n.host not in rollout.hosts
                    and self._due(service, n.host, now)
                ]
                await self._tell(desired, joining, whole_fleet=False)
                if live is not None:  # a full pass: the fleet it is paced against, now
                    others = others_now(rollout, desired, facts, live)
                    if others != rollout.others:
                        passed.others[rollout.id] = others
                if joining:
                    passed.joins[rollout.id] = [n.host for n in joining]
                    self._note_repairs(joining, service)
                continue
            await self._tell(desired, found, whole_fleet=only is None)
            if not any(n.need in ACTS or n.need is Need.REMOVE for n in found):
                continue
            if live is None:  # a pass over changed hosts: the whole fleet only if acting
                live = live_facts(facts, now, self._host_timeout)
            started = await self._converge(record, desired, found, live, now)
            if started is not None:
                passed.started.append(started)
        return passed

    def _live_of(
        self, facts: Mapping[str, HostFacts], hosts: set[str], now: datetime
    ) -> dict[str, HostFacts]:
        cutoff = now - self._host_timeout
        return {h: facts[h] for h in hosts if h in facts and facts[h].sent_at >= cutoff}

    async def _converge(
        self,
        record: ServiceRecord,
        desired: Desired,
        found: list[HostNeed],
        live: Mapping[str, HostFacts],
        now: datetime,
    ) -> RolloutRecord | None:
        service = desired.service
        converging = [n for n in found if n.need in ACTS and self._due(service, n.host, now)]
        removals = [n for n in found if n.need is Need.REMOVE and self._due(service, n.host, now)]
        # Deploys first: a selector moved to other hosts starts the service there
        # before it is taken off the old ones (a rollout at a time per service).
        acting = converging or removals
        if not acting:
            return None
        policy = record.policy or RolloutSpec()
        rollout = convergence_record(
            desired,
            policy,
            [n.host for n in acting],
            now,
            removing=not converging,
            others=matching_hosts(desired, live),
        )
        if not await self._start(rollout):
            return None
        self._note_repairs(acting, service)
        return rollout

    def _note_repairs(self, taken: list[HostNeed], service: str) -> None:
        """Drift being repaired: announced as repaired when its rollout brought it back."""
        for need in taken:
            if need.need is Need.REPAIR:
                self._repairs[(service, need.host)] = need.detail

    async def _start(self, record: RolloutRecord) -> bool:
        try:
            await self._rollouts.claim_service(
                record.service, record.id, supersede_convergence=False
            )
        except RolloutConflict:
            return False  # an operator's rollout came first: it takes these hosts along
        try:
            await self._rollouts.create(record)
        except BaseException:
            await self._rollouts.release_service(record.service, record.id)
            raise
        log.info("%s: %s", record.id, record.reason)
        return True

    async def _tell(self, desired: Desired, found: list[HostNeed], whole_fleet: bool) -> None:
        for need in found:
            key = (desired.service, need.host)
            action = ACTION_OF.get(need.need)
            if action is None or self._told.get(key) == need.detail:
                continue
            self._told[key] = need.detail
            await self._event(desired.service, need.host, action, desired.revision, need.detail)
        if not whole_fleet:
            return  # the hosts not judged this time keep what they were told
        current = {n.host for n in found}
        for key in [k for k in self._told if k[0] == desired.service and k[1] not in current]:
            del self._told[key]  # converged: a new drift is news again

    def _due(self, service: str, host: str, now: datetime) -> bool:
        retry = self._retries.get((service, host))
        return retry is None or retry.not_before <= now

    def reset(self) -> None:
        """Leading (again): what happened while another controller led is read afresh."""
        self._settled = None
        self._told.clear()

    def settled(self, record: RolloutRecord) -> None:
        """Any rollout of a service ended (or was seen ended) at its record's last write."""
        if self._settled is not None and record.status in TERMINAL:
            last = self._settled.get(record.service)
            if last is None or record.updated_at > last:
                self._settled[record.service] = record.updated_at

    async def finished(self, record: RolloutRecord, now: datetime) -> None:
        """A convergence rollout ended: repaired hosts are news; failed ones wait to retry."""
        await self._announce_colour(record)
        for host, entry in record.hosts.items():
            key = (record.service, host)
            repaired = self._repairs.pop(key, None)
            if entry.phase in UPDATED:
                self._retries.pop(key, None)
                if repaired is not None:
                    await self._event(
                        record.service,
                        host,
                        ConvergenceAction.DRIFT_REPAIRED,
                        record.revision,
                        repaired,
                        record.id,
                    )
                continue
            attempts = self._retries[key].attempts + 1 if key in self._retries else 1
            pause = min(LAST_RETRY, FIRST_RETRY * 2 ** (attempts - 1))
            self._retries[key] = Retry(attempts, now + timedelta(seconds=pause))
            why = entry.detail or entry.phase.value
            if entry.phase is HostPhase.NOT_READY and entry.reasons:
                why = "; ".join(r.text for r in entry.reasons)
            await self._event(
                record.service,
                host,
                ConvergenceAction.FAILED,
                record.revision,
                f"{why}; retry in {pause:.0f}s",
                record.id,
            )

    async def _announce_colour(self, record: RolloutRecord) -> None:
        """Blue-green: the hosts this rollout brought to the serving colour, told to
        routers and service discovery as a switch would tell them (they serve it now)."""
        colour, blue_green = record.in_colour, blue_green_of(record.target)
        hosts = tuple(h for h in record.ordered_hosts() if record.hosts[h].phase in UPDATED)
        if colour is None or blue_green is None or record.removing or not hosts:
            return
        event = ColourSwitch(
            id=f"{record.id}-switch-{colour}",  # stored once if a new leader repeats it
            sender=subjects.CONTROLLER_SENDER,
            service=record.service,
            colour=colour,
            port=blue_green.port_of(colour),
            rollout_id=record.id,
            hosts=hosts,
        )
        await self._publish(subjects.controller_event_subject("switch"), event)

    async def joined(
        self, record: RolloutRecord, hosts: list[str], live: Mapping[str, HostFacts]
    ) -> None:
        """Hosts that came back during a rollout were taken into it: news, like any
        convergence of a host."""
        for host in hosts:
            action = (
                ConvergenceAction.DEPLOY
                if deploys(live[host], record.service)
                else (ConvergenceAction.UPDATE)
            )
            why = f"joined rollout {record.id} in progress"
            log.info("%s: %s joined", record.id, host)
            await self._event(record.service, host, action, record.revision, why, record.id)

    async def _event(
        self,
        service: str,
        host: str,
        action: ConvergenceAction,
        revision: int,
        reason: str,
        rollout_id: str | None = None,
    ) -> None:
        event = ConvergenceEvent(
            sender=subjects.CONTROLLER_SENDER,
            service=service,
            host=host,
            action=action,
            revision=revision,
            reason=reason[:4096],
            rollout_id=rollout_id,
        )
        await self._publish(subjects.controller_event_subject("convergence"), event)
