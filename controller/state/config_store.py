"""Config files in KV ``fleet_config``: set (base or override), read, list, history.

Every change is a compare-and-set on the key's last revision, so two operators setting
the same file at once both land, one after the other, each as its own version.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from controller.rollouts.model import ConfigTarget
from controller.state.store import (
    CAS_ATTEMPTS,
    KV_TIMEOUT,
    NotFound,
    RolloutConflict,
    kv_get,
    kv_keys,
    open_bucket,
)
from protocol import subjects
from protocol.config_files import (
    ConfigContent,
    ConfigDocument,
    config_key,
    decode_document,
    encode_document,
    first_document,
    parse_config_key,
    scope_text,
)
from protocol.errors import BrokerError, ProtocolError
from protocol.streams import StreamRetention, fleet_buckets


@dataclass(frozen=True)
class StoredConfig:
    document: ConfigDocument
    kv_revision: int


async def open_config_bucket(
    js: JetStreamContext, retention: StreamRetention | None = None
) -> KeyValue:
    """KV fleet_config (created if missing, with the same settings the agents use; with
    ``retention``, an existing bucket is brought to its replicas). NATS errors pass
    through, for a caller that waits for a JetStream still starting."""
    definition = fleet_buckets(retention or StreamRetention())[subjects.CONFIG_BUCKET]
    return await open_bucket(js, definition, bring_existing=retention is not None)


async def open_config_store(
    js: JetStreamContext, retention: StreamRetention | None = None
) -> ConfigStore:
    """The config store on KV fleet_config; NATS trouble is a BrokerError."""
    try:
        kv = await open_config_bucket(js, retention)
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(f"cannot open KV {subjects.CONFIG_BUCKET}: {exc!r}") from exc
    return ConfigStore(kv)


class ConfigStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, service: str, name: str) -> StoredConfig | None:
        entry = await kv_get(self._kv, config_key(service, name))
        if entry is None or entry.value is None:
            return None
        return StoredConfig(decode_document(entry.value), entry.revision or 0)

    async def require(self, service: str, name: str) -> StoredConfig:
        stored = await self.get(service, name)
        if stored is None:
            raise NotFound(f"{service} has no config file {name}")
        return stored

    async def put(self, document: ConfigDocument, last: int | None) -> int:
        """Write ``document`` if the key is still at revision ``last`` (None: absent)."""
        key = config_key(document.service, document.name)
        data = encode_document(document)
        try:
            if last is None:
                return await asyncio.wait_for(self._kv.create(key, data), KV_TIMEOUT)
            return await asyncio.wait_for(self._kv.update(key, data, last=last), KV_TIMEOUT)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RolloutConflict(f"config {key} changed meanwhile") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV write of config {key} failed: {exc!r}") from exc

    async def set(
        self,
        service: str,
        name: str,
        content: ConfigContent,
        now: datetime,
        *,
        host: str | None = None,
        selector: dict[str, str] | None = None,
        change: str = "",
    ) -> StoredConfig:
        """The next version with new base content, or one override set; retried on a race."""
        for _ in range(CAS_ATTEMPTS):
            current = await self.get(service, name)
            if current is None:
                if host is not None or selector:
                    raise NotFound(
                        f"{service} has no config file {name} yet: set its base content first"
                    )
                version = await self._version_after_removal(service, name)
                document = first_document(
                    service, name, content, now, change or "set", version=version
                )
            else:
                document = current.document.with_content(
                    content, now, host=host, selector=selector, change=change
                )
            try:
                revision = await self.put(document, current.kv_revision if current else None)
            except RolloutConflict:
                continue
            return StoredConfig(document, revision)
        raise RolloutConflict(f"config {service}/{name} kept changing; gave up after retries")

    async def _version_after_removal(self, service: str, name: str) -> int:
        """1 for a new file; for one removed before, the version after its last one, so
        a version number never names two contents."""
        kept = await self._kept(config_key(service, name)) or []
        return max((stored.document.version for stored in kept), default=0) + 1

    async def remove(
        self,
        service: str,
        name: str,
        now: datetime,
        *,
        host: str | None = None,
        selector: dict[str, str] | None = None,
    ) -> StoredConfig | None:
        """Remove one override (the next version, returned) or the whole file (None).

        Agents remove a deleted file from disk and reload, as for any change; the kept
        versions stay readable in ``config history``.
        """
        for _ in range(CAS_ATTEMPTS):
            current = await self.require(service, name)
            if host is None and not selector:
                key = config_key(service, name)
                try:
                    await asyncio.wait_for(
                        self._kv.delete(key, last=current.kv_revision), KV_TIMEOUT
                    )
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
                except (nats.errors.Error, TimeoutError) as exc:
                    raise BrokerError(f"KV delete of config {key} failed: {exc!r}") from exc
                return None
            document = current.document.without_override(now, host=host, selector=selector)
            if document is None:
                raise NotFound(f"{service}/{name} has no override for {scope_text(host, selector)}")
            try:
                revision = await self.put(document, current.kv_revision)
            except RolloutConflict:
                continue
            return StoredConfig(document, revision)
        raise RolloutConflict(f"config {service}/{name} kept changing; gave up after retries")

    async def publish(self, target: ConfigTarget) -> None:
        """Store a completed config rollout's version; nothing if it is stored already."""
        document = target.document
        for _ in range(CAS_ATTEMPTS):
            current = await self.get(document.service, document.name)
            if (
                current is not None
                and current.document.version >= document.version
                and current.document.content == document.content
            ):
                return  # a repeat after a crash
            last = current.kv_revision if current else None
            if last != target.base_revision and current is not None:
                # Changed during the rollout (only by hand, bypassing fleetctl): go on top.
                document = document.model_copy(update={"version": current.document.version + 1})
            try:
                await self.put(document, last)
            except RolloutConflict:
                continue
            return
        raise RolloutConflict(f"config {document.service}/{document.name} kept changing")

    async def all(self, service: str | None = None) -> list[StoredConfig]:
        found = []
        for key in await kv_keys(self._kv, ""):
            owner, name = parse_config_key(key)
            if service is not None and owner != service:
                continue
            stored = await self.get(owner, name)
            if stored is not None:
                found.append(stored)
        return found

    async def history(self, service: str, name: str) -> list[StoredConfig]:
        """Every kept version, oldest first (the bucket keeps the last 64)."""
        kept = await self._kept(config_key(service, name))
        if kept is None:
            raise NotFound(f"{service} has no config file {name}")
        return kept

    async def _kept(self, key: str) -> list[StoredConfig] | None:
        """The readable versions of ``key``, oldest first; None if it never had any entry
        (a removed file still has its versions and its delete marker)."""
        try:
            entries = await asyncio.wait_for(self._entries(key), KV_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BrokerError(f"KV history of config {key} failed: {exc!r}") from exc
        if not entries:
            return None
        kept = []
        for entry in entries:
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                continue
            try:
                kept.append(StoredConfig(decode_document(entry.value), entry.revision or 0))
            except ProtocolError:
                continue  # an unreadable old version is skipped, not fatal to the listing
        return kept

    async def _entries(self, key: str) -> list[KeyValue.Entry]:
        """Every kept entry of ``key``, counted first from the bucket's stream.

        nats-py's ``kv.history()`` stops at the watcher's end-of-history marker, which
        may arrive before entries already on their way; the count makes that harmless.
        """
        kv = self._kv
        subject = f"{kv._pre}{key}"
        info = await kv._js.stream_info(kv._stream, subjects_filter=subject)
        expected = (info.state.subjects or {}).get(subject, 0)
        if expected == 0:
            return []
        watcher = await kv.watch(key, include_history=True)
        entries: list[KeyValue.Entry] = []
        try:
            while len(entries) < expected:
                entry = await watcher.updates(timeout=KV_TIMEOUT)  # type: ignore[no-untyped-call]
                if entry is not None:
                    entries.append(entry)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return entries

    async def version(self, service: str, name: str, version: int) -> ConfigDocument:
        history = await self.history(service, name)
        for stored in history:
            if stored.document.version == version:
                return stored.document
        kept = ", ".join(str(s.document.version) for s in history)
        raise NotFound(f"{service}/{name} keeps no version {version} (kept: {kept})")
