"""What fleetctl's verbs do: record the operator's intent in KV and read state back.

Nothing here drives a rollout; the controller process does. So the operator's terminal
can close mid-rollout, and every verb is a compare-and-set on the rollout record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import nats.errors
from nats.aio.client import Client

from controller.errors import ControllerError
from controller.gates.vetting import ImageRefused, Vetter
from controller.rollouts.commands import prepare_command
from controller.rollouts.convergence import live_facts
from controller.rollouts.model import (
    TERMINAL,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
    rollout_id,
)
from controller.rollouts.planner import HostHealth, plan
from controller.rollouts.workload import Workload, blue_green_of, target_of
from controller.state.config_store import open_config_store
from controller.state.inventory import fleet_health, matches
from controller.state.rollout_store import RolloutStore
from controller.state.services import ServiceRecord, ServiceStore
from controller.state.store import NotFound, RolloutConflict, open_buckets, read_hosts
from protocol import subjects
from protocol.app import AppSpec
from protocol.codec import decode, encode
from protocol.errors import ConfigurationError, ProtocolError
from protocol.models import HostFacts, PrepareReply, Reason, utc_now
from protocol.signing import CommandSigner
from protocol.spec import Colour, other_colour

PREPARE_TIMEOUT = 300.0
log = logging.getLogger("fleetctl")


@dataclass(frozen=True)
class PreflightResult:
    host: str
    ready: bool
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class DryRun:
    record: RolloutRecord
    preflight: list[PreflightResult]
    waves: list[tuple[str, list[str]]]
    """(label, hosts) in the order the planner would run them."""
    final_status: RolloutStatus


class Fleet:
    """The operator's view of the fleet, over one NATS connection."""

    def __init__(
        self, nc: Client, host_timeout: float = 60.0, signer: CommandSigner | None = None
    ) -> None:
        self._nc = nc
        self._signer = signer
        self._js = nc.jetstream(timeout=5)
        self._host_timeout = host_timeout

    @property
    def client(self) -> Client:
        return self._nc

    @property
    def host_timeout(self) -> float:
        """Seconds after which a host's heartbeat is stale (FLEET_HOST_TIMEOUT)."""
        return self._host_timeout

    async def open(self) -> Fleet:
        rollouts, services, hosts = await open_buckets(self._js)
        self.rollouts = RolloutStore(rollouts)
        self.services = ServiceStore(services)
        self.configs = await open_config_store(self._js)
        self.hosts_kv = hosts
        return self

    # ---- reading ----

    async def hosts(self, selector: dict[str, str] | None = None) -> list[HostFacts]:
        facts = await read_hosts(self.hosts_kv)
        return [facts[h] for h in sorted(facts) if matches(facts[h], selector or {})]

    async def rollout(self, target: str) -> RolloutRecord:
        """A rollout by id, or the active (else the latest) rollout of a service."""
        stored = await self.rollouts.get(target)
        if stored is not None:
            return stored.record
        active = await self.rollouts.active_id(target)
        if active is not None:
            found = await self.rollouts.get(active)
            if found is not None:
                return found.record
        of_service = [r for r in await self.rollouts.all() if r.service == target]
        if not of_service:
            raise NotFound(f"no rollout or service called {target}")
        # The operator's last rollout: convergence rollouts (one started while it was
        # planned, and superseded by it; retries after it) are shown while they run.
        operators = [r for r in of_service if not r.converging]
        return (operators or of_service)[-1]

    async def history(self, service: str) -> ServiceRecord:
        record, revision = await self.services.get(service)
        if revision is None:
            raise NotFound(f"no service called {service}")
        return record

    # ---- starting ----

    async def plan_rollout(
        self,
        service: str,
        image: str | None,
        spec: RolloutSpec,
        spec_override: Workload | None = None,
        now: datetime | None = None,
    ) -> tuple[RolloutRecord, ServiceRecord]:
        """The record a rollout would start with; nothing is written."""
        now = now or utc_now()
        history, _ = await self.services.get(service)
        base = spec_override or history.latest_spec
        if base is None:
            raise ConfigurationError(
                f"no spec is known for {service}: give one with --spec FILE for its first rollout"
            )
        if base.name != service:
            raise ConfigurationError(f"the spec is for {base.name}, not {service}")
        blue_green, analysed = spec.strategy is Strategy.BLUE_GREEN, bool(spec.analysis)
        target = target_of(
            base, image, blue_green=blue_green, analysed=analysed, known=history.latest_spec
        )
        clash = await self.services.clash(target)
        if clash is not None:
            raise ConfigurationError(clash)
        previous_revision = history.revision(history.current) if history.current else None
        colour: Colour | None = None
        if spec.strategy is Strategy.BLUE_GREEN:
            if blue_green_of(target) is None:
                raise ConfigurationError(
                    f"blue-green needs [blue_green] in the spec of {service} (port, "
                    "alternate_port and optionally switch_hook)"
                )
            colour = other_colour(history.colour or "blue")
        # Any other strategy updates hosts in place, in the colour that serves.
        stays_in = history.colour if colour is None and blue_green_of(target) else None
        targets = self.live(await self.hosts(spec.selector), now)
        if not targets:
            raise ConfigurationError(
                f"no live host matches selector {spec.selector or '{}'} (heartbeat within "
                f"{self._host_timeout:g}s)"
            )
        number = history.next_revision
        record = RolloutRecord(
            id=rollout_id(service, number),
            service=service,
            revision=number,
            spec=spec,
            target=target,
            previous=previous_revision.spec if previous_revision else None,
            hosts={facts.host: HostRecord(since=now) for facts in targets},
            partition=spec.partition,
            colour=colour,
            in_colour=stays_in,
            created_at=now,
            updated_at=now,
            last_progress_at=now,
        )
        return record, history

    async def vet(self, record: RolloutRecord, vetter: Vetter, *, skip_scan: bool) -> RolloutRecord:
        """The record with its image pinned and vetted; a refusal is announced, then raised."""
        try:
            if isinstance(record.target, AppSpec):
                app, members = await vetter.vet_app(record.target, skip_scan=skip_scan)
                return record.model_copy(update={"target": app, "member_vettings": members})
            target, vetting = await vetter.vet(record.target, skip_scan=skip_scan)
        except ImageRefused as exc:
            await self._announce_refusal(record, exc.message)
            raise
        return record.model_copy(update={"target": target, "vetting": vetting})

    async def _announce_refusal(self, record: RolloutRecord, reason: str) -> None:
        event = record.event(status="refused", reason=reason)
        try:
            await self._js.publish(
                subjects.controller_event_subject("rollout"), encode(event), timeout=5
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("refusal of %s not published: %r", record.id, exc)

    def live(self, hosts: list[HostFacts], now: datetime) -> list[HostFacts]:
        timeout = timedelta(seconds=self._host_timeout)
        return list(live_facts({h.host: h for h in hosts}, now, timeout).values())

    async def start_rollout(self, record: RolloutRecord) -> RolloutRecord:
        """Claim the service, add the revision, write the record; refused if one is active."""
        await self.rollouts.claim_service(record.service, record.id)
        try:
            _, added = await self.services.add_revision(
                record.service,
                record.target,
                lambda n: rollout_id(record.service, n),
                utc_now(),
                policy=record.spec,
            )
            if added.revision != record.revision:
                raise RolloutConflict(f"revision {record.revision} of {record.service} was taken")
            await self.rollouts.create(record)
        except BaseException:
            await self.rollouts.release_service(record.service, record.id)
            raise
        return record

    async def undo_record(
        self, service: str, to_revision: int | None, spec: RolloutSpec
    ) -> RolloutRecord:
        history = await self.history(service)
        if to_revision is None:
            older = [r for r in history.revisions if r.revision < (history.current or 0)]
            if not older:
                raise NotFound(f"{service} has no revision before {history.current} to undo to")
            chosen = older[-1]
        else:
            found = history.revision(to_revision)
            if found is None:
                kept = ", ".join(str(r.revision) for r in history.revisions)
                raise NotFound(f"{service} keeps no revision {to_revision} (kept: {kept})")
            chosen = found
        if history.policy is not None:  # the hosts it is declared on, not every host
            spec = spec.model_copy(update={"selector": dict(history.policy.selector)})
        record, _ = await self.plan_rollout(service, None, spec, spec_override=chosen.spec)
        return record

    # ---- operator intent on a running rollout ----

    async def change(
        self, target: str, verb: str, edit: Callable[[RolloutRecord], RolloutRecord]
    ) -> RolloutRecord:
        record = await self.rollout(target)

        def guarded(current: RolloutRecord) -> RolloutRecord:
            if current.status in TERMINAL:
                raise RolloutConflict(
                    f"cannot {verb} {current.id}: it is already {current.status.value}"
                )
            return edit(current).model_copy(update={"updated_at": utc_now()})

        return await self.rollouts.mutate(record.id, guarded)

    async def pause(self, target: str) -> RolloutRecord:
        return await self.change(target, "pause", lambda r: r.model_copy(update={"paused": True}))

    async def resume(self, target: str) -> RolloutRecord:
        def resume(record: RolloutRecord) -> RolloutRecord:
            return record.model_copy(
                update={
                    "paused": False,
                    "tolerated_failures": record.count(HostPhase.FAILED),
                    "last_progress_at": utc_now(),
                    # Resuming past a failed check is the operator's call to go on anyway.
                    "analysis_overridden": record.analysis_overridden
                    or record.analysis_failure is not None,
                }
            )

        return await self.change(target, "resume", resume)

    async def promote(self, target: str) -> RolloutRecord:
        def promote(record: RolloutRecord) -> RolloutRecord:
            return record.model_copy(update={"promoted": True, "last_progress_at": utc_now()})

        return await self.change(target, "promote", promote)

    async def switch_back(self, service: str) -> RolloutRecord | None:
        """Abort the service's active blue-green rollout if its old colour is still kept."""
        active = await self.rollouts.active_id(service)
        stored = await self.rollouts.get(active) if active else None
        if stored is None or not stored.record.blue_green:
            return None
        if stored.record.count(HostPhase.RETIRING, HostPhase.RETIRED):
            return None  # the old colour is being removed: undo is a redeploy now
        return await self.abort(stored.record.id)

    async def abort(self, target: str) -> RolloutRecord:
        return await self.change(target, "abort", lambda r: r.model_copy(update={"aborted": True}))

    async def set_partition(self, target: str, partition: int) -> RolloutRecord:
        def lower(record: RolloutRecord) -> RolloutRecord:
            return record.model_copy(update={"partition": partition, "last_progress_at": utc_now()})

        return await self.change(target, "change the partition of", lower)

    # ---- dry run ----

    async def dry_run(self, record: RolloutRecord, parallelism: int = 50) -> DryRun:
        """Prepare every target for real (it touches nothing running) and simulate waves."""
        gate = asyncio.Semaphore(parallelism)

        async def check(host: str) -> PreflightResult:
            async with gate:
                return await self._prepare(record, host)

        results = await asyncio.gather(*(check(host) for host in record.ordered_hosts()))
        hosts = {
            r.host: HostRecord(
                phase=HostPhase.READY if r.ready else HostPhase.NOT_READY,
                since=record.created_at,
                reasons=r.reasons,
            )
            for r in results
        }
        now = utc_now()
        facts = {f.host: f for f in await self.hosts()}
        health = fleet_health(hosts, record.service, facts, now, self._host_timeout)
        waves, final = simulate_waves(record.model_copy(update={"hosts": hosts}), health, now)
        return DryRun(record, list(results), waves, final)

    async def _prepare(self, record: RolloutRecord, host: str) -> PreflightResult:
        command = prepare_command(record, host, utc_now() + timedelta(seconds=PREPARE_TIMEOUT))
        if self._signer is not None:
            command = self._signer.sign(command)
        try:
            message = await self._nc.request(
                subjects.command_subject(host), encode(command), timeout=PREPARE_TIMEOUT
            )
            reply = decode(message.data)
        except ProtocolError as exc:
            return PreflightResult(host, False, (Reason(code=exc.code, text=exc.message),))
        except (nats.errors.Error, TimeoutError) as exc:
            return PreflightResult(host, False, (Reason(code="no_answer", text=repr(exc)),))
        if isinstance(reply, PrepareReply):
            return PreflightResult(host, reply.ready, reply.reasons)
        return PreflightResult(host, False, (Reason(code="unexpected_reply", text=reply.kind),))


def simulate_waves(
    record: RolloutRecord, health: dict[str, HostHealth], now: datetime
) -> tuple[list[tuple[str, list[str]]], RolloutStatus]:
    """The waves the planner would run if every command succeeded at once."""
    waves: list[tuple[str, list[str]]] = []
    started: list[str] = []
    """The wave so far: a pass starts at most STARTS_PER_PASS, the next ones the rest."""
    for _ in range(10_000):
        decision = plan(record, health, now)
        if decision.status is RolloutStatus.AWAITING_PROMOTION:
            record = record.model_copy(update={"promoted": True})
            waves.append(("promote", []))
            continue
        if decision.more:  # in flight while the next pass starts more of the same wave
            started.extend(decision.apply)
            updating = {h: HostRecord(phase=HostPhase.UPDATING, since=now) for h in decision.apply}
            record = record.model_copy(update={"hosts": {**record.hosts, **updating}})
            continue
        wave, started = (*started, *decision.apply), []
        steps = [
            (
                _wave_label(record),
                wave,
                HostPhase.STAGED if record.blue_green else HostPhase.DONE,
            ),
            ("switch", decision.switch, HostPhase.DONE),
            ("remove old colour", decision.retire, HostPhase.RETIRED),
        ]
        if not any(hosts for _, hosts, _ in steps):
            return waves, decision.status
        hosts = dict(record.hosts)
        for label, chosen, phase in steps:
            if chosen:
                waves.append((label, list(chosen)))
            for host in chosen:
                hosts[host] = HostRecord(phase=phase, since=now)
                health = {**health, host: HostHealth(online=True, serving=True)}
        record = record.model_copy(
            update={"hosts": hosts, "promoted": record.promoted or record.blue_green}
        )
    raise ControllerError("the simulated rollout did not settle")  # pragma: no cover


def _wave_label(record: RolloutRecord) -> str:
    if record.blue_green:
        return "stage"
    return "canary" if record.spec.canary is not None and not record.promoted else "wave"
