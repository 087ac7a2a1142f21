"""The watcher of config changes: follows KV ``fleet_config`` for every managed service
that has a ``[config]`` section, and hands each new revision to the ConfigReloader.

It starts from the last value of each file, so an agent that was away catches up on
start; the revision it handled is recorded per file, so nothing is applied twice. When
the host's labels change it re-resolves every file (selector overrides follow them).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from node_agent.config.files import Applied, ConfigFault
from node_agent.config.sync import ConfigSync
from node_agent.update.config_reload import Change, ConfigReloader
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.updater import ServiceUpdater
from protocol.config_files import decode_document, parse_config_key, service_config_keys
from protocol.errors import ProtocolError, RuntimeFault
from protocol.models import ConfigPhase
from protocol.spec import ServiceSpec

log = logging.getLogger("fleet-agent.config")
WATCH_RESTART_DELAY = 2.0
"""Seconds before a watcher that lost its feed is opened again."""
SERVICES_RESCAN = 1.0
"""Seconds between two looks for services that started (or stopped) having config."""


class ConfigWatcher:
    def __init__(
        self,
        reloader: ConfigReloader,
        sync: ConfigSync,
        updater: ServiceUpdater,
        locks: ServiceLocks,
    ) -> None:
        self._reloader = reloader
        self._sync = sync
        self._updater = updater
        self._locks = locks

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
            pending = set(watchers.values())
            while pending:  # a cancel lost somewhere below is sent again: the agent stops
                for task in pending:
                    task.cancel()
                _, pending = await asyncio.wait(pending, timeout=1.0)
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
                await self._reloader.apply(spec, change)
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
        await self._reloader.progress(
            spec, Change(name, None, 0, revision), ConfigPhase.FAILED, why
        )

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
                    await self._reloader.apply(spec, change)
