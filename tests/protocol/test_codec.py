from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import SCHEMA_VERSION
from protocol.codec import decode, encode
from protocol.errors import (
    InvalidMessage,
    MalformedPayload,
    PayloadTooLarge,
    ProtocolError,
    UnknownKind,
    UnsupportedSchemaVersion,
)
from protocol.models import MESSAGE_KINDS, InspectCommand, LogBatch, LogEntry
from tests.support.strategies import MESSAGE_STRATEGIES, any_message

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def inspect_command() -> InspectCommand:
    return InspectCommand(
        sender="controller", host="web-1", service="web", expires_at=NOW + timedelta(seconds=30)
    )


def raw(message: Any) -> dict[str, Any]:
    unpacked: dict[str, Any] = msgpack.unpackb(encode(message), timestamp=3)
    return unpacked


def test_every_message_kind_has_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == MESSAGE_KINDS


@pytest.mark.parametrize("kind", sorted(MESSAGE_KINDS))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_kind_round_trips_through_the_codec_unchanged(kind: str, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES[kind])
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_protocol_errors(data: bytes) -> None:
    try:
        decoded = decode(data)
    except ProtocolError as exc:
        # Most random bytes fail, some decode; either way only our typed errors may escape.
        assert exc.code != ProtocolError.code, "a specific subclass, not the base"  # noqa: PT017
        return
    assert decoded.kind in MESSAGE_KINDS


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message=any_message, edits=st.data())
def test_byte_mutations_of_valid_payloads_raise_protocol_errors_or_decode(
    message: Any, edits: st.DataObject
) -> None:
    payload = bytearray(encode(message))
    for _ in range(edits.draw(st.integers(min_value=1, max_value=4))):
        position = edits.draw(st.integers(min_value=0, max_value=len(payload)))
        action = edits.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(payload):
            payload[position] ^= edits.draw(st.integers(min_value=1, max_value=255))
        elif action == "insert":
            payload[position:position] = edits.draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and position < len(payload):
            del payload[position]
        elif action == "truncate":
            del payload[position:]
    try:
        decoded = decode(bytes(payload))
    except ProtocolError:
        return
    assert decoded.kind in MESSAGE_KINDS


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message=any_message, data=st.data())
def test_field_replacements_in_valid_payloads_raise_protocol_errors_or_decode(
    message: Any, data: st.DataObject
) -> None:
    fields = raw(message)
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(msgpack_values)
    try:
        decoded = decode(msgpack.packb(fields, datetime=True))
    except ProtocolError:
        return
    assert decoded.kind in MESSAGE_KINDS


def test_a_newer_schema_version_is_refused_with_its_own_error() -> None:
    fields = raw(inspect_command()) | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(UnsupportedSchemaVersion, match="newer than this peer"):
        decode(msgpack.packb(fields, datetime=True))


@pytest.mark.parametrize("version", [0, -3, "1", None, True, 1.0])
def test_a_missing_or_mistyped_schema_version_is_refused(version: object) -> None:
    fields = raw(inspect_command()) | {"schema_version": version}
    with pytest.raises(UnsupportedSchemaVersion):
        decode(msgpack.packb(fields, datetime=True))


def test_an_unknown_kind_is_named_in_the_error() -> None:
    fields = raw(inspect_command()) | {"kind": "reboot_everything"}
    with pytest.raises(UnknownKind, match="reboot_everything"):
        decode(msgpack.packb(fields, datetime=True))


def test_an_unknown_field_is_refused_rather_than_ignored() -> None:
    fields = raw(inspect_command()) | {"run_as_root": True}
    with pytest.raises(InvalidMessage, match="run_as_root"):
        decode(msgpack.packb(fields, datetime=True))


def test_a_wrong_field_type_says_which_field() -> None:
    fields = raw(inspect_command()) | {"expires_at": {"not": "a time"}}
    with pytest.raises(InvalidMessage, match="expires_at"):
        decode(msgpack.packb(fields, datetime=True))


def test_an_invalid_host_id_in_a_command_is_refused() -> None:
    fields = raw(inspect_command()) | {"host": "web.1 > everything"}
    with pytest.raises(InvalidMessage, match="host"):
        decode(msgpack.packb(fields, datetime=True))


def test_an_invalid_image_reference_in_a_spec_is_refused() -> None:
    fields = raw(inspect_command()) | {
        "kind": "prepare",
        "service": {"name": "web", "image": "Demo/Web:1.0"},
    }
    with pytest.raises(InvalidMessage, match="image"):
        decode(msgpack.packb(fields, datetime=True))


def test_an_oversize_payload_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 100"):
        decode(b"\x80" * 101, max_size=100)


def test_encoding_a_message_over_the_limit_fails_at_the_sender() -> None:
    line = LogBatch(
        sender="web-1",
        host="web-1",
        service="web",
        container_id="c1",
        lines=(LogEntry(stream="stdout", timestamp=NOW, line="x" * 16_000),) * 4,
    )
    with pytest.raises(PayloadTooLarge, match="LogBatch encodes to"):
        encode(line, max_size=50_000)


def test_truncated_payloads_are_malformed() -> None:
    payload = encode(inspect_command())
    for cut in range(1, len(payload)):
        with pytest.raises(ProtocolError):
            decode(payload[:cut])


def test_trailing_bytes_after_a_message_are_malformed() -> None:
    with pytest.raises(MalformedPayload, match="trailing"):
        decode(encode(inspect_command()) + b"\x00")


@pytest.mark.parametrize("payload", [msgpack.packb([1, 2]), msgpack.packb("hi"), b""])
def test_a_payload_that_is_not_a_map_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedPayload):
        decode(payload)


def test_non_bytes_input_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="expected bytes"):
        decode("a string")  # type: ignore[arg-type]


def test_protocol_errors_carry_a_stable_machine_readable_code() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(b"\xc1")
    assert caught.value.code == "malformed_payload"
