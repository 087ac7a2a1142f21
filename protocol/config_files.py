"""Versioned config files of a service, as stored in KV ``fleet_config``: one key per file.

The key is ``<service>.<file name>``; its value is a :class:`ConfigDocument`, the file's
base content plus any per-host or per-label overrides. Every change (base or override)
writes a new document with the next ``version``, so the bucket's history is the file's
history. Agents watch ``<service>.>`` and resolve the content meant for their host.

Values are JSON (bytes as base64), readable with ``nats kv get``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Self

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from protocol.base import FrozenModel, HostId, ServiceName
from protocol.errors import InvalidMessage, InvalidSubject, MalformedPayload, PayloadTooLarge

KiB = 1024
MAX_CONFIG_FILE = 256 * KiB
"""One file's content, base or override."""
MAX_CONFIG_DOCUMENT = 768 * KiB
"""A file's encoded document: its base content and every override (NATS refuses 1 MiB)."""
CONFIG_HISTORY = 64
"""Versions of each file the bucket keeps (JetStream KV's maximum)."""


CONFIG_NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
ConfigName = Annotated[str, StringConstraints(pattern=CONFIG_NAME_PATTERN, max_length=128)]
"""A plain file name (``app.conf``): no directories, and a valid part of a KV key."""
Sha256 = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Base64Model(FrozenModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


class ConfigContent(_Base64Model):
    """Bytes and their hash; the hash is checked on every decode and after every write."""

    data: Annotated[bytes, Field(max_length=MAX_CONFIG_FILE)]
    sha256: Sha256

    @classmethod
    def of(cls, data: bytes) -> ConfigContent:
        return cls(data=data, sha256=content_hash(data))

    @model_validator(mode="after")
    def _hash_matches(self) -> Self:
        if content_hash(self.data) != self.sha256:
            raise ValueError(f"content does not match its hash {self.sha256}")
        return self


class ConfigOverride(_Base64Model):
    """The content one host, or every host with some labels, gets instead of the base."""

    host: HostId | None = None
    selector: dict[str, str] | None = None
    content: ConfigContent

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if (self.host is None) == (not self.selector):
            raise ValueError("an override names either one host or a non-empty selector")
        return self

    def applies_to(self, host: str, labels: dict[str, str]) -> bool:
        if self.host is not None:
            return self.host == host
        return all(labels.get(key) == value for key, value in (self.selector or {}).items())

    def describe(self) -> str:
        return scope_text(self.host, self.selector)


def scope_text(host: str | None, selector: dict[str, str] | None) -> str:
    """An override's scope as the CLI takes it: ``host=H`` or ``k=v,k2=v2``."""
    if host is not None:
        return f"host={host}"
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))


class ConfigDocument(_Base64Model):
    service: ServiceName
    name: ConfigName
    version: Annotated[int, Field(ge=1)]
    content: ConfigContent
    overrides: tuple[ConfigOverride, ...] = ()
    """A host override wins over selector overrides; of those, the last set wins."""
    changed_at: AwareDatetime
    change: Annotated[str, Field(max_length=512)] = ""
    """What this version changed, for ``fleetctl config history``."""

    def for_host(self, host: str, labels: dict[str, str]) -> ConfigContent:
        """The content meant for ``host`` with ``labels``."""
        for override in self.overrides:
            if override.host == host:
                return override.content
        for override in reversed(self.overrides):
            if override.selector and override.applies_to(host, labels):
                return override.content
        return self.content

    def with_content(
        self,
        content: ConfigContent,
        now: datetime,
        *,
        host: str | None = None,
        selector: dict[str, str] | None = None,
        change: str = "",
    ) -> ConfigDocument:
        """The next version: new base content, or one override added or replaced."""
        if host is None and not selector:
            return self.model_copy(
                update={
                    "version": self.version + 1,
                    "content": content,
                    "changed_at": now,
                    "change": change or "set",
                }
            )
        override = ConfigOverride(host=host, selector=selector or None, content=content)
        kept = tuple(
            o for o in self.overrides if (o.host, o.selector) != (override.host, override.selector)
        )
        return self.model_copy(
            update={
                "version": self.version + 1,
                "overrides": (*kept, override),
                "changed_at": now,
                "change": change or f"set for {override.describe()}",
            }
        )

    def without_override(
        self, now: datetime, *, host: str | None = None, selector: dict[str, str] | None = None
    ) -> ConfigDocument | None:
        """The next version with the override of exactly this scope gone; None if none."""
        scope = (host, selector or None)
        kept = tuple(o for o in self.overrides if (o.host, o.selector) != scope)
        if len(kept) == len(self.overrides):
            return None
        gone = next(o for o in self.overrides if (o.host, o.selector) == scope)
        return self.model_copy(
            update={
                "version": self.version + 1,
                "overrides": kept,
                "changed_at": now,
                "change": f"removed override for {gone.describe()}",
            }
        )


def first_document(
    service: str,
    name: str,
    content: ConfigContent,
    now: datetime,
    change: str = "set",
    version: int = 1,
) -> ConfigDocument:
    """A file's first document; ``version`` goes on from the last one of a removed file."""
    return ConfigDocument(
        service=service, name=name, version=version, content=content, changed_at=now, change=change
    )


def config_key(service: str, name: str) -> str:
    return f"{service}.{name}"


def service_config_keys(service: str) -> str:
    """The KV key filter of every file of ``service``."""
    return f"{service}.>"


def parse_config_key(key: str) -> tuple[str, str]:
    """(service, file name) of a ``fleet_config`` key."""
    service, dot, name = key.partition(".")
    if not dot or not service or not name:
        raise InvalidSubject(f"{key!r} is not a config key (<service>.<file name>)")
    return service, name


def encode_document(document: ConfigDocument) -> bytes:
    data = document.model_dump_json().encode()
    if len(data) > MAX_CONFIG_DOCUMENT:
        raise PayloadTooLarge(
            f"config {document.service}/{document.name} would take {len(data)} bytes with its "
            f"overrides, more than {MAX_CONFIG_DOCUMENT}: use fewer or smaller overrides"
        )
    return data


def decode_document(data: bytes) -> ConfigDocument:
    if len(data) > MAX_CONFIG_DOCUMENT * 2:
        raise PayloadTooLarge(f"config document of {len(data)} bytes")
    try:
        return ConfigDocument.model_validate_json(data)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise MalformedPayload(
                f"config document is not JSON: {exc.errors()[0]['msg']}"
            ) from exc
        raise InvalidMessage(f"config document is invalid: {exc.errors()[0]['msg']}") from exc
