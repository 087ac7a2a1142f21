"""The envelope every message on the bus shares: schema_version, id, kind, sender,
sent_at. ``kind`` narrows to each model's literal and selects it when decoding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, Field

from protocol import SCHEMA_VERSION
from protocol.base import FrozenModel, MessageId, Token

Sender = Token
"""A host id, or "controller"."""
ShortText = Annotated[str, Field(max_length=8192)]


def new_message_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(FrozenModel):
    kind: str
    """Each message kind narrows this to its own literal, the union's discriminator."""
    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    id: MessageId = Field(default_factory=new_message_id)
    sender: Sender
    sent_at: AwareDatetime = Field(default_factory=utc_now)
