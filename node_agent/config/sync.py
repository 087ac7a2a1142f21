"""Config files from KV ``fleet_config`` to the host, before a service's container starts.

Like an init container: Apply, Rollback and Stage call :meth:`ConfigSync.sync_for_start`
first, which writes every file of the service (as resolved for this host) into its
directory and checks each hash; only then is the container created, with that directory
mounted read-only. Prepare reports a missing or unreadable file as a not-ready reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from node_agent.config.files import Applied, AppliedConfigs, ConfigDir, ConfigFault
from node_agent.settings import AgentSettings
from protocol.config_files import (
    ConfigContent,
    ConfigDocument,
    decode_document,
    parse_config_key,
    service_config_keys,
)
from protocol.errors import CommandRefused, ProtocolError
from protocol.jetstream_start import failover_retries
from protocol.models import Reason
from protocol.spec import ServiceSpec, VolumeMount

log = logging.getLogger("fleet-agent.config")
KV_TIMEOUT = 5.0


@dataclass(frozen=True)
class StoredFile:
    """One file's document as the bucket holds it, at ``kv_revision``."""

    document: ConfigDocument
    kv_revision: int


class ConfigSync:
    def __init__(self, settings: Callable[[], AgentSettings], applied: AppliedConfigs) -> None:
        self._settings = settings
        self.applied = applied
        self.kv: KeyValue | None = None
        """Set once NATS is connected; until then no config can be read."""

    def directory(self, spec: ServiceSpec) -> ConfigDir:
        settings = self._settings()
        mount = spec.config
        if mount is not None and mount.host_dir is not None:
            return ConfigDir(Path(mount.host_dir))
        base = settings.state_dir.resolve() / "config"
        return ConfigDir(base / settings.container_name(spec.name))

    def mounted(self, spec: ServiceSpec) -> ServiceSpec:
        """The spec a container is created from: the config directory mounted read-only."""
        if spec.config is None:
            return spec
        mount = VolumeMount(
            kind="bind",
            source=str(self.directory(spec).path),
            target=spec.config.target,
            read_only=True,
        )
        volumes = tuple(v for v in spec.container.volumes if v.target != mount.target)
        container = spec.container.model_copy(update={"volumes": (*volumes, mount)})
        return spec.model_copy(update={"container": container})

    def content_for_host(self, document: ConfigDocument) -> ConfigContent:
        settings = self._settings()
        return document.for_host(settings.host_id, settings.labels)

    # ---- reading the bucket ----

    async def stored(self, service: str) -> dict[str, StoredFile]:
        """Every file of ``service`` in the bucket, by name; ConfigFault if unreadable.

        The keys come from the bucket's stream (its subjects), not from a KV watcher,
        whose end-of-history marker may arrive before the values already on their way.
        """
        kv = self.kv
        if kv is None:
            raise ConfigFault("config_unavailable", "not connected to NATS yet")
        try:
            # A bucket whose leader was lost answers again once its cluster elected
            # another (seconds): the update waits for that rather than fail the host.
            async for attempt in failover_retries():
                with attempt:
                    return await self._read_files(kv, service)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ConfigFault("config_unavailable", f"cannot read fleet_config: {exc!r}") from exc
        except ProtocolError as exc:
            raise ConfigFault("config_unreadable", f"config of {service}: {exc.message}") from exc
        raise AssertionError("unreachable: the retries return or raise")  # pragma: no cover

    @staticmethod
    async def _read_files(kv: KeyValue, service: str) -> dict[str, StoredFile]:
        files: dict[str, StoredFile] = {}
        info = await asyncio.wait_for(
            kv._js.stream_info(
                kv._stream, subjects_filter=f"{kv._pre}{service_config_keys(service)}"
            ),
            KV_TIMEOUT,
        )
        for subject in info.state.subjects or {}:
            key = subject.removeprefix(kv._pre)
            try:
                entry = await asyncio.wait_for(kv.get(key), KV_TIMEOUT)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            _, name = parse_config_key(key)
            files[name] = StoredFile(decode_document(entry.value or b""), entry.revision or 0)
        return files

    # ---- prepare and start ----

    async def prepare_reasons(self, spec: ServiceSpec) -> list[Reason]:
        if spec.config is None:
            return []
        try:
            files = await self.stored(spec.name)
        except ConfigFault as exc:
            return [Reason(code=exc.code, text=exc.message)]
        reasons = [
            Reason(code="config_missing", text=f"{spec.name} needs config file {name}: not set")
            for name in spec.config.files
            if name not in files
        ]
        problem = self.directory(spec).writable()
        if problem is not None:
            reasons.append(Reason(code="config_unwritable", text=problem))
        return reasons

    async def files_for_start(self, spec: ServiceSpec) -> dict[str, StoredFile]:
        """The service's files as the bucket has them, read before anything is touched.
        A bucket that cannot be read refuses the command, which is not recorded: the
        controller sends it again later, and then it runs."""
        if spec.config is None:
            return {}
        try:
            return await self.stored(spec.name)
        except ConfigFault as exc:
            if exc.code == "config_unavailable":
                raise CommandRefused(exc.code, exc.message) from exc
            raise

    async def sync_for_start(self, spec: ServiceSpec, files: dict[str, StoredFile]) -> ServiceSpec:
        """Write the service's ``files`` (from files_for_start), verified; return the spec
        to create the container from."""
        if spec.config is None:
            return spec
        directory = self.directory(spec)
        problem = directory.writable()
        if problem is not None:
            raise ConfigFault("config_unwritable", problem)
        for name, stored in files.items():
            applied = self.applied.get(spec.name, name)
            on_disk = directory.sha256(name)
            if (
                applied is not None
                and applied.rejected
                and applied.kv_revision == stored.kv_revision
                and on_disk is not None
            ):
                continue  # this host proved that revision bad: keep the file it restored
            content = self.content_for_host(stored.document)
            if on_disk != content.sha256:
                directory.write(name, content.data, content.sha256)
                log.info("%s: wrote %s version %d", spec.name, name, stored.document.version)
            self.applied.put(
                spec.name,
                name,
                Applied(stored.document.version, content.sha256, stored.kv_revision),
            )
        missing = [name for name in spec.config.files if directory.read(name) is None]
        if missing:
            raise ConfigFault(
                "config_missing", f"{spec.name} needs config file(s) {', '.join(missing)}"
            )
        return self.mounted(spec)
