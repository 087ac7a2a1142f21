"""One command, from its bytes to its reply: decode, authenticate (signature, canonical
encoding, clock, replay), answer a repeated id with its recorded outcome, then run it on
its service, one operation per service at a time. No exception leaves it: a refusal is
a typed error reply, any other failure an ``internal_error`` one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from node_agent.apps.group import AppUpdater
from node_agent.operation_names import also_held, lock_name
from node_agent.seen_commands import SeenSignatures
from node_agent.settings import AgentSettings
from node_agent.update.blue_green import BlueGreenUpdater
from node_agent.update.config_reload import ConfigReloader
from node_agent.update.operation import Emit, OperationResult
from node_agent.update.outcomes import OutcomeStore
from node_agent.update.recovery import Recovery
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.updater import ServiceUpdater
from node_agent.upgrade.predecessor import HandedOver, Predecessor
from protocol.agent_service import AGENT_SERVICE
from protocol.codec import decode, encode
from protocol.errors import AgentError, CommandRefused, ProtocolError
from protocol.models import (
    AnyMessage,
    ApplyAppCommand,
    ApplyCommand,
    Command,
    ConfigCommand,
    ErrorReply,
    InspectCommand,
    InspectReply,
    OperationOutcome,
    OperationReply,
    PrepareAppCommand,
    PrepareCommand,
    PrepareReply,
    Reason,
    RemoveCommand,
    Reply,
    RetireCommand,
    RollbackCommand,
    StageCommand,
    SwitchCommand,
    utc_now,
)
from protocol.signing import CommandRejected, CommandVerifier
from protocol.spec import colour_in

log = logging.getLogger("fleet-agent")
REJECTIONS = frozenset(
    {
        "unsigned",
        "unknown_key",
        "bad_signature",
        "non_canonical",
        "not_yet_valid",
        "replayed",
        "expired",
        "wrong_host",
    }
)
"""Error codes of commands refused unread: published as ``command_rejected`` events."""
EmitterFactory = Callable[[str, str, str | None, str | None], Emit]


class CommandRunner:
    def __init__(
        self,
        settings: Callable[[], AgentSettings],
        outcomes: OutcomeStore,
        updater: ServiceUpdater,
        blue_green: BlueGreenUpdater,
        config_reloader: ConfigReloader,
        locks: ServiceLocks,
        recovery: Recovery,
        emitter: EmitterFactory,
    ) -> None:
        self._settings = settings
        first = settings()
        self.host = first.host_id
        self.outcomes = outcomes
        self.updater = updater
        self.blue_green = blue_green
        self.config_reloader = config_reloader
        self.locks = locks
        self.recovery = recovery
        self._emitter = emitter
        self.verifier = (
            CommandVerifier(first.trusted_command_keys) if first.trusted_command_keys else None
        )
        self.seen = SeenSignatures(first.state_dir / "seen-commands") if self.verifier else None
        self._running_ids: set[str] = set()
        self._recorded: dict[str, OperationReply] = {}
        """Operations whose outcome the updater stored before closing their journal."""
        self.apps: AppUpdater | None = None
        """Set by the daemon: Apply of an app (node_agent/apps)."""
        self.upgrade: Predecessor | None = None
        """Set by the daemon: Apply of the agent service is a handoff (node_agent/upgrade)."""

    def hold(self, operation_id: str) -> None:
        """An operation this agent finishes on its own (an upgrade it took over): a retry
        of its command is told it is still running until ``release_hold``."""
        self._running_ids.add(operation_id)

    def release_hold(self, operation_id: str) -> None:
        self._running_ids.discard(operation_id)

    @property
    def settings(self) -> AgentSettings:
        return self._settings()

    def close(self) -> None:
        if self.seen is not None:
            self.seen.close()

    async def reply_for(self, data: bytes) -> Reply | None:
        """The reply to ``data``, whatever happens: no exception leaves the handler. None:
        the command was handed over with the host (an agent upgrade): the successor
        answers it."""
        try:
            message = decode(data)
        except ProtocolError as exc:
            return self.error(None, exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - the sender must get an answer anyway
            return self._unexpected(None, exc)
        try:
            reply = await self._answer(message, data)
        except HandedOver:
            return None
        except Exception as exc:  # noqa: BLE001 - the sender must get an answer anyway
            return self._unexpected(message.id, exc)
        if isinstance(reply, ErrorReply) and reply.code in REJECTIONS:
            log.warning("command refused (%s): %s", reply.code, reply.message)
        return reply

    def _unexpected(self, command_id: str | None, exc: Exception) -> ErrorReply:
        """A fault of the agent itself: one line for the operator, the details at debug."""
        log.error("command %s failed: %s: %s", command_id, type(exc).__name__, exc)
        log.debug("command %s failed", command_id, exc_info=exc)
        return self.error(command_id, "internal_error", f"{type(exc).__name__}: {exc}")

    async def _answer(self, message: AnyMessage, data: bytes) -> Reply:
        if not isinstance(message, Command):
            return self.error(message.id, "not_a_command", f"{message.kind} is not a command")
        try:
            self._authenticate(message, data)
        except CommandRejected as exc:
            return self.error(message.id, exc.code, exc.message)
        if message.host != self.host:
            return self.error(
                message.id, "wrong_host", f"command is for {message.host}, this is {self.host}"
            )
        # A retried command gets its recorded outcome even after it expired: the sender
        # lost the first reply, and running nothing is exactly what it must get.
        recorded = self.outcomes.get(message.id)
        if isinstance(recorded, Reply):
            return recorded
        if message.expires_at <= utc_now():
            return self.error(
                message.id, "expired", f"command expired at {message.expires_at.isoformat()}"
            )
        if message.id in self._running_ids:
            return self.error(message.id, "in_progress", f"command {message.id} is still running")
        # Marked running before the first await, so a retry arriving meanwhile is refused.
        self._running_ids.add(message.id)
        try:
            if self.seen is not None and message.signature is not None:
                await self.seen.remember(message.signature, message.expires_at)
            reply = await self._run(message)
        except CommandRefused as exc:
            return self.error(message.id, exc.code, exc.message)
        except AgentError as exc:
            reply = self.error(message.id, exc.code, exc.message)
        finally:
            self._running_ids.discard(message.id)
            stored = self._recorded.pop(message.id, None)
        if stored is not None:
            return stored  # the very reply a retry of this id will get
        if not isinstance(message, InspectCommand):
            await asyncio.to_thread(self.outcomes.put, message.id, reply)
        return reply

    def _authenticate(self, command: Command, data: bytes) -> None:
        """With trusted keys configured: signed by one, sent as signed, not from the
        future, never seen."""
        if self.verifier is None:
            return
        self.verifier.verify(command)
        # The signature covers the decoded fields, and decoding forgives: an int 0 reads
        # as False, nanoseconds below a microsecond vanish. Other bytes that decode to
        # the signed fields would make a second valid envelope (and dodge replay by
        # signature), so only the controller's exact encoding is accepted.
        if encode(command) != bytes(data):
            raise CommandRejected(
                "non_canonical",
                f"command {command.id} is not in its canonical encoding",
            )
        ahead = (command.sent_at - utc_now()).total_seconds()
        if ahead > self.settings.command_clock_skew:
            raise CommandRejected(
                "not_yet_valid",
                f"command {command.id} was sent {ahead:.0f}s in this host's future",
            )
        signature = command.signature
        assert signature is not None  # verify() refuses an unsigned command
        if self.seen is not None and self.seen.seen(signature):
            raise CommandRejected(
                "replayed", f"command {command.id} was received before (same signature)"
            )

    async def _run(self, command: Command) -> Reply:
        if isinstance(command, InspectCommand):
            status = await self.updater.status(command.service)
            return InspectReply(sender=self.host, in_reply_to=command.id, status=status)
        service = lock_name(command)
        if service == AGENT_SERVICE and not isinstance(command, PrepareCommand | ApplyCommand):
            raise CommandRefused(
                "agent_service", f"{command.kind} is not done to the agent itself; only apply"
            )
        names = (service, *also_held(command, self.apps, self.updater.journal))
        for name in names:
            if self.locks.busy(name):
                raise CommandRefused("busy", f"another operation on {name} is in progress")
        async with AsyncExitStack() as held:
            for name in names:
                await held.enter_async_context(self.locks.hold(name))
            if not isinstance(command, PrepareCommand | PrepareAppCommand):  # touch nothing
                for name in names:
                    await self.recovery.before_operation(name)
            try:
                return await self._run_exclusive(command)
            finally:
                if any(self.updater.journal.get(name) is not None for name in names):
                    self.recovery.wake()  # left unsettled: keep trying in the background

    async def _run_exclusive(self, command: Command) -> Reply:
        if isinstance(command, PrepareCommand):
            emit = self._emitter(
                command.id, command.service.name, command.rollout_id, command.service.image
            )
            prepared = await self.updater.prepare(command, emit)
            return PrepareReply(
                sender=self.host,
                in_reply_to=command.id,
                service=command.service.name,
                ready=prepared.ready,
                reasons=tuple(prepared.reasons),
                digest=prepared.digest,
            )
        if isinstance(command, PrepareAppCommand) and self.apps is not None:
            emit = self._emitter(command.id, command.app.name, command.rollout_id, None)
            reasons, digests = await self.apps.prepare(command, emit)
            return PrepareReply(
                sender=self.host, in_reply_to=command.id, service=command.app.name,
                ready=not reasons, reasons=tuple(reasons), digests=digests,
            )  # fmt: skip
        if isinstance(command, ApplyAppCommand) and self.apps is not None:
            app = command.app
            if not command.force and self._update_locked(app.name):
                return await self._deferred(command.id, app.name)
            emit = self._emitter(command.id, app.name, command.rollout_id, None)
            result = await self.apps.apply(command.id, app, emit, command.rollout_id)
            return self.operation_reply(command.id, app.name, result)
        if isinstance(command, ApplyCommand):
            spec = command.service
            if not command.force and self._update_locked(spec.name):
                return await self._deferred(command.id, spec.name)
            emit = self._emitter(command.id, spec.name, command.rollout_id, spec.image)
            if spec.name == AGENT_SERVICE and self.upgrade is not None:
                handed = await self.upgrade.apply(command.id, spec, emit)  # or HandedOver
                return self.operation_reply(command.id, spec.name, handed)
            colour = colour_in(spec)
            if colour is not None:  # convergence of a blue-green service
                result = await self.blue_green.apply_in_colour(
                    command.id, spec, colour, emit, command.rollout_id
                )
            else:
                result = await self.updater.apply(command.id, spec, emit, command.rollout_id)
            return self.operation_reply(command.id, spec.name, result)
        if isinstance(command, RemoveCommand):
            if self._update_locked(command.service):
                return await self._deferred(command.id, command.service)
            emit = self._emitter(command.id, command.service, command.rollout_id, None)
            if self.apps is not None and self.apps.store.get(command.service) is not None:
                result = await self.apps.remove(command.service, emit)
            else:
                result = await self.updater.remove(command.service, emit)
            return self.operation_reply(command.id, command.service, result)
        if isinstance(command, RollbackCommand):
            emit = self._emitter(command.id, command.service, command.rollout_id, None)
            result = await self.updater.rollback(
                command.id, command.service, emit, command.rollout_id
            )
            return self.operation_reply(command.id, command.service, result)
        if isinstance(command, ConfigCommand):
            done = await self.config_reloader.command(command)
            if isinstance(done, OperationResult):
                return self.operation_reply(command.id, command.service, done)
            return PrepareReply(
                sender=self.host,
                in_reply_to=command.id,
                service=command.service,
                ready=done.ready,
                reasons=tuple(done.reasons),
            )
        return await self._run_blue_green(command)

    async def _run_blue_green(self, command: Command) -> Reply:
        if isinstance(command, StageCommand):
            spec = command.service
            emit = self._emitter(command.id, spec.name, command.rollout_id, spec.image)
            result = await self.blue_green.stage(command.id, spec, command.colour, emit)
            return self.operation_reply(command.id, spec.name, result)
        if isinstance(command, SwitchCommand):
            emit = self._emitter(command.id, command.service, command.rollout_id, None)
            result = await self.blue_green.switch(
                command.id, command.service, command.colour, command.remove_other, emit
            )
            return self.operation_reply(command.id, command.service, result)
        if isinstance(command, RetireCommand):
            emit = self._emitter(command.id, command.service, command.rollout_id, None)
            result = await self.blue_green.retire(command.service, command.colour, emit)
            return self.operation_reply(command.id, command.service, result)
        raise CommandRefused(
            "unknown_command", f"no handler for {command.kind}"
        )  # pragma: no cover

    async def _deferred(self, command_id: str, service: str) -> OperationReply:
        """Not now: the application holds its update lock (the controller asks later)."""
        locked = Reason(code="locked", text="the application holds its update lock")
        result = OperationResult(
            OperationOutcome.DEFERRED, await self.updater.status(service), reasons=[locked]
        )
        return self.operation_reply(command_id, service, result)

    def _update_locked(self, service: str) -> bool:
        template = self.settings.update_lock_path
        return template is not None and Path(template.format(service=service)).exists()

    def operation_reply(
        self, command_id: str, service: str, result: OperationResult
    ) -> OperationReply:
        return OperationReply(
            sender=self.host,
            in_reply_to=command_id,
            service=service,
            outcome=result.outcome,
            status=result.status,
            failure=result.failure,
            reasons=tuple(result.reasons),
            member_failures=result.member_failures,
        )

    def error(self, command_id: str | None, code: str, message: str) -> ErrorReply:
        return ErrorReply(
            sender=self.host, in_reply_to=command_id, code=code, message=message[:8000]
        )

    async def record_outcome(
        self, operation_id: str, service: str, result: OperationResult
    ) -> None:
        reply = self.operation_reply(operation_id, service, result)
        await asyncio.to_thread(self.outcomes.put, operation_id, reply)
        self._recorded[operation_id] = reply  # sent as it is, not built and stored again

    def forget_recorded(self, operation_id: str) -> None:
        """An operation settled by recovery: no command is waiting to send its outcome."""
        self._recorded.pop(operation_id, None)


def event_type_of(reply: Reply) -> str:
    """``command_rejected`` for a command refused unread, ``command_failed`` for any other
    error, else the reply's own kind."""
    if isinstance(reply, ErrorReply):
        return "command_rejected" if reply.code in REJECTIONS else "command_failed"
    return reply.kind
