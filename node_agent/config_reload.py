"""Config changes on a running service: write, reload, verify, and put back if it breaks.

Two ways in. The watcher follows KV ``fleet_config`` for every managed service that has a
``[config]`` section (``fleetctl config set`` reaches every host at once); a
``ConfigCommand`` carries one host's step of a paced ``fleetctl config rollout``.

Either way the new file is written atomically, the service's reload policy is applied
(a signal, a restart, or nothing), and its probes must pass, counting failures from the
first probe since the container was serving already. On failure the previous file goes
back, the policy is applied again, and ``config_rolled_back`` carries the probe output.

The watcher starts from the last value of each file, so an agent that was away catches
up on start; the revision it handled is recorded per file, so nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from node_agent.config_files import Applied, ConfigFault
from node_agent.config_sync import ConfigSync
from node_agent.probes import HealthVerdict, wait_until_healthy
from node_agent.runtime import SERVICE_LABEL
from node_agent.service_locks import ServiceLocks
from node_agent.updater import LOG_LINES_IN_BUNDLE, OperationResult, PrepareResult, ServiceUpdater
from protocol.config_files import (
    ConfigContent,
    content_hash,
    decode_document,
    parse_config_key,
    service_config_keys,
)
from protocol.errors import CommandRefused, ProtocolError, RuntimeFault
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
WATCH_RESTART_DELAY = 2.0
"""Seconds before a watcher that lost its feed is opened again."""
SERVICES_RESCAN = 1.0
"""Seconds between two looks for services that started (or stopped) having config."""


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

    # ---- the watcher ----

    async def run(self, stop: asyncio.Event) -> None:
        """One watcher per managed service with config files, until ``stop``."""
        watchers: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                wanted = set(self._services_with_config())
                for service in [s for s in watchers if s not in wanted or watchers[s].done()]:
                    ended = watchers.pop(service)
                    ended.cancel()
                    if ended.done() and not ended.cancelled() and ended.exception():
                        log.error("config watcher of %s failed: %r", service, ended.exception())
                for service in wanted - watchers.keys():
                    watchers[service] = asyncio.create_task(
                        self._watch(service), name=f"config-watch-{service}"
                    )
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SERVICES_RESCAN)
        finally:
            for task in watchers.values():
                task.cancel()
            await asyncio.gather(*watchers.values(), return_exceptions=True)

    def _services_with_config(self) -> list[str]:
        services = self._updater.services
        return [
            name
            for name in services.names()
            if (spec := services.current(name)) is not None and spec.config is not None
        ]

    async def _watch(self, service: str) -> None:
        kv = self._sync.kv
        if kv is None:
            await asyncio.sleep(WATCH_RESTART_DELAY)
            return
        try:
            watcher = await kv.watch(service_config_keys(service))
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cannot watch the config of %s: %r", service, exc)
            await asyncio.sleep(WATCH_RESTART_DELAY)
            return
        try:
            async for entry in watcher:
                if entry is not None:
                    await self._on_entry(service, entry)
        finally:
            with suppress(nats.errors.Error, TimeoutError):
                await asyncio.shield(watcher.stop())  # type: ignore[no-untyped-call]

    async def _on_entry(self, service: str, entry: KeyValue.Entry) -> None:
        try:
            _, name = parse_config_key(entry.key)
        except ProtocolError:
            return
        revision = entry.revision or 0
        if self._handled(service, name, revision):
            return
        async with self._locks.hold(service):
            # An Apply may have written this very revision while the watcher waited.
            spec = self._updater.services.current(service)
            if spec is None or spec.config is None or self._handled(service, name, revision):
                return
            try:
                change = self._change_of(spec, name, entry, revision)
            except ProtocolError as exc:
                await self._refuse(spec, name, revision, exc.message)
                return
            try:
                await self.apply(spec, change)
            except (ConfigFault, RuntimeFault) as exc:
                log.error("config %s/%s revision %d: %s", service, name, revision, exc.message)
            except OSError as exc:  # the state dir itself: the watcher starts over
                log.error("config %s/%s revision %d: %s", service, name, revision, exc)

    def _handled(self, service: str, name: str, revision: int) -> bool:
        applied = self._sync.applied.get(service, name)
        return applied is not None and (applied.kv_revision or 0) >= revision

    def _change_of(
        self, spec: ServiceSpec, name: str, entry: KeyValue.Entry, revision: int
    ) -> Change:
        if entry.operation in (KV_DEL, KV_PURGE):
            applied = self._sync.applied.get(spec.name, name)
            return Change(name, None, applied.version if applied else 0, revision)
        document = decode_document(entry.value or b"")
        content = self._sync.content_for_host(document)
        return Change(name, content, document.version, revision)

    async def _refuse(self, spec: ServiceSpec, name: str, revision: int, why: str) -> None:
        """An unreadable revision: reported, recorded as handled, the file left as it is."""
        applied = self._sync.applied.get(spec.name, name)
        on_disk = self._sync.directory(spec).sha256(name)
        self._sync.applied.put(
            spec.name, name, Applied(applied.version if applied else 0, on_disk, revision, True)
        )
        await self._progress(spec, Change(name, None, 0, revision), ConfigPhase.FAILED, why)

    # ---- the host's labels changed ----

    async def relabelled(self) -> None:
        """Re-resolve every file for this host's new labels and apply what now differs.

        A selector override follows the labels: a host that joins ``tier=canary`` gets
        that override, one that leaves it falls back. Only files at rest are touched: one
        a rollout is still changing (its version is ahead of the bucket's) or one this
        host proved bad at that revision is left to the rollout and the watcher.
        """
        for service in self._services_with_config():
            try:
                await self._resolve_again(service)
            except (ConfigFault, RuntimeFault) as exc:
                log.error("config of %s after a label change: %s", service, exc.message)
            except OSError as exc:
                log.error("config of %s after a label change: %s", service, exc)

    async def _resolve_again(self, service: str) -> None:
        async with self._locks.hold(service):
            spec = self._updater.services.current(service)
            if spec is None or spec.config is None:
                return
            for name, stored in (await self._sync.stored(service)).items():
                applied = self._sync.applied.get(service, name)
                at_rest = (
                    applied is not None
                    and not applied.rejected
                    and applied.kv_revision == stored.kv_revision
                    and applied.version == stored.document.version
                )
                if not at_rest:
                    continue
                assert applied is not None
                content = self._sync.content_for_host(stored.document)
                if content.sha256 != applied.sha256:
                    change = Change(name, content, stored.document.version, stored.kv_revision)
                    await self.apply(spec, change)

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
        assert spec.config is not None
        directory = self._sync.directory(spec)
        old_data = directory.read(change.name)
        old_sha = None if old_data is None else content_hash(old_data)
        new_sha = change.content.sha256 if change.content else None
        if old_sha == new_sha:
            self._record(spec, change, new_sha)
            return await self._result(spec, OperationOutcome.DONE)
        await self._progress(spec, change, ConfigPhase.RELOADING, f"writing {change.name}")
        try:
            directory.put(change.name, change.content.data if change.content else None, new_sha)
        except ConfigFault as exc:
            await self._progress(spec, change, ConfigPhase.FAILED, exc.message)
            reason = Reason(code=exc.code, text=exc.message)
            return await self._result(spec, OperationOutcome.FAILED, reasons=[reason])
        verdict = await self._reload_and_verify(spec)
        if verdict.healthy:
            self._record(spec, change, new_sha)
            await self._progress(spec, change, ConfigPhase.APPLIED, verdict.reason)
            return await self._result(spec, OperationOutcome.DONE)
        bundle = await self._failure_bundle(spec, verdict)
        directory.put(change.name, old_data, old_sha)
        restored = await self._reload_and_verify(spec)
        self._record(spec, change, old_sha, rejected=True)
        detail = f"{verdict.reason}; previous {change.name} restored"
        if not restored.healthy:
            detail += f", but the service is still unhealthy: {restored.reason}"
        await self._progress(spec, change, ConfigPhase.ROLLED_BACK, detail, bundle)
        outcome = OperationOutcome.ROLLED_BACK if restored.healthy else OperationOutcome.FAILED
        return await self._result(spec, outcome, bundle, [bundle.reason])

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
        return FailureBundle(
            reason=Reason(code="config_rejected", text=verdict.reason),
            exit_code=verdict.exit_code,
            oom_killed=verdict.oom_killed,
            last_log_lines=tuple(await self._runtime.logs_tail(container, LOG_LINES_IN_BUNDLE)),
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

    async def _progress(
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
