"""How a rollout record is written into KV ``fleet_rollouts``, in parts.

A rollout in progress is kept as three kinds of entries, so that a pass of the leader
writes what changed rather than the whole fleet (a 5,000-host record is 1.9 MB of JSON):

- ``rollout.<id>``, the header: every field but the hosts' progress, and the names of
  the entries that hold them (a base, and the changes written since, in order), as JSON
  after the ``log:`` marker.
  Small; each change is a compare-and-set on its revision, the guard between the leader
  and fleetctl's verbs.
- ``base.<id>``: the hosts as the rollout began; ``base.<id>.<n>``: all of them as a
  later write found them, once the changes since the base grew about as large.
- ``hosts.<id>.<n>``: the hosts one write changed.

Every part is written before the header that names it, so the header is the moment a
write takes effect: a reader never finds a header without its parts, and a writer that
fails before its header leaves only an entry no header names (purged with the next base).
One entry per write, not per host: a wave of a large fleet changes a thousand hosts in a
pass, and a thousand small writes cost a pass many times what one does.

A finished rollout is written whole into its header again (JSON, compressed once a
large fleet makes it big), and its parts are purged: history reads one entry per rollout.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from controller.errors import ControllerError
from controller.rollouts.model import HostRecord, RolloutRecord

COMPRESS_ABOVE = 256 * 1024
"""A record larger than this (about 700 hosts) is stored zlib-compressed, so a
5000-host record (1.9 MB of JSON) stays far below NATS's 1 MiB message limit."""
COMPRESSED = b"zlib:"
LOGGED = b"log:"
HOSTS = TypeAdapter(dict[str, HostRecord])


def header_key(rollout_id: str) -> str:
    return f"rollout.{rollout_id}"


def base_key(rollout_id: str, base: str | None = None) -> str:
    """The base named ``base`` (None: the hosts as the rollout began)."""
    return f"base.{rollout_id}" if base is None else f"base.{rollout_id}.{base}"


def changes_prefix(rollout_id: str) -> str:
    return f"hosts.{rollout_id}."


def changes_key(rollout_id: str, name: str) -> str:
    return f"{changes_prefix(rollout_id)}{name}"


@dataclass(frozen=True)
class Parts:
    """The entries that hold a rollout's hosts: its base, then each change in order."""

    base: str | None = None
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Header:
    record: RolloutRecord
    """The whole record, or (``apart``) all of it but its hosts, which are empty here."""
    apart: bool
    parts: Parts = field(default_factory=Parts)


class _LoggedBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    base: str | None
    changes: list[str]
    record: RolloutRecord


def _packed(data: bytes) -> bytes:
    return COMPRESSED + zlib.compress(data, 1) if len(data) > COMPRESS_ABOVE else data


def unpacked(data: bytes) -> bytes:
    """An entry's JSON, decompressed where it was stored compressed."""
    if data.startswith(COMPRESSED):
        return zlib.decompress(data[len(COMPRESSED) :])
    return data


def _unreadable(what: str, exc: Exception) -> ControllerError:
    return ControllerError(f"{what} in KV cannot be read: {str(exc).splitlines()[0]}")


def encode_record(record: RolloutRecord) -> bytes:
    """The whole record: JSON, readable with `nats kv get`; compressed once large."""
    return _packed(record.model_dump_json().encode())


def encode_header(record: RolloutRecord, parts: Parts) -> bytes:
    body = _LoggedBody(
        base=parts.base, changes=list(parts.changes), record=record.model_copy(update={"hosts": {}})
    )
    return LOGGED + _packed(body.model_dump_json().encode())


def decode_header(data: bytes) -> Header:
    """A header entry: a rollout in progress (``apart``) or a whole, finished one."""
    try:
        if data.startswith(LOGGED):
            body = _LoggedBody.model_validate_json(unpacked(data[len(LOGGED) :]))
            return Header(body.record, apart=True, parts=Parts(body.base, tuple(body.changes)))
        return Header(RolloutRecord.model_validate_json(unpacked(data)), apart=False)
    except (zlib.error, ValueError) as exc:
        raise _unreadable("a rollout record", exc) from exc


def decode_record(data: bytes) -> RolloutRecord:
    """A whole record (as a finished rollout's header holds it)."""
    header = decode_header(data)
    if header.apart:
        raise ControllerError("a rollout record in KV cannot be read: its hosts are apart")
    return header.record


def encode_hosts(hosts: dict[str, HostRecord]) -> bytes:
    return _packed(HOSTS.dump_json(hosts))


def decode_hosts(data: bytes) -> dict[str, HostRecord]:
    try:
        return HOSTS.validate_json(unpacked(data))
    except (zlib.error, ValidationError) as exc:
        raise _unreadable("a rollout's hosts", exc) from exc
