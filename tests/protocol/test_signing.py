"""Signed commands: what verifies, and the reason for each thing that does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocol.codec import decode, encode
from protocol.errors import ConfigurationError
from protocol.models import InspectCommand, RollbackCommand
from protocol.signing import CommandRejected, CommandSigner, CommandVerifier, generate_key

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def command(**changes: object) -> RollbackCommand:
    fields: dict[str, object] = {
        "sender": "controller",
        "host": "h1",
        "expires_at": NOW + timedelta(minutes=5),
        "service": "web",
        **changes,
    }
    return RollbackCommand(**fields)


def rejection(verifier: CommandVerifier, signed: RollbackCommand) -> str:
    with pytest.raises(CommandRejected) as caught:
        verifier.verify(signed)
    return caught.value.code


def test_a_signed_command_verifies_after_its_trip_over_the_wire() -> None:
    private, public = generate_key()
    signed = CommandSigner(private).sign(command())
    received = decode(encode(signed))
    assert isinstance(received, RollbackCommand)
    CommandVerifier((public,)).verify(received)


def test_each_kind_of_bad_command_is_refused_with_its_own_reason() -> None:
    private, public = generate_key()
    other_private, _ = generate_key()
    verifier = CommandVerifier((public,))
    signed = CommandSigner(private).sign(command())

    assert rejection(verifier, command()) == "unsigned"
    assert rejection(verifier, CommandSigner(other_private).sign(command())) == "unknown_key"
    for field, value in (
        ("service", "db"),
        ("host", "h2"),
        ("expires_at", NOW + timedelta(days=1)),
        ("id", "another-id"),
        ("force", True),
    ):
        tampered = signed.model_copy(update={field: value})
        assert rejection(verifier, tampered) == "bad_signature", field
    flipped = bytearray(signed.signature or b"")
    flipped[0] ^= 1
    assert rejection(verifier, signed.model_copy(update={"signature": bytes(flipped)})) == (
        "bad_signature"
    )


def test_an_agent_trusting_two_keys_accepts_both_during_a_rotation() -> None:
    old_private, old_public = generate_key()
    new_private, new_public = generate_key()
    verifier = CommandVerifier((old_public, new_public))
    for private in (old_private, new_private):
        verifier.verify(CommandSigner(private).sign(command()))
    assert len(verifier.key_ids) == 2


def test_the_same_command_signed_again_later_gets_a_new_signature() -> None:
    private, _ = generate_key()
    signer = CommandSigner(private)
    first = signer.sign(
        InspectCommand(sender="controller", host="h1", expires_at=NOW, service="web")
    )
    again = signer.sign(first.model_copy(update={"sent_at": first.sent_at + timedelta(seconds=1)}))
    assert first.id == again.id
    assert first.signature != again.signature


def test_keys_that_are_not_ed25519_base64_are_refused_and_never_printed() -> None:
    private, _ = generate_key()
    with pytest.raises(ConfigurationError, match="not base64"):
        CommandVerifier(("not a key!",))
    with pytest.raises(ConfigurationError, match="32 bytes"):
        CommandSigner("c2hvcnQ=")
    signer = CommandSigner(private)
    assert private not in repr(signer)
    assert private not in str(vars(signer))
