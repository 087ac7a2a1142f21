"""The executor: turns the planner's decisions into agent commands, and replies into state.

It runs inside ``fleetctl controller run``. Each pass, the lease holder reads every
active rollout, plans, writes the decision to KV by compare-and-set *before* sending
anything (so every command id is on record first), then sends the commands. A command
already on record but without a task here (after a restart, or a takeover) is sent again
with the same id: the agent returns the recorded outcome instead of running it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from controller.bus_link import advertises_jetstream
from controller.errors import ControllerError
from controller.leader.convergence_loop import ConvergenceLoop, joiner
from controller.leader.converger import Converger, Passed
from controller.leader.lease import LeaderLease
from controller.leader.post_rollout import PostRolloutHooks
from controller.leader.progress import follow_progress
from controller.rollouts.analysis import analyse, baseline_memory
from controller.rollouts.commands import (
    apply_command,
    blue_green_command,
    config_command,
    pinned,
    prepare_command,
    remove_command,
    without_pre_update,
)
from controller.rollouts.convergence import live_facts
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
    after_progress,
    after_reply,
    after_silence,
    apply_decision,
    mark_contact,
)
from controller.settings import ControllerSettings
from controller.state.config_store import ConfigStore, open_config_bucket
from controller.state.inventory import Inventory
from controller.state.services import ServiceStore
from controller.state.store import (
    JETSTREAM_START_SECONDS,
    RolloutStore,
    StaleRecord,
    Stored,
    open_buckets,
    when_jetstream_ready,
)
from controller.streams.metrics_view import MetricsReader
from protocol import subjects
from protocol.codec import decode, encode
from protocol.errors import BrokerError, ProtocolError
from protocol.models import (
    ColourSwitch,
    Command,
    Envelope,
    UpdateProgress,
    utc_now,
)
from protocol.spec import Colour

log = logging.getLogger("fleetctl.controller")
Change = Callable[[RolloutRecord], RolloutRecord]
PUBLISH_TIMEOUT = 2.0
UNRECORDED_GRACE = 30.0
"""Seconds a service's claim may wait for its rollout record before it is released."""


class Executor:
    def __init__(self, nc: Client, settings: ControllerSettings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=5)
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, list[Change]] = {}
        """Replies not yet written, per rollout: the next pass folds them all into one write."""
        self._wake = asyncio.Event()
        self._colours: dict[str, Colour] = {}
        """Blue-green: the serving colour each rollout's service KV record is known to hold."""
        self._signer = settings.signer()
        self.metrics = FleetMetrics()
        """Each host's newest metrics sample, for canary analysis."""
        self.leader = False
        self._unrecorded_since: dict[str, float] = {}
        """Claims seen without their rollout record, and when first seen so (monotonic)."""

    async def _open_state(self) -> KeyValue:
        """Streams and buckets, created where missing; returns the rollouts bucket."""
        rollouts_kv, services_kv, hosts_kv = await open_buckets(self._js, self.settings.streams)
        self.rollouts = RolloutStore(rollouts_kv)
        self.services = ServiceStore(services_kv)
        self.inventory = Inventory(hosts_kv, self.settings.host_timeout)
        self.inventory.on_change = self._wake.set
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
        progress = await follow_progress(self._nc, self._progress)
        watching = asyncio.create_task(self.inventory.run(stop), name="inventory")
        waking = asyncio.create_task(self._wake_when(stop), name="wake-on-stop")
        reading = asyncio.create_task(MetricsReader(self._nc, self.metrics).run(), name="metrics")
        log.info("controller %s started", self.settings.controller_id)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.inventory.loaded.wait(), 10)
            await self._serve(lease, stop)
        finally:
            for task in (*self._tasks.values(), reading):
                task.cancel()
            await asyncio.gather(
                *self._tasks.values(), watching, waking, reading, return_exceptions=True
            )
            await self.post_rollout.close()
            with suppress(nats.errors.Error):
                await progress.unsubscribe()
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
            self._wake.clear()
            if loop.time() >= next_full:
                next_full = loop.time() + self.settings.tick
                await self._tick(lease)
            elif self.leader:
                await self._drive_pending()
                await self._converged(await self.convergence.changes())
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))

    async def _wake_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _drive_pending(self) -> None:
        try:
            for rollout_id in [r for r, changes in self._pending.items() if changes]:
                stored = await self.rollouts.get(rollout_id)
                if stored is not None and stored.record.status not in TERMINAL:
                    await self._drive(stored)
                elif stored is None:
                    self._pending.pop(rollout_id, None)  # nothing left to change
        except (BrokerError, ControllerError) as exc:
            log.warning("pass skipped: %s", exc.message)

    async def _tick(self, lease: LeaderLease) -> None:
        leader = await lease.hold(utc_now())
        if leader != self.leader:
            log.info("controller %s is %s", lease.holder, "the leader" if leader else "standby")
            self.leader = leader
            if leader:  # another may have led meanwhile: learn again what it finished
                self.convergence.lead_again()
        if not leader:
            return
        try:
            active: dict[str, RolloutRecord | None] = {}
            self.convergence.active = active
            for service, rollout_id in await self.rollouts.active():
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
                    await self._drive(stored, full=True)
            await self._converged(await self.convergence.full_if_due())
        except (BrokerError, ControllerError) as exc:
            log.warning("pass skipped: %s", exc.message)

    async def _converged(self, passed: Passed | None) -> None:
        """Hosts a convergence pass gave to rollouts in progress; rollouts it started are
        driven now."""
        if passed is None:
            return
        for rollout_id, hosts in passed.joins.items():
            self._record(rollout_id, joiner(hosts))
        if passed.started or passed.joins:
            self._wake.set()

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

    async def _drive(self, stored: Stored, full: bool = False) -> None:
        """Plan the rollout again and write what changed; a ``full`` pass (once a tick)
        also takes in hosts that came back meanwhile."""
        pending = self._pending.get(stored.record.id, [])
        folded = len(pending)
        record = stored.record
        for change in pending[:folded]:
            record = change(record)
        now = utc_now()
        joining = self._joining(record, now) if full else []
        if joining:  # came back or enrolled while it runs: one more host of this rollout
            record = join(record, joining, now)
        health = self.inventory.health(
            [*record.hosts, *record.others], record.service, now, self.settings.host_timeout
        )
        record = self._analyse(mark_contact(record, health, now), now)
        decision = plan(record, health, now)
        updated = apply_decision(record, decision, now)
        self.convergence.saw(updated)
        if updated != stored.record:
            try:
                await self.rollouts.update(updated, stored.revision)
            except StaleRecord:
                # Someone else wrote (an operator's verb): plan again from what they wrote,
                # with the replies still pending.
                self._wake.set()
                return
            if updated.status is not stored.record.status:
                await self._announce(updated)
                log.info("%s: %s (%s)", updated.id, updated.status.value, updated.reason)
            if joining:
                await self.converger.joined(updated, joining, self.inventory.facts)
        del pending[:folded]
        if updated.serving_colour and self._colours.get(updated.id) != updated.serving_colour:
            await self._switch_colour(updated, updated.serving_colour)
        if updated.status in TERMINAL:
            await self._finish(updated)
            return
        for host, entry in updated.hosts.items():
            due = entry.not_before is None or entry.not_before <= now
            if entry.phase in IN_FLIGHT and entry.command_id and due:
                self._ensure_command(updated, host, entry.command_id)

    def _joining(self, record: RolloutRecord, now: datetime) -> list[str]:
        if not takes_joiners(record):
            return []
        timeout = timedelta(seconds=self.settings.host_timeout)
        return joining_hosts(record, live_facts(self.inventory.facts, now, timeout))

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
        self._pending.pop(record.id, None)
        self.converger.settled(record)
        if record.converging:
            await self.converger.finished(record, utc_now())
        if record.config is not None:
            # Stored before the service is released: a crash in between finishes it again.
            if record.status is RolloutStatus.COMPLETE:
                await self.configs.publish(record.config)
            await self.rollouts.release_service(record.service, record.id)
            return
        # Accepted before the service is released: a crash in between finishes it again.
        if record.status is RolloutStatus.COMPLETE and not record.removing:
            await self.services.mark_current(record.service, record.revision)
        await self.rollouts.release_service(record.service, record.id)
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
        port = record.target.blue_green.port_of(colour) if record.target.blue_green else 0
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

    # ---- commands ----

    def _ensure_command(self, record: RolloutRecord, host: str, command_id: str) -> None:
        if command_id in self._tasks:
            return
        task = asyncio.create_task(
            self._command(record, host, command_id), name=f"command-{host}-{command_id[:8]}"
        )
        self._tasks[command_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(command_id, None))

    def _build(self, record: RolloutRecord, host: str, command_id: str) -> tuple[Command, float]:
        entry = record.hosts[host]
        expires = utc_now() + timedelta(seconds=self.settings.command_ttl)
        if record.config is not None:
            facts = self.inventory.facts.get(host)
            labels = facts.labels if facts is not None else {}
            command = config_command(record, host, labels, expires, command_id)
            health = record.target.health
            # Verifying the new file, and on failure the restored one: twice the deadline.
            deadline = 2 * (health.healthy_deadline if health else 30.0)
            timeout = deadline + 2 * record.target.stop_grace_period + self.settings.command_slack
            return command, timeout
        if entry.phase is HostPhase.PREPARING:
            prepare = prepare_command(record, host, expires, command_id, rollout_id=record.id)
            return prepare, self.settings.prepare_timeout
        if record.removing:
            # Each copy (serving, set aside, next, the other colour) is stopped in turn.
            copies = 5
            timeout = copies * record.target.stop_grace_period + self.settings.command_slack
            return remove_command(record, host, expires, command_id), timeout
        if entry.phase is HostPhase.UPDATING or record.blue_green:
            spec = pinned(record.target, entry.digest, record.spec.min_healthy_time)
        else:
            assert record.previous is not None, "the planner reverts only with a previous spec"
            spec = without_pre_update(record.previous)  # a way back is never refused
        deadline = spec.health.healthy_deadline if spec.health else 0.0
        hooks = sum(h.timeout for h in (spec.hooks.pre_update, spec.hooks.post_update) if h)
        timeout = deadline + spec.stop_grace_period + hooks + self.settings.command_slack
        if record.blue_green:
            hook = spec.blue_green.hook_timeout if spec.blue_green else 0.0
            return blue_green_command(record, host, spec, expires, command_id), timeout + hook
        return apply_command(record, host, spec, expires, command_id), timeout

    async def _command(self, record: RolloutRecord, host: str, command_id: str) -> None:
        command, timeout = self._build(record, host, command_id)
        if self._signer is not None:
            # Signed afresh on every send (a new sent_at): a resend is not a replay.
            command = self._signer.sign(command)
        subject = subjects.command_subject(host)
        try:
            message = await self._nc.request(subject, encode(command), timeout=timeout)
            reply = decode(message.data)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            silent = isinstance(exc, nats.errors.NoRespondersError)
            self._silence(
                record.id,
                host,
                command_id,
                "no agent answers" if silent else (f"no answer within {timeout:.0f}s"),
            )
            return
        except ProtocolError as exc:
            self._silence(record.id, host, command_id, f"undecodable reply: {exc.message}")
            return
        except nats.errors.Error as exc:
            self._silence(record.id, host, command_id, f"bus error: {exc!r}")
            return
        self._record(record.id, lambda r: after_reply(r, host, command_id, reply, utc_now()))

    def _silence(self, rollout_id: str, host: str, command_id: str, why: str) -> None:
        log.info("%s: %s: %s; will retry", rollout_id, host, why)
        self._record(rollout_id, lambda r: after_silence(r, host, command_id, utc_now(), why))

    def _progress(self, news: UpdateProgress) -> None:
        """An agent's phase of a command this controller awaits, for the next full pass
        (it wakes none: a phase is news for people, and the planner does not wait on it).
        A standby, or news of a command already answered, records nothing."""
        if news.rollout_id is None or news.operation_id not in self._tasks:
            return
        host, command_id, doing = news.host, news.operation_id, news.phase.value
        self._pending.setdefault(news.rollout_id, []).append(
            lambda r: after_progress(r, host, command_id, doing, utc_now())
        )

    def _record(self, rollout_id: str, change: Change) -> None:
        """Queue a reply's change for the next pass, and wake that pass now."""
        self._pending.setdefault(rollout_id, []).append(change)
        self._wake.set()
