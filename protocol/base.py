"""The base every protocol model stands on: frozen, and strict about unknown fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from protocol.errors import ProtocolError
from protocol.image_ref import parse_image_reference
from protocol.subjects import validate_host_id, validate_service_name, validate_token


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


HostId = Annotated[str, AfterValidator(_as_field_check(validate_host_id))]
ServiceName = Annotated[str, AfterValidator(_as_field_check(validate_service_name))]
Token = Annotated[str, AfterValidator(_as_field_check(validate_token))]
ImageRefText = Annotated[str, AfterValidator(_as_field_check(parse_image_reference))]
