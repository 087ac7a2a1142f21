"""fleet-agent's daemon: the connection, command dispatch and the heartbeat.

Commands arrive on ``fleet.cmd.<host>`` (request/reply). Each runs in its own task
(node_agent.commands checks and runs it, one operation per service at a time; a
repeated command id returns the recorded outcome).
Every reply and every phase change is also an event on ``fleet.evt.<host>.<type>``
(stream FLEET_EVENTS). Host facts go to KV ``fleet_hosts`` every heartbeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from contextlib import suppress
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from node_agent.apps.group import AppUpdater
from node_agent.apps.store import AppStore
from node_agent.bus_state import ensure_streams, open_bucket, when_jetstream_ready
from node_agent.commands import CommandRunner, event_type_of
from node_agent.config.files import AppliedConfigs
from node_agent.config.sync import ConfigSync
from node_agent.heartbeat import Heartbeat
from node_agent.host_facts import read_host_facts
from node_agent.housekeeping import Housekeeping
from node_agent.recent_replies import RecentReplies
from node_agent.runtime import DockerRuntime
from node_agent.settings import AgentSettings, reloaded
from node_agent.telemetry.engine_events import EngineEventFollower
from node_agent.telemetry.log_shipper import LogShipper, LogShipping
from node_agent.telemetry.metrics import MetricsPublisher
from node_agent.telemetry.outbox import Outbox, Outgoing
from node_agent.update.blue_green import BlueGreenUpdater, ColourSpecs
from node_agent.update.config_reload import ConfigReloader
from node_agent.update.config_watch import ConfigWatcher
from node_agent.update.journal import Journal
from node_agent.update.operation import Emit, OperationResult
from node_agent.update.outcomes import OutcomeStore
from node_agent.update.recovery import Recovery
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.service_store import ServiceStore
from node_agent.update.updater import ServiceUpdater
from node_agent.upgrade.fallback import Fallback
from node_agent.upgrade.handoff_files import DONE, HandoffNotes, handoff_going_on
from node_agent.upgrade.predecessor import Predecessor
from node_agent.upgrade.successor import Successor
from protocol import subjects
from protocol.agent_service import AGENT_SERVICE
from protocol.codec import encode
from protocol.errors import AgentError, BrokerError, ProtocolError
from protocol.jetstream_start import why_not_ready
from protocol.models import (
    Envelope,
    HostFacts,
    ServiceStatus,
    UpdatePhase,
    UpdateProgress,
)
from protocol.spec import ServiceSpec
from protocol.streams import fleet_buckets
from protocol.transport import MAX_OUTSTANDING_PINGS

log = logging.getLogger("fleet-agent")
PUBLISH_TIMEOUT = 2.0
OUTBOX_FLUSH_TIMEOUT = 5.0
SUCCESSOR_GRACE = 10.0
"""Seconds past its ready deadline a successor still tries to reach the bus."""


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.host = settings.host_id
        self.instance = uuid.uuid4().hex
        """This run of the agent: the health record says which agent wrote it."""
        self.runtime = DockerRuntime(settings.docker_host, settings.docker_timeout)
        self._build_operations(settings.state_dir)
        self._build_telemetry(settings.state_dir)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.heartbeat = Heartbeat(self.host, self.host_facts, lambda: self.settings, self.instance)
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers = asyncio.Semaphore(settings.command_workers)
        self._connected_state: bool | None = None
        self._last_seen: dict[str, ServiceStatus] = {}  # for beats while the engine is down
        self._subscription: Subscription | None = None
        self._closing = False
        self._recent_replies = RecentReplies(
            settings.nats_ping_interval * (MAX_OUTSTANDING_PINGS + 1)
        )

    def _build_operations(self, state: Path) -> None:
        """What changes services: the updater and its stores, recovery, config reloads,
        blue-green, and the runner that checks and runs each command."""
        self.outcomes = OutcomeStore(state / "outcomes")
        self.services = ServiceStore(state / "services")
        self.config = ConfigSync(lambda: self.settings, AppliedConfigs(state / "config-applied"))
        self.updater = ServiceUpdater(
            self.settings, self.runtime, Journal(state / "journal"), self.services, self.config
        )
        self.locks = ServiceLocks()
        self.recovery = Recovery(self.updater, self.locks, self._emitter, self._recovered)
        self.housekeeping = Housekeeping(self.outcomes, self.updater.journal)
        self.config_reloader = ConfigReloader(
            self.config, self.updater, self.locks, self.publish_event, self.host
        )
        self.config_watcher = ConfigWatcher(
            self.config_reloader, self.config, self.updater, self.locks
        )
        self.blue_green = BlueGreenUpdater(self.updater, ColourSpecs(state / "colours"))
        self.commands = CommandRunner(
            lambda: self.settings,
            self.outcomes,
            self.updater,
            self.blue_green,
            self.config_reloader,
            self.locks,
            self.recovery,
            self._emitter,
        )
        self.apps = AppUpdater(self.updater, AppStore(state / "apps"))
        self.commands.apps = self.recovery.apps = self.apps
        self.handoff_notes = HandoffNotes(state)
        self.commands.upgrade = Predecessor(
            lambda: self.settings, self.runtime, self.handoff_notes, self
        )
        self.successor = Successor(
            self.runtime, self.handoff_notes, state, self.updater.failpoint, self.instance
        )
        self.fallback = Fallback(
            self.runtime, self.handoff_notes, self.settings.agent_container, self.settings.handoff
        )
        self.updater.record_outcome = self.commands.record_outcome
        self.updater.publish_hook = lambda event: self.publish_event("hook_run", event)
        self.updater.retention.publish = lambda event: self.publish_event("images_pruned", event)

    def _build_telemetry(self, state: Path) -> None:
        """What streams back: engine events, the outbox, logs and metrics."""
        settings, agent_id = self.settings, self.updater.agent_id
        self.engine_events = EngineEventFollower(
            self.runtime,
            self.host,
            agent_id,
            lambda event: self.publish_event(f"container_{event.action.value}", event),
        )
        self.outbox = Outbox(
            self.host,
            self._store,
            event_bytes=settings.event_buffer_bytes,
            telemetry_bytes=settings.telemetry_buffer_bytes,
        )
        self.log_shipper = LogShipper(
            self.runtime,
            self.host,
            agent_id,
            state / "log-cursors",
            self.outbox.send_telemetry,
            LogShipping(flush_interval=settings.log_flush_interval),
        )
        self.metrics = MetricsPublisher(
            self.runtime, self.host, agent_id, self.outbox.send_telemetry, settings.metrics_interval
        )

    # ---- lifecycle ----

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain in-flight work and exit cleanly."""
        handoff = handoff_going_on(self.handoff_notes, self.settings.handoff)
        # A successor that cannot reach the bus in its ready deadline (and a grace, so that
        # a running agent decides first) gives up and exits:
        # the running agent removes it, or, if that one died, the next upgrade finds it
        # stopped (never a successor waiting for ever).
        limit = self.successor.ready_deadline() + SUCCESSOR_GRACE if handoff else None
        await self._connect(stop, limit)
        if handoff is None:  # this agent, killed once it let go, is not the host's now
            await self.fallback.keep_out_of_the_way(stop)
        if stop.is_set():
            await self._close()
            return
        # The outbox outlives the other loops: the commands drained at the end still
        # report, and it flushes what is buffered before the connection closes.
        outbox_stop = asyncio.Event()
        outbox = asyncio.create_task(self.outbox.run(outbox_stop), name="outbox")
        if handoff is None:
            await self.recovery.settle_all()
            await self._settle_upgrade()
            await self._subscribe()
        else:  # a successor: the host is the running agent's until it lets go (and it
            # drains first, so there is nothing to recover)
            self.commands.hold(handoff)
            await self.successor.take_over(handoff, self._subscribe)
        background = [
            asyncio.create_task(self.heartbeat.run(stop), name="heartbeat"),
            asyncio.create_task(self.engine_events.run(stop), name="engine-events"),
            asyncio.create_task(self.metrics.run(stop), name="metrics"),
            asyncio.create_task(self.config_watcher.run(stop), name="config-watch"),
            asyncio.create_task(self.recovery.run(stop), name="recovery"),
            asyncio.create_task(self.housekeeping.run(stop), name="housekeeping"),
        ]
        if self.settings.ship_logs:
            background.append(asyncio.create_task(self.log_shipper.run(stop), name="log-shipper"))
        if handoff is not None:
            probation = self.successor.probation(handoff, stop, self._finish_upgrade)
            background.append(asyncio.create_task(probation, name="probation"))
        log.info("agent %s serving %s", self.host, subjects.command_subject(self.host))
        try:
            await stop.wait()
        finally:
            await self.release(None)
            # The loops end on ``stop``; waiting (not cancelling) lets a write finish.
            # If this task itself was cancelled instead, ``stop`` is not set: cancel them.
            for task in background:
                if not stop.is_set():
                    task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._tasks:
                log.info("draining %d command(s) in flight", len(self._tasks))
                await asyncio.gather(*self._tasks, return_exceptions=True)
            outbox_stop.set()
            try:
                await asyncio.wait_for(outbox, OUTBOX_FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("%d message(s) not flushed before exit", self.outbox.backlog)
            await self._close()

    async def _connect(self, stop: asyncio.Event, within: float | None = None) -> None:
        """Connect, however long NATS stays away; give up only when ``stop`` is set, or
        (BrokerError) after ``within`` seconds if given.

        nats.py retries the first connection itself (max_reconnect_attempts=-1) and reports
        each failure to ``error_cb``, which logs the outage once.
        """
        client = Client()
        connecting = asyncio.create_task(
            client.connect(
                servers=list(self.settings.nats_urls),
                **self.settings.bus_options(),
                name=f"fleet-agent-{self.host}",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            ),
            name="nats-connect",
        )
        stopping = asyncio.create_task(stop.wait(), name="nats-connect-stop")
        await asyncio.wait(
            {connecting, stopping}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        late = not connecting.done() and not stop.is_set()
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
        await asyncio.gather(connecting, stopping, return_exceptions=True)
        if connecting.cancelled() or connecting.exception() is not None:
            self._closing = True
            with suppress(nats.errors.Error):
                await client.close()
            if late:
                raise BrokerError(f"cannot reach NATS within {within:g}s")
            if not connecting.cancelled():
                raise BrokerError(f"cannot connect to NATS: {connecting.exception()!r}")
            return
        self._nc = client
        self._report_connection(True, "connected to NATS")
        self._js = client.jetstream(timeout=5)
        try:
            await when_jetstream_ready(self._ensure_streams, stop, log.warning)
        except nats.errors.Error as exc:  # refused: permissions, a conflicting stream
            await self._close()
            raise BrokerError(f"cannot set up the fleet's streams: {why_not_ready(exc)}") from exc

    def _report_connection(self, connected: bool, message: str) -> None:
        # Log once per change of state, not once per retry.
        if self._connected_state is not connected:
            (log.info if connected else log.warning)(message)
        self._connected_state = connected

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._recent_replies.disconnected()
            self._report_connection(False, "disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self._report_connection(True, "reconnected to NATS")
        resend = self._recent_replies.to_resend()
        if resend and self._nc is not None:
            log.info("re-sending %d recent replies the dead link may have swallowed", len(resend))
            with suppress(nats.errors.Error):
                for subject, payload in resend:
                    await self._nc.publish(subject, payload)

    async def _on_error(self, exc: Exception) -> None:
        if self._nc is None and not self._closing:  # the first connection is still failing
            self._report_connection(False, f"cannot reach NATS ({exc or type(exc).__name__})")
        if self._recent_replies.refused_copy(str(exc)):
            log.info("a re-sent reply was not needed: %s", exc)
            return
        if self.outbox.refused.note(str(exc)):
            return  # the outbox drops that message, logs it and reports it
        if "permissions violation" in str(exc).lower():
            # The bus refused something this host tried: its permissions (hosts enroll)
            # and what the agent needs have drifted apart. An operator must see that.
            log.error("NATS refused: %s", exc)
            return
        log.debug("nats: %r", exc)

    async def _ensure_streams(self) -> None:
        js = self._jetstream
        await ensure_streams(js, self.settings.streams)
        buckets = fleet_buckets(self.settings.streams)
        self.heartbeat.bucket = await open_bucket(js, buckets[subjects.HOSTS_BUCKET])
        self.config.kv = await open_bucket(js, buckets[subjects.CONFIG_BUCKET])

    async def _close(self) -> None:
        self._closing = True
        self.commands.close()
        if self._nc is not None and not self._nc.is_closed:
            # A connection lost for good (a revoked certificate, a dead server) fails its
            # final flush; the agent still exits cleanly. Over TLS, after a reconnect,
            # asyncio has already torn the TLS transport down and nats-py's flush into it
            # raises AttributeError (seen with nats-py 2.x on Python 3.11).
            with suppress(nats.errors.Error, OSError, AttributeError):
                await self._nc.close()
        self.runtime.close()

    @property
    def _client(self) -> Client:
        assert self._nc is not None, "not connected"
        return self._nc

    @property
    def _jetstream(self) -> JetStreamContext:
        assert self._js is not None, "not connected"
        return self._js

    # ---- events ----

    async def publish_event(self, event_type: str, message: Envelope) -> None:
        """Queue an event for JetStream; never waits, so a command never waits on NATS."""
        try:
            payload = encode(message)
            subject = subjects.host_event_subject(self.host, event_type)
        except ProtocolError as exc:
            log.error("event %s not sent: %s", event_type, exc)
            return
        self.outbox.send_event(Outgoing(subject, payload, message.id))

    async def _store(self, subject: str, payload: bytes, msg_id: str) -> None:
        await self._jetstream.publish(
            subject, payload, timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": msg_id}
        )

    def _emitter(
        self, command_id: str, service: str, rollout_id: str | None, image: str | None
    ) -> Emit:
        async def emit(phase: UpdatePhase, detail: str, progress: float | None = None) -> None:
            log.info("%s %s: %s %s", service, command_id[:8], phase.value, detail)
            await self.publish_event(
                "update_progress",
                UpdateProgress(
                    sender=self.host,
                    host=self.host,
                    service=service,
                    operation_id=command_id,
                    rollout_id=rollout_id,
                    phase=phase,
                    detail=detail[:8000],
                    progress=progress,
                    image=image,
                ),
            )

        return emit

    # ---- commands ----

    async def _subscribe(self) -> None:
        self._subscription = await self._client.subscribe(
            subjects.command_subject(self.host), cb=self._on_command
        )

    async def release(self, operation_id: str | None, within: float | None = None) -> bool:
        """Take no more commands; with ``operation_id`` (an upgrade's handoff, called from
        its own command), let every other command in flight finish first, for at most
        ``within`` seconds: False if some are still running then."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with suppress(nats.errors.Error):
                await subscription.unsubscribe()
        if operation_id is None:
            return True
        others = self._tasks - {asyncio.current_task()}
        if not others:
            return True
        _, running = await asyncio.wait(others, timeout=within)
        return not running

    async def resume(self) -> None:
        if self._subscription is None:
            await self._subscribe()

    async def _settle_upgrade(self) -> None:
        """An agent upgrade left to answer at start: this agent's own, past its commit
        point (it stopped before it was through), or one whose successor failed (its
        guard brought this agent back). A failure here must not keep the agent down."""
        try:
            if self.handoff_notes.has(DONE):
                await self.successor.complete(self._finish_upgrade)
            else:
                await self.fallback.settle(self._finish_upgrade)
        except (AgentError, OSError) as exc:
            log.error("the agent upgrade could not be settled: %s", exc)

    async def _finish_upgrade(
        self, operation_id: str, result: OperationResult, spec: ServiceSpec | None
    ) -> None:
        """An agent upgrade this agent settles (a successor, or the old agent back)."""
        if spec is not None:
            self.services.record_update(spec, self.services.current(AGENT_SERVICE))
        reply = self.commands.operation_reply(operation_id, AGENT_SERVICE, result)
        await asyncio.to_thread(self.outcomes.put, operation_id, reply)
        self.commands.release_hold(operation_id)
        await self.publish_event(event_type_of(reply), reply)

    async def _on_command(self, msg: Msg) -> None:
        self._track(asyncio.create_task(self._handle(msg), name="command"))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` until it ends; stopping the agent waits for what is tracked."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        async with self._workers:
            reply = await self.commands.reply_for(msg.data)
        if reply is None:  # handed over with the host: the successor answers it
            return
        # The outcome is queued before the reply is sent, so the event stream keeps cause
        # before effect: whatever the controller does on reading this reply (a colour
        # switch, the next batch) is stored after this host's outcome.
        await self.publish_event(event_type_of(reply), reply)
        if self._nc is not None and self._nc.is_connected:
            # The reply follows its events, so its reader finds them stored.
            await self.outbox.events_stored(PUBLISH_TIMEOUT)
        if msg.reply:
            payload = encode(reply)
            self._recent_replies.sent(msg.reply, payload)
            with suppress(nats.errors.Error):
                await msg.respond(payload)

    # ---- recovery and heartbeat ----

    async def _recovered(self, operation_id: str, service: str, result: OperationResult) -> None:
        """An operation settled after a crash: its outcome is already stored; report it."""
        self.commands.forget_recorded(operation_id)
        reply = self.commands.operation_reply(operation_id, service, result)
        await self.publish_event(reply.kind, reply)

    # ---- settings ----

    def reload_settings(self, fresh: AgentSettings) -> list[str]:
        """Take ``fresh``'s labels, intervals and log level now, on the same connection.

        Returns the fields that changed but need a restart (they keep their old value).
        """
        merged, ignored = reloaded(self.settings, fresh)
        relabelled = merged.labels != self.settings.labels
        if ignored:
            log.warning("settings reloaded; %s need a restart to change", ", ".join(ignored))
        self.settings = merged
        self.updater.settings = merged
        self.metrics.interval = merged.metrics_interval
        self.log_shipper.shipping = dataclasses.replace(
            self.log_shipper.shipping, flush_interval=merged.log_flush_interval
        )
        logging.getLogger().setLevel(merged.log_level)
        self.heartbeat.now()  # new labels reach fleet_hosts now, not a beat later
        if relabelled:  # selector overrides follow the labels
            self._track(asyncio.create_task(self.config_watcher.relabelled(), name="relabel"))
        log.warning(  # at warning, so it shows whatever the new level is
            "settings reloaded: labels %s, log level %s", merged.labels, merged.log_level
        )
        return ignored

    async def host_facts(self) -> HostFacts:
        return await read_host_facts(
            self.settings, self.runtime, self.updater, self.services, self.locks,
            self._last_seen, self.apps.store,
        )  # fmt: skip
