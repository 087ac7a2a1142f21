"""msgpack encoding of protocol messages.

``decode`` never trusts its input: whatever the bytes, it returns a valid message or
raises one subclass of ProtocolError that says what was wrong. The checks run cheapest
first (size, msgpack, shape, version, kind) so garbage is rejected before validation.
"""

from __future__ import annotations

from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError

from protocol import SCHEMA_VERSION
from protocol.errors import (
    InvalidMessage,
    MalformedPayload,
    PayloadTooLarge,
    UnknownKind,
    UnsupportedSchemaVersion,
    summarise_invalid,
)
from protocol.models import MESSAGE_ADAPTER, MESSAGE_KINDS, AnyMessage

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""1 MiB, the default max_payload of nats-server."""


def encode(message: BaseModel, *, max_size: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """Serialise a message; refuse one the receiver would refuse as too large."""
    data: bytes = msgpack.packb(message.model_dump(mode="python"), datetime=True)
    if len(data) > max_size:
        raise PayloadTooLarge(
            f"{type(message).__name__} encodes to {len(data)} bytes, over the limit of {max_size}"
        )
    return data


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_PAYLOAD) -> AnyMessage:
    """Parse and validate one message from untrusted bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedPayload(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise PayloadTooLarge(f"payload of {len(data)} bytes is over the limit of {max_size}")
    raw = _unpack(bytes(data))
    if not isinstance(raw, dict):
        raise MalformedPayload(f"a message is a msgpack map, got {type(raw).__name__}")
    _check_version(raw.get("schema_version"))
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in MESSAGE_KINDS:
        raise UnknownKind(f"unknown message kind {_shorten(kind)}")
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {kind} message: {summarise_invalid(exc)}") from exc


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, timestamp=3, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise MalformedPayload("trailing bytes after the message") from exc
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        # msgpack reports truncation, bad utf-8, bad extension types and unhashable or
        # non-string map keys through these; all mean the bytes are not a message.
        raise MalformedPayload(f"not a msgpack message: {exc}") from exc


def _check_version(version: object) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        raise UnsupportedSchemaVersion(
            f"schema_version must be an integer, got {_shorten(version)}"
        )
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            f"schema_version {version} is newer than this peer understands ({SCHEMA_VERSION}); "
            "upgrade it"
        )
    if version < 1:
        raise UnsupportedSchemaVersion(f"schema_version {version} does not exist")


def _shorten(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
