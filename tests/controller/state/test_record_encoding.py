"""Rollout records in KV: JSON while small, compressed once a large fleet makes them big."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.errors import ControllerError
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord
from controller.state.rollout_encoding import COMPRESSED, decode_record, encode_record
from tests.support.records import web_rollout

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def record(hosts: int) -> RolloutRecord:
    updating = {
        f"host-{i:05d}": HostRecord(phase=HostPhase.UPDATING, since=NOW, command_id=f"{i:032x}")
        for i in range(hosts)
    }
    return web_rollout(updating, NOW)


def test_a_small_record_is_plain_json_and_reads_back_equal() -> None:
    small = record(10)
    data = encode_record(small)
    assert data.startswith(b"{")
    assert decode_record(data) == small


def test_a_five_thousand_host_record_fits_in_one_nats_message_and_reads_back_equal() -> None:
    large = record(5000)
    data = encode_record(large)
    assert data.startswith(COMPRESSED)
    assert len(data) < 1024 * 1024
    assert decode_record(data) == large


@pytest.mark.parametrize("data", [b"\x00garbage", b"zlib:not zlib", b'{"id": 1}', b""])
def test_an_unreadable_record_is_a_typed_controller_error(data: bytes) -> None:
    with pytest.raises(ControllerError, match="cannot be read"):
        decode_record(data)
