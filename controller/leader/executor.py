"""The executor: turns the planner's decisions into agent commands, and replies into state.

It runs inside ``fleetctl controller run``. Each pass, the lease holder reads every
active rollout, folds in the answers that came, plans, writes the decision to KV by
compare-and-set *before* sending any command that changes a host (so its id is on record
first), then sends them; pre-flight checks, which change nothing, go during the write,
and the next ones as answers to checks come, put on record by the pass after.
A command already on record but without a task here (after a restart, or a takeover) is
sent again with the same id (dispatch.py).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import datetime

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from controller.bus_link import advertises_jetstream
from controller.errors import ControllerError
from controller.leader.checks import check_early, checks_on_record, queue_next_checks
from controller.leader.collection import CollectionPacer
from controller.leader.convergence_loop import ConvergenceLoop, joiner, reckoner
from controller.leader.converger import Converger, Passed
from controller.leader.dispatch import Dispatch, plan_again
from controller.leader.lease import LeaderLease
from controller.leader.post_rollout import PostRolloutHooks
from controller.leader.progress import follow_progress, follow_upgrade_replies
from controller.rollouts.analysis import analyse, baseline_memory
from controller.rollouts.convergence import LiveHosts
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.joining import join, joining_hosts, takes_joiners
from controller.rollouts.model import (
    IN_FLIGHT,
    TERMINAL,
    AnalysisMetric,
    HostPhase,
    RolloutRecord,
    RolloutStatus,
)
from controller.rollouts.planner import plan
from controller.rollouts.transitions import (
    adopt_checks,
    apply_decision,
    fold,
    mark_contact,
)
from controller.rollouts.workload import blue_green_of
from controller.settings import ControllerSettings
from controller.state.config_store import ConfigStore, open_config_bucket
from controller.state.inventory import Inventory
from controller.state.rollout_health import RolloutHealth
from controller.state.rollout_store import RolloutStore, Stored
from controller.state.services import ServiceStore
from controller.state.store import (
    JETSTREAM_START_SECONDS,
    StaleRecord,
    open_buckets,
    when_jetstream_ready,
)
from controller.streams.metrics_view import MetricsReader
from protocol import subjects
from protocol.codec import encode
from protocol.errors import BrokerError
from protocol.models import ColourSwitch, Envelope, utc_now
from protocol.spec import Colour

log = logging.getLogger("fleetctl.controller")
PUBLISH_TIMEOUT = 2.0
HEALTH_WHOLE_EVERY = 60.0
"""Seconds between two looks at every host of a rollout (in between, only at the hosts
heard of, and those whose heartbeat just grew too old)."""
UNRECORDED_GRACE = 30.0
"""Seconds a service's claim may wait for its rollout record before it is released."""


class Executor:
    def __init__(self, nc: Client, settings: ControllerSettings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=5)
        self.settings = settings
        self._wake = asyncio.Event()
        self._colours: dict[str, Colour] = {}
        """Blue-green: the serving colour each rollout's service KV record is known to hold."""
        self.metrics = FleetMetrics()
        """Each host's newest metrics sample, for canary analysis."""
        self.leader = False
        self._unrecorded_since: dict[str, float] = {}
        """Claims seen without their rollout record, and when first seen so (monotonic)."""
        self._collections = CollectionPacer()

    async def _open_state(self) -> KeyValue:
        """Streams and buckets, created where missing; returns the rollouts bucket."""
        rollouts_kv, services_kv, hosts_kv = await open_buckets(self._js, self.settings.streams)
        self.rollouts = RolloutStore(rollouts_kv)
        self.services = ServiceStore(services_kv)
        self.inventory = Inventory(hosts_kv, self.settings.host_timeout)
        self.inventory.on_change = self._wake.set
        self.health = RolloutHealth(
            self.inventory, self.settings.host_timeout, whole_every=HEALTH_WHOLE_EVERY
        )
        self.dispatch = Dispatch(self._nc, self.settings, self._wake, self.inventory.facts)
        self.configs = ConfigStore(await open_config_bucket(self._js, self.settings.streams))
        self.converger = Converger(
            self.rollouts, self.services, self._publish, self.settings.host_timeout
        )
        self.convergence = ConvergenceLoop(
            self.converger, self.inventory, self.settings.converge_interval
        )
        self.post_rollout = PostRolloutHooks(
            self._publish, self.settings.controller_id, self.settings.allow_hooks
        )
        return rollouts_kv

    async def _open_state_unless_stopped(self, stop: asyncio.Event) -> KeyValue | None:
        """The state, waiting for a JetStream still electing its leader, unless told to
        stop meanwhile (a SIGTERM during the wait ends it at once): then None."""
        patience = JETSTREAM_START_SECONDS if advertises_jetstream(self._nc) else 0.0
        opening = asyncio.create_task(
            when_jetstream_ready(self._open_state, log.warning, patience), name="open-state"
        )
        stopping = asyncio.create_task(stop.wait(), name="stop-while-opening")
        try:
            await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task is cancelled: neither is left behind
            for task in (opening, stopping):
                if not task.done():
                    task.cancel()
            await asyncio.gather(opening, stopping, return_exceptions=True)
        return None if opening.cancelled() else opening.result()

    async def run(self, stop: asyncio.Event) -> None:
        rollouts_kv = await self._open_state_unless_stopped(stop)
        if rollouts_kv is None:
            return
        lease = LeaderLease(rollouts_kv, self.settings.controller_id, self.settings.lease_ttl)
        progress = await follow_progress(self._nc, self.dispatch.progress)
        upgrades = await follow_upgrade_replies(self._nc, self.dispatch.answered)
        watching = asyncio.create_task(self.inventory.run(stop), name="inventory")
        waking = asyncio.create_task(self._wake_when(stop), name="wake-on-stop")
        reading = asyncio.create_task(MetricsReader(self._nc, self.metrics).run(), name="metrics")
        log.info("controller %s started", self.settings.controller_id)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.inventory.loaded.wait(), 10)
            self._collections.take_over()
            await self._serve(lease, stop)
        finally:
            self._collections.hand_back()
            sending = self.dispatch.sending()
            for task in (*sending, reading):
                task.cancel()
            await asyncio.gather(*sending, watching, waking, reading, return_exceptions=True)
            await self.post_rollout.close()
            with suppress(nats.errors.Error):
                await progress.unsubscribe()
                await upgrades.unsubscribe()
            if self.leader:
                await lease.release()

    async def _serve(self, lease: LeaderLease, stop: asyncio.Event) -> None:
        """A full pass every tick; in between, a reply wakes a pass over its rollout at once.

        The full pass renews the lease and lists the active rollouts (both KV round trips),
        so it runs only once a tick; a rollout with new replies is planned again without
        waiting, so a wave starts as soon as the last one finished.
        """
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while not stop.is_set():
            await self.dispatch.all_sent()
            self._collections.collect_if_due(quiet=self.dispatch.idle())
            if self.leader:
                await self._tidy()
            self._wake.clear()
            if loop.time() >= next_full:
                next_full = loop.time() + self.settings.tick
                await self._tick(lease)
            elif self.leader:
                await asyncio.sleep(0)  # answers already read off the socket come in first
                await self._drive_pending()
                await self._converged(await self.convergence.changes())
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))

    async def _tidy(self) -> None:
        """New bases for rollouts with many changes, while nothing waits for a pass."""
        for rollout_id in self.rollouts.untidy():
            if not self.dispatch.idle():  # (looked at before each: a write takes a while)
                return
            try:
                await self.rollouts.tidy(rollout_id)
            except BrokerError as exc:
                log.warning("%s: not tidied: %s", rollout_id, exc.message)
                return

    async def _wake_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _drive_pending(self) -> None:
        try:
            for rollout_id in self.dispatch.with_news():
                stored = await self.rollouts.get(rollout_id)
                if stored is not None and stored.record.status not in TERMINAL:
                    await self._drive(stored)
                else:  # over (superseded, or finished by another leader), or gone
                    self.dispatch.drop(rollout_id)
                    self.health.forget(rollout_id)
        except (BrokerError, ControllerError) as exc:
            log.warning("pass skipped: %s", exc.message)

    async def _tick(self, lease: LeaderLease) -> None:
        leader = await lease.hold(utc_now())
        if leader != self.leader:
            log.info("controller %s is %s", lease.holder, "the leader" if leader else "standby")
            self.leader = leader
            self.health.forget()  # whoever led meanwhile, health is made whole again
            self.dispatch.stop_checks()  # another leads the checks, or led them meanwhile
            if leader:  # another may have led meanwhile: learn again what it finished
                self.convergence.lead_again()
        if not leader:
            return
        try:
            active: dict[str, RolloutRecord | None] = {}
            self.convergence.active = active
            live = LiveHosts(self.inventory.facts, utc_now(), self.settings.host_timeout)
            claims = await self.rollouts.active()
            self.rollouts.keep_only({rollout_id for _, rollout_id in claims})
            for service, rollout_id in claims:
                stored = await self.rollouts.get(rollout_id)
                if stored is None:
                    await self._release_if_abandoned(service, rollout_id)
                    active[service] = None
                    continue
                self._unrecorded_since.pop(rollout_id, None)  # its record came
                active[service] = stored.record
                if stored.record.status in TERMINAL:
                    await self._finish(stored.record)  # a crash came between the two writes
                else:
                    await self._drive(stored, live)
            await self._converged(await self.convergence.full_if_due())
        except (BrokerError, ControllerError) as exc:
            log.warning("pass skipped: %s", exc.message)

    async def _converged(self, passed: Passed | None) -> None:
        """Hosts a convergence pass gave to rollouts in progress; rollouts it started are
        driven now."""
        if passed is None:
            return
        for rollout_id, hosts in passed.joins.items():
            self.dispatch.record(rollout_id, joiner(hosts))
        for rollout_id, others in passed.others.items():
            self.dispatch.record(rollout_id, reckoner(others))
        if passed.joins:
            self._wake.set()
        try:
            for record in passed.started:  # its first checks go now, not at the next tick
                stored = await self.rollouts.get(record.id)
                if stored is not None and stored.record.status not in TERMINAL:
                    await self._drive(stored)
        except (BrokerError, ControllerError) as exc:
            log.warning("pass skipped: %s", exc.message)

    async def _release_if_abandoned(self, service: str, rollout_id: str) -> None:
        """Free a claim whose record never came (fleetctl died between the two writes).

        fleetctl claims the service first and writes the record a moment later; a pass in
        between must not take the claim away, or the rollout is written but never driven
        (CI caught exactly that on a slow machine). So only a claim without its record for
        UNRECORDED_GRACE seconds is released."""
        now = asyncio.get_running_loop().time()
        first_seen = self._unrecorded_since.setdefault(rollout_id, now)
        if now - first_seen < UNRECORDED_GRACE:
            return
        log.warning("%s: claim on %s has no rollout record; releasing it", rollout_id, service)
        await self.rollouts.release_service(service, rollout_id)
        self._unrecorded_since.pop(rollout_id, None)

    async def _drive(self, stored: Stored, live: LiveHosts | None = None) -> None:
        """Plan the rollout again and write what changed; a ``full`` pass (once a tick)
        also takes in hosts that came back meanwhile."""
        pending = self.dispatch.pending(stored.record.id)
        folded = len(pending)
        now = utc_now()
        checks_sent = self.dispatch.checks_sent(stored.record.id)
        record = adopt_checks(stored.record, checks_sent, now)
        record = fold(record, pending[:folded], now)
        full = live is not None
        joining = joining_hosts(record, live.hosts()) if live and takes_joiners(record) else []
        if joining:  # came back or enrolled while it runs: one more host of this rollout
            record = join(record, joining, now)
        health = self.health.of(record, now)
        looked = self.health.looked_at(record.id) if full else None
        if full:  # a note for people (offline since): once a tick is soon enough
            record = mark_contact(record, health, now, looked)
        record = self._analyse(record, now)
        decision = plan(record, health, now)
        updated = apply_decision(record, decision, now)
        self.convergence.saw(updated)
        queue_next_checks(self.dispatch, updated)
        early = check_early(self.dispatch, updated, decision.prepare)
        if updated != stored.record:
            try:
                await self.rollouts.update(updated, stored.revision)
            except StaleRecord:
                # Someone else wrote (an operator's verb): plan again from what they wrote,
                # with the replies still pending.
                self.dispatch.cancel(early)
                self._wake.set()
                return
            except BrokerError:
                self.dispatch.cancel(early)
                raise
            if updated.status is not stored.record.status:
                await self._announce(updated)
                log.info("%s: %s (%s)", updated.id, updated.status.value, updated.reason)
            if joining:
                await self.converger.joined(updated, joining, self.inventory.facts)
        self.dispatch.folded(stored.record.id, folded)
        if decision.more:  # the budget allows more starts than one pass makes: at once
            self.dispatch.record(record.id, plan_again)
        checks_on_record(self.dispatch, updated, checks_sent)
        if full:
            self.health.noted(record.id, looked)
        if updated.serving_colour and self._colours.get(updated.id) != updated.serving_colour:
            await self._switch_colour(updated, updated.serving_colour)
        if updated.status in TERMINAL:
            await self._finish(updated)
            return
        for host in (h for phase in IN_FLIGHT for h in updated.in_phase(phase)):
            entry = updated.hosts[host]
            due = entry.not_before is None or entry.not_before <= now
            if entry.command_id and due:
                self.dispatch.ensure(updated, host, entry.command_id)

    def _analyse(self, record: RolloutRecord, now: datetime) -> RolloutRecord:
        """Measure the rollout's checks on the newest metrics; note the first failure."""
        spec = record.spec
        if (
            not spec.analysis
            or record.analysis_failure
            or record.analysis_overridden
            or record.aborted
            or record.status is RolloutStatus.REVERTING
        ):
            return record
        update: dict[str, object] = {}
        wants_baseline = any(c.metric is AnalysisMetric.MEMORY_RATIO for c in spec.analysis)
        if wants_baseline and record.baseline_memory is None:
            baseline = baseline_memory(record, self.metrics, now)
            if baseline is not None:
                update["baseline_memory"] = baseline
        measured = record.model_copy(update=update) if update else record
        verdict = analyse(measured, self.metrics, now)
        if verdict.no_data != measured.analysis_note:  # stored, so status shows it
            if verdict.no_data is not None:  # logged once per change, not once per pass
                log.warning("%s: %s", record.id, verdict.no_data)
            measured = measured.model_copy(update={"analysis_note": verdict.no_data})
        failure = verdict.failure
        if failure is None:
            return measured
        log.warning("%s: %s", record.id, failure)
        return measured.model_copy(update={"analysis_failure": failure})

    async def _finish(self, record: RolloutRecord) -> None:
        self.dispatch.drop(record.id)
        self.health.forget(record.id)
        with suppress(BrokerError):  # already done by the write that finished it, mostly
            await self.rollouts.drop_parts(record.id)
        self.converger.settled(record)
        if record.converging:
            await self.converger.finished(record, utc_now())
        if record.config is not None:
            # Stored before the service is released: a crash in between finishes it again.
            if record.status is RolloutStatus.COMPLETE:
                await self.configs.publish(record.config)
            await self.rollouts.release_service(record.service, record.id)
            self.convergence.ended(record)
            return
        # Accepted before the service is released: a crash in between finishes it again.
        if record.status is RolloutStatus.COMPLETE and not record.removing:
            await self.services.mark_current(record.service, record.revision)
        await self.rollouts.release_service(record.service, record.id)
        self.convergence.ended(record)
        self.post_rollout.start(record)

    async def _announce(self, record: RolloutRecord) -> None:
        await self._publish(subjects.controller_event_subject("rollout"), record.event())

    async def _publish(self, subject: str, event: Envelope) -> None:
        try:
            await self._js.publish(
                subject, encode(event), timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": event.id}
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("%s event not published: %r", event.kind, exc)

    async def _switch_colour(self, record: RolloutRecord, colour: Colour) -> None:
        """Flip the service's colour in KV, then tell routers; both safe to repeat."""
        await self.services.set_colour(record.service, colour)
        forward = colour == record.colour
        hosts = tuple(
            host
            for host in record.ordered_hosts()
            if (forward and record.hosts[host].phase in (HostPhase.SWITCHING, HostPhase.DONE))
            or (not forward and record.hosts[host].switched)
        )
        blue_green = blue_green_of(record.target)
        port = blue_green.port_of(colour) if blue_green else 0
        event = ColourSwitch(
            # One id per rollout and colour: a repeat after a crash is stored once.
            id=f"{record.id}-switch-{colour}",
            sender=subjects.CONTROLLER_SENDER,
            service=record.service,
            colour=colour,
            port=port,
            rollout_id=record.id,
            hosts=hosts,
        )
        await self._publish(subjects.controller_event_subject("switch"), event)
        log.info("%s: %s now serves %s", record.id, record.service, colour)
        self._colours[record.id] = colour
