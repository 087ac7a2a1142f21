"""Fleetwave's one exception hierarchy.

Every error the project raises on purpose derives from :class:`FleetError` and carries
a stable machine-readable ``code`` next to its human-readable message, so that a
receiver can turn any of them into an error reply or event without guessing.
Third-party exceptions are mapped onto these with ``raise ... from exc``.

    FleetError
    └── ProtocolError                 bad bytes or bad names on the bus
        ├── PayloadTooLarge
        ├── MalformedPayload          not msgpack, truncated, not a map
        ├── UnsupportedSchemaVersion
        ├── UnknownKind
        ├── InvalidMessage            right shape, wrong fields or values
        ├── InvalidSubject            a subject or token that breaks the naming rules
        └── InvalidImageReference
    ├── ConfigurationError            settings or arguments an operator must fix
    ├── BrokerError                   a NATS server could not be started or reached
    └── AgentError                    a command the agent refuses or could not carry out
        ├── CommandRefused            expired, for another host, busy, unknown service
        └── RuntimeFault              the container engine failed or did not answer
"""

from __future__ import annotations

from pydantic import ValidationError

MAX_ERRORS_IN_MESSAGE = 5


class FleetError(Exception):
    """Base of every error Fleetwave raises deliberately."""

    code: str = "fleet_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(FleetError):
    """Input from the bus (or for the bus) that does not follow the protocol."""

    code = "protocol_error"


class PayloadTooLarge(ProtocolError):
    code = "payload_too_large"


class MalformedPayload(ProtocolError):
    code = "malformed_payload"


class UnsupportedSchemaVersion(ProtocolError):
    code = "unsupported_schema_version"


class UnknownKind(ProtocolError):
    code = "unknown_kind"


class InvalidMessage(ProtocolError):
    code = "invalid_message"


class InvalidSubject(ProtocolError):
    code = "invalid_subject"


class InvalidImageReference(ProtocolError):
    code = "invalid_image_reference"


class ConfigurationError(FleetError):
    code = "configuration_error"


class BrokerError(FleetError):
    code = "broker_error"


class AgentError(FleetError):
    code = "agent_error"


class CommandRefused(AgentError):
    """The agent will not run this command; ``code`` says why (expired, busy, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RuntimeFault(AgentError):
    """The Docker engine failed, refused, or did not answer in time."""

    code = "runtime_error"


class RuntimeTimeout(RuntimeFault):
    """The Docker engine did not answer in time: the call may still have taken effect."""


def summarise_invalid(exc: ValidationError) -> str:
    """Where and why validation failed, without the input values.

    pydantic's own text quotes the input, which may be a registry password or a key
    (a credentials entry missing its username is echoed whole), and error text ends up
    in logs, events and terminals."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in errors[:MAX_ERRORS_IN_MESSAGE]
    ]
    more = len(errors) - MAX_ERRORS_IN_MESSAGE
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def describe(exc: BaseException) -> str:
    """One line for a person: our own message, or another error's type and text."""
    if isinstance(exc, FleetError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
