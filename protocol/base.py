"""The base every protocol model stands on: frozen, and strict about unknown fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from protocol.errors import ProtocolError
from protocol.image_ref import parse_image_reference
from protocol.subjects import CONTROLLER_SENDER, MESSAGE_ID_PATTERN, TOKEN_PATTERN


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _as_field_check(check: Callable[[str], object]) -> Callable[[str], str]:
    """Run one of our typed checks as a pydantic validator.

    pydantic turns only ValueError into a field error (with the field's location);
    anything else would escape validation, so our ProtocolError is restated as one.
    """

    def validator(value: str) -> str:
        try:
            check(value)
        except ProtocolError as exc:
            raise ValueError(exc.message) from exc
        return value

    return validator


def _not_reserved(value: str) -> str:
    if value == CONTROLLER_SENDER:
        raise ValueError(f"host id {value!r} is reserved for the controller's own events")
    return value


# Tokens are checked by pydantic-core's own pattern, not a Python call per field: they
# are on every message, and the log and metrics streams decode tens of thousands a
# second. The pattern also lands in the JSON Schema for other languages.
_TOKEN = StringConstraints(pattern=f"^{TOKEN_PATTERN}$")
Token = Annotated[str, _TOKEN]
ServiceName = Annotated[str, _TOKEN]
MessageId = Annotated[str, StringConstraints(pattern=f"^{MESSAGE_ID_PATTERN}$")]
HostId = Annotated[str, _TOKEN, AfterValidator(_not_reserved)]
ImageRefText = Annotated[str, AfterValidator(_as_field_check(parse_image_reference))]
