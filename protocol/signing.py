"""Signed commands: the controller signs every command envelope, agents verify it (Ed25519).

The signature covers the command's canonical bytes: the msgpack of every field except
``signature`` itself, so changing any field (host, expiry, image, the id) breaks it.
``key_id`` names the signing key (the first 16 hex digits of the sha256 of its public
key), so an agent tells "signed by a key I do not trust" from "tampered with", and can
trust several keys at once while keys are rotated.

Keys are 32-byte Ed25519 seeds and public keys, written as base64 text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TypeVar

import msgpack
import nacl.exceptions
import nacl.signing

from protocol.errors import ConfigurationError, FleetError
from protocol.models import Command

C = TypeVar("C", bound=Command)


class CommandRejected(FleetError):
    """A command that fails verification; ``code`` says why (for the error reply and event)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def canonical_bytes(command: Command) -> bytes:
    fields = command.model_dump(mode="python", exclude={"signature"})
    data: bytes = msgpack.packb(fields, datetime=True)
    return data


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def _decode_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{what} is not base64") from exc
    if len(raw) != 32:
        raise ConfigurationError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def generate_key() -> tuple[str, str]:
    """A new key pair as base64 text: (private seed, public key)."""
    signing = nacl.signing.SigningKey.generate()
    return (
        base64.b64encode(bytes(signing)).decode(),
        base64.b64encode(bytes(signing.verify_key)).decode(),
    )


class CommandSigner:
    def __init__(self, private_key: str) -> None:
        self._key = nacl.signing.SigningKey(_decode_key(private_key, "the signing key"))
        self.public_key = base64.b64encode(bytes(self._key.verify_key)).decode()
        self.key_id = key_id(bytes(self._key.verify_key))

    def __repr__(self) -> str:  # never the seed, not even in a traceback
        return f"CommandSigner(key_id={self.key_id})"

    def sign(self, command: C) -> C:
        unsigned = command.model_copy(update={"key_id": self.key_id, "signature": None})
        signature = self._key.sign(canonical_bytes(unsigned)).signature
        return unsigned.model_copy(update={"signature": signature})


class CommandVerifier:
    """The agent's side: the public keys it trusts, by key id."""

    def __init__(self, public_keys: tuple[str, ...]) -> None:
        self._keys: dict[str, nacl.signing.VerifyKey] = {}
        for text in public_keys:
            raw = _decode_key(text, "a trusted command key")
            self._keys[key_id(raw)] = nacl.signing.VerifyKey(raw)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, command: Command) -> None:
        if command.signature is None or command.key_id is None:
            raise CommandRejected("unsigned", f"{command.kind} {command.id} is not signed")
        key = self._keys.get(command.key_id)
        if key is None:
            raise CommandRejected(
                "unknown_key",
                f"{command.kind} {command.id} is signed by untrusted key {command.key_id}",
            )
        try:
            key.verify(canonical_bytes(command), command.signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            # ValueError: not 64 bytes (decoding refuses those; a model built in code may not)
            raise CommandRejected(
                "bad_signature",
                f"{command.kind} {command.id}: the signature does not match its content",
            ) from None
