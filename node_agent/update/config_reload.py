"""Config changes on a running service: write, reload, verify, and put back if it breaks.

Two ways in. The watcher (config_watch.py) follows KV ``fleet_config`` for every managed
service that has a ``[config]`` section (``fleetctl config set`` reaches every host at
once); a ``ConfigCommand`` carries one host's step of a paced ``fleetctl config rollout``.

Either way the new file is written atomically, the service's reload policy is applied
(a signal, a restart, or nothing), and its probes must pass, counting failures from the
first probe since the container was serving already. On failure the previous file goes
back, the policy is applied again, and ``config_rolled_back`` carries the probe output.
If the reload itself breaks (the engine refuses the signal or restart, the probes cannot
run, the agent stops before verifying), the previous file goes back too and
``config_failed`` carries the fault; that revision is not marked handled. Every
``config_reloading`` ends with exactly one of ``config_applied``, ``config_rolled_back``
or ``config_failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node_agent.config.files import Applied, ConfigDir, ConfigFault
from node_agent.config.sync import ConfigSync
from node_agent.runtime import SERVICE_LABEL
from node_agent.update.operation import LOG_LINES_IN_BUNDLE, OperationResult, PrepareResult
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.updater import ServiceUpdater
from protocol.config_files import (
    ConfigContent,
    content_hash,
)
from protocol.errors import CommandRefused, FleetError, RuntimeFault, describe
from protocol.models import (
    ConfigCommand,
    ConfigPhase,
    ConfigProgress,
    Envelope,
    FailureBundle,
    OperationOutcome,
    Reason,
)
from protocol.spec import ReloadPolicy, ServiceSpec

log = logging.getLogger("fleet-agent.config")
Publish = Callable[[str, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Change:
    """One file's change on this host: the content, and where it came from."""

    name: str
    content: ConfigContent | None
    """None removes the file."""
    version: int
    kv_revision: int | None
    """The fleet_config revision (watcher); None for a rollout's command."""
    rollout_id: str | None = None


class ConfigReloader:
    def __init__(
        self,
        sync: ConfigSync,
        updater: ServiceUpdater,
        locks: ServiceLocks,
        publish: Publish,
        host: str,
    ) -> None:
        self._sync = sync
        self._updater = updater
        self._runtime = updater.runtime
        self._locks = locks
        self._publish = publish
        self._host = host

    # ---- one change ----

    async def command(self, command: ConfigCommand) -> OperationResult | PrepareResult:
        """A rollout's step; the caller holds the service's lock."""
        spec = self._updater.services.current(command.service)
        if spec is None:
            raise CommandRefused("unknown_service", f"{command.service} does not run here")
        if spec.config is None:
            raise CommandRefused(
                "no_config_mount", f"the spec of {command.service} has no [config] section"
            )
        if command.check_only:
            problem = self._sync.directory(spec).writable()
            reasons = [Reason(code="config_unwritable", text=problem)] if problem else []
            return PrepareResult(not reasons, reasons)
        previous = self._sync.applied.get(spec.name, command.name)
        change = Change(
            command.name,
            command.content,
            command.version,
            previous.kv_revision if previous else None,
            command.rollout_id,
        )
        return await self.apply(spec, change)

    async def apply(self, spec: ServiceSpec, change: Change) -> OperationResult:
        """Write, reload, verify; every ``config_reloading`` gets exactly one end event."""
        assert spec.config is not None
        directory = self._sync.directory(spec)
        old_data = directory.read(change.name)
        old_sha = None if old_data is None else content_hash(old_data)
        new_sha = change.content.sha256 if change.content else None
        unverified = self._sync.applied.unverified(spec.name, change.name)
        if old_sha == new_sha and unverified is None:
            self._record(spec, change, new_sha)
            return await self._result(spec, OperationOutcome.DONE)
        await self.progress(spec, change, ConfigPhase.RELOADING, f"writing {change.name}")
        if unverified is not None:  # written before the agent died, never verified
            old_data, old_sha = unverified
        previous = _Previous(directory, change.name, old_data, old_sha)
        try:
            try:
                ending = await self._carry_out(spec, change, previous, new_sha)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the file goes back
                ending = await self._after_fault(spec, previous, exc)
            self._sync.applied.verified(spec.name, change.name)
        except asyncio.CancelledError:
            # The agent is stopping: nothing will verify the new file, so the previous one
            # goes back and the revision stays unhandled (tried again after the restart).
            detail = f"the agent stopped before verifying it; {_put_back(previous)}"
            await self.progress(spec, change, ConfigPhase.FAILED, detail)
            raise
        await self.progress(spec, change, ending.phase, ending.detail, ending.failure)
        return await self._result(spec, ending.outcome, ending.failure, list(ending.reasons))

    async def _carry_out(
        self, spec: ServiceSpec, change: Change, previous: _Previous, new_sha: str | None
    ) -> _Ending:
        self._sync.applied.writing(spec.name, change.name, previous.data, previous.sha256)
        try:
            previous.directory.put(
                change.name, change.content.data if change.content else None, new_sha
            )
            self._updater.failpoint("config_written")
        except ConfigFault as exc:
            detail = exc.message
            if not _holds_previous(previous):
                detail += f"; {_put_back(previous)}"  # a torn write: not left in place
            return _Ending.failed(exc.code, detail)
        verdict = await self._reload_and_verify(spec)
        if verdict.healthy:
            self._record(spec, change, new_sha)
            return _Ending(ConfigPhase.APPLIED, verdict.reason, OperationOutcome.DONE)
        return await self._roll_back(spec, change, previous, verdict)

    async def _roll_back(
        self, spec: ServiceSpec, change: Change, previous: _Previous, verdict: HealthVerdict
    ) -> _Ending:
        """Verification failed: the previous file back, reloaded; the revision rejected."""
        bundle = await self._failure_bundle(spec, verdict)
        previous.directory.put(change.name, previous.data, previous.sha256)
        self._record(spec, change, previous.sha256, rejected=True)
        detail = f"{verdict.reason}; previous {change.name} restored"
        try:
            restored = await self._reload_and_verify(spec)
        except Exception as exc:  # noqa: BLE001 - reported; the bad revision stays rejected
            detail += f", but reloading it failed: {describe(exc)}"
            return _Ending.failed(_code(exc), detail, bundle)
        if not restored.healthy:
            detail += f", but the service is still unhealthy: {restored.reason}"
            return _Ending(
                ConfigPhase.ROLLED_BACK, detail, OperationOutcome.FAILED, bundle, (bundle.reason,)
            )
        return _Ending(
            ConfigPhase.ROLLED_BACK, detail, OperationOutcome.ROLLED_BACK, bundle, (bundle.reason,)
        )

    async def _after_fault(self, spec: ServiceSpec, previous: _Previous, exc: Exception) -> _Ending:
        """The reload or its verification broke (not the service): the previous file goes
        back and is reloaded if the engine lets us; the revision is not marked handled, so
        a restarted agent tries it again, and the applied record still names the old file.
        """
        detail = f"{describe(exc)}; {_put_back(previous)}"
        if _holds_previous(previous):
            try:
                restored = await self._reload_and_verify(spec)
            except Exception as again:  # noqa: BLE001 - reported with the first fault
                detail += f", but reloading it failed: {describe(again)}"
            else:
                if not restored.healthy:
                    detail += f", but the service is still unhealthy: {restored.reason}"
        return _Ending.failed(_code(exc), detail)

    def _record(
        self, spec: ServiceSpec, change: Change, sha: str | None, *, rejected: bool = False
    ) -> None:
        self._sync.applied.put(
            spec.name, change.name, Applied(change.version, sha, change.kv_revision, rejected)
        )

    async def _reload_and_verify(self, spec: ServiceSpec) -> HealthVerdict:
        assert spec.config is not None
        policy = spec.config.reload
        running = await self._running_copies(spec.name)
        if not running:
            return HealthVerdict(True, "not running: the file is read at its next start")
        for container in running:
            if policy is ReloadPolicy.SIGNAL:
                await self._runtime.kill(container, spec.config.signal)
            elif policy is ReloadPolicy.RESTART:
                await self._runtime.restart(container, spec.stop_grace_period)
        return await wait_until_healthy(
            spec.health,
            self._runtime,
            self._updater.main_name(spec.name),
            # A restarted container starts over and may warm up; a signalled one serves on.
            serving=policy is not ReloadPolicy.RESTART,
        )

    async def _running_copies(self, service: str) -> list[str]:
        """Every running container of the service here (both colours in blue-green)."""
        return [
            str(item["Id"])
            for item in await self._runtime.list_managed(self._updater.agent_id)
            if (item.get("Labels") or {}).get(SERVICE_LABEL) == service
            and item.get("State") == "running"
        ]

    async def _failure_bundle(self, spec: ServiceSpec, verdict: HealthVerdict) -> FailureBundle:
        container = self._updater.main_name(spec.name)
        try:
            lines = await self._runtime.logs_tail(container, LOG_LINES_IN_BUNDLE)
        except RuntimeFault as exc:  # the file goes back all the same
            lines = [f"(log tail unavailable: {exc.message})"]
        return FailureBundle(
            reason=Reason(code="config_rejected", text=verdict.reason),
            exit_code=verdict.exit_code,
            oom_killed=verdict.oom_killed,
            last_log_lines=tuple(lines),
            probe_results=tuple(verdict.results),
        )

    async def _result(
        self,
        spec: ServiceSpec,
        outcome: OperationOutcome,
        failure: FailureBundle | None = None,
        reasons: list[Reason] | None = None,
    ) -> OperationResult:
        status = await self._updater.status(spec.name)
        return OperationResult(outcome, status, failure, reasons or [])

    async def progress(
        self,
        spec: ServiceSpec,
        change: Change,
        phase: ConfigPhase,
        detail: str,
        failure: FailureBundle | None = None,
    ) -> None:
        assert spec.config is not None
        log.info("%s %s v%d: %s %s", spec.name, change.name, change.version, phase.value, detail)
        await self._publish(
            f"config_{phase.value}",
            ConfigProgress(
                sender=self._host,
                host=self._host,
                service=spec.name,
                name=change.name,
                version=change.version,
                sha256=change.content.sha256 if change.content else None,
                phase=phase,
                policy=spec.config.reload,
                detail=detail[:8000],
                rollout_id=change.rollout_id,
                failure=failure,
            ),
        )


@dataclass(frozen=True)
class _Previous:
    """What a file held before a change: what goes back if the change cannot stand."""

    directory: ConfigDir
    name: str
    data: bytes | None
    sha256: str | None


@dataclass(frozen=True)
class _Ending:
    """How one change ended: its end event (phase, detail) and the command's result."""

    phase: ConfigPhase
    detail: str
    outcome: OperationOutcome
    failure: FailureBundle | None = None
    reasons: tuple[Reason, ...] = ()

    @classmethod
    def failed(cls, code: str, detail: str, failure: FailureBundle | None = None) -> _Ending:
        reason = Reason(code=code, text=detail[:4000])
        return cls(ConfigPhase.FAILED, detail, OperationOutcome.FAILED, failure, (reason,))


def _put_back(previous: _Previous) -> str:
    """Restore the previous file (or its absence); says how that went, never raises."""
    try:
        previous.directory.put(previous.name, previous.data, previous.sha256)
    except ConfigFault as exc:
        log.error("config %s: previous file not restored: %s", previous.name, exc.message)
        return f"previous {previous.name} could not be restored: {exc.message}"
    return f"previous {previous.name} restored"


def _holds_previous(previous: _Previous) -> bool:
    try:
        return previous.directory.sha256(previous.name) == previous.sha256
    except ConfigFault:
        return False


def _code(exc: Exception) -> str:
    return exc.code if isinstance(exc, FleetError) else "internal_error"
