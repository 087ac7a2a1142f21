"""How a rollout record is written into KV ``fleet_rollouts``, in parts.

A rollout in progress is kept as three kinds of entries, so that a pass of the leader
writes what changed rather than the whole fleet (a 5,000-host record is 1.9 MB of JSON):

- ``rollout.<id>``, the header: every field but the hosts' progress, and the names of the
  hosts its write changed, as JSON after the ``parts:`` marker (``apart:``: an older
  header without the names). Small; each change is a compare-and-set on its revision,
  the guard between the leader and fleetctl's verbs. The changed hosts' entries are
  written after it, so each has a higher revision: a reader tells by the revisions
  whether all of them have landed.
- ``base.<id>``: the hosts as the rollout began, written once.
- ``host.<id>.<host>``: one host's progress since, written when it changes.

A finished rollout is written whole into its header again (JSON, compressed once a
large fleet makes it big), and its parts are purged: history reads one entry per rollout.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from controller.errors import ControllerError
from controller.rollouts.model import HostRecord, RolloutRecord

COMPRESS_ABOVE = 256 * 1024
"""A record larger than this (about 700 hosts) is stored zlib-compressed, so a
5000-host record (1.9 MB of JSON) stays far below NATS's 1 MiB message limit."""
COMPRESSED = b"zlib:"
APART = b"apart:"
PARTS = b"parts:"
HOSTS = TypeAdapter(dict[str, HostRecord])


def header_key(rollout_id: str) -> str:
    return f"rollout.{rollout_id}"


def base_key(rollout_id: str) -> str:
    return f"base.{rollout_id}"


def hosts_prefix(rollout_id: str) -> str:
    return f"host.{rollout_id}."


def host_key(rollout_id: str, host: str) -> str:
    return f"{hosts_prefix(rollout_id)}{host}"


@dataclass(frozen=True)
class Header:
    record: RolloutRecord
    """The whole record, or (``apart``) all of it but its hosts, which are empty here."""
    apart: bool
    changed: frozenset[str] = frozenset()
    """The hosts whose entries this header's write changed (written after it)."""


class _PartsBody(BaseModel):
    model_config = ConfigDict(frozen=True)

    changed: list[str]
    record: RolloutRecord


def _packed(data: bytes) -> bytes:
    return COMPRESSED + zlib.compress(data, 1) if len(data) > COMPRESS_ABOVE else data


def _unpacked(data: bytes) -> bytes:
    if data.startswith(COMPRESSED):
        return zlib.decompress(data[len(COMPRESSED) :])
    return data


def _unreadable(what: str, exc: Exception) -> ControllerError:
    return ControllerError(f"{what} in KV cannot be read: {str(exc).splitlines()[0]}")


def encode_record(record: RolloutRecord) -> bytes:
    """The whole record: JSON, readable with `nats kv get`; compressed once large."""
    return _packed(record.model_dump_json().encode())


def encode_header(record: RolloutRecord, changed: Iterable[str] = ()) -> bytes:
    body = _PartsBody(changed=sorted(changed), record=record.model_copy(update={"hosts": {}}))
    return PARTS + _packed(body.model_dump_json().encode())


def decode_header(data: bytes) -> Header:
    """A header entry: a rollout in progress (``apart``) or a whole, finished one."""
    try:
        if data.startswith(PARTS):
            body = _PartsBody.model_validate_json(_unpacked(data[len(PARTS) :]))
            return Header(body.record, apart=True, changed=frozenset(body.changed))
        apart = data.startswith(APART)
        record = RolloutRecord.model_validate_json(_unpacked(data[len(APART) :] if apart else data))
        return Header(record, apart)
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
        return HOSTS.validate_json(_unpacked(data))
    except (zlib.error, ValidationError) as exc:
        raise _unreadable("a rollout's hosts", exc) from exc


def encode_host(record: HostRecord) -> bytes:
    return record.model_dump_json().encode()


def decode_host(data: bytes) -> HostRecord:
    try:
        return HostRecord.model_validate_json(data)
    except ValidationError as exc:
        raise _unreadable("a rollout host's progress", exc) from exc
