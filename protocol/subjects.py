"""Subject, stream and bucket names of the bus (see DESIGN.md, "The bus").

Host ids, service names and event types are single subject tokens: ``[A-Za-z0-9_-]+``.
Building a subject validates every token; parsing a subject returns what it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import InvalidSubject

TOKEN_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MESSAGE_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
"""Message ids (and so command and operation ids): a token, up to 128 characters, since
some are built from a rollout id. Checked at decode time, before an id names anything."""
_TOKEN_RE = re.compile(TOKEN_PATTERN)

PREFIX = "fleet"
CONTROLLER_SENDER = "controller"
"""Reserved: it names the controller's event subjects, so no host may be called this."""

# JetStream streams and the subjects they capture.
EVENTS_STREAM = "FLEET_EVENTS"
LOGS_STREAM = "FLEET_LOGS"
METRICS_STREAM = "FLEET_METRICS"
EVENTS_WILDCARD = f"{PREFIX}.evt.>"
LOGS_WILDCARD = f"{PREFIX}.logs.>"
METRICS_WILDCARD = f"{PREFIX}.metrics.>"

# JetStream key-value buckets.
HOSTS_BUCKET = "fleet_hosts"
SERVICES_BUCKET = "fleet_services"
ROLLOUTS_BUCKET = "fleet_rollouts"
CONFIG_BUCKET = "fleet_config"


def validate_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a single subject token, else raise InvalidSubject."""
    if not isinstance(value, str) or _TOKEN_RE.fullmatch(value) is None:
        raise InvalidSubject(
            f"{what} {value!r} is not a valid subject token "
            "(1 to 64 characters of A-Z, a-z, 0-9, '_' or '-')"
        )
    return value


def validate_host_id(host: str) -> str:
    validate_token(host, "host id")
    if host == CONTROLLER_SENDER:
        raise InvalidSubject(f"host id {host!r} is reserved for the controller's own events")
    return host


def validate_service_name(service: str) -> str:
    return validate_token(service, "service name")


def command_subject(host: str) -> str:
    return f"{PREFIX}.cmd.{validate_host_id(host)}"


def host_event_subject(host: str, event_type: str) -> str:
    return f"{PREFIX}.evt.{validate_host_id(host)}.{validate_token(event_type, 'event type')}"


def controller_event_subject(event_type: str) -> str:
    return f"{PREFIX}.evt.{CONTROLLER_SENDER}.{validate_token(event_type, 'event type')}"


def host_events_wildcard(host: str) -> str:
    return f"{PREFIX}.evt.{validate_host_id(host)}.>"


def log_subject(host: str, service: str) -> str:
    return f"{PREFIX}.logs.{validate_host_id(host)}.{validate_service_name(service)}"


def service_logs_wildcard(service: str) -> str:
    """The logs of ``service`` on every host."""
    return f"{PREFIX}.logs.*.{validate_service_name(service)}"


def metrics_subject(host: str) -> str:
    return f"{PREFIX}.metrics.{validate_host_id(host)}"


class SubjectFamily(StrEnum):
    COMMAND = "cmd"
    EVENT = "evt"
    LOGS = "logs"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    """What a concrete (wildcard-free) fleet subject names."""

    family: SubjectFamily
    host: str | None = None
    """None only for controller events."""
    service: str | None = None
    event_type: str | None = None

    def build(self) -> str:
        """The subject this names; ``parse_subject(s).build() == s``."""
        match self.family:
            case SubjectFamily.COMMAND:
                return command_subject(_required(self.host))
            case SubjectFamily.EVENT if self.host is None:
                return controller_event_subject(_required(self.event_type))
            case SubjectFamily.EVENT:
                return host_event_subject(_required(self.host), _required(self.event_type))
            case SubjectFamily.LOGS:
                return log_subject(_required(self.host), _required(self.service))
            case SubjectFamily.METRICS:
                return metrics_subject(_required(self.host))
        raise InvalidSubject(f"unknown subject family {self.family!r}")  # pragma: no cover


def _required(value: str | None) -> str:
    if value is None:
        raise InvalidSubject("subject is missing a token")
    return value


_SHAPES: dict[SubjectFamily, int] = {
    SubjectFamily.COMMAND: 3,
    SubjectFamily.EVENT: 4,
    SubjectFamily.LOGS: 4,
    SubjectFamily.METRICS: 3,
}


def parse_subject(subject: str) -> ParsedSubject:
    """Split a concrete fleet subject into what it names, validating every token."""
    parts = subject.split(".") if isinstance(subject, str) else []
    if len(parts) < 3 or parts[0] != PREFIX:
        raise InvalidSubject(f"{subject!r} is not a fleet subject")
    try:
        family = SubjectFamily(parts[1])
    except ValueError:
        raise InvalidSubject(f"{subject!r}: unknown subject family {parts[1]!r}") from None
    if len(parts) != _SHAPES[family]:
        raise InvalidSubject(f"{subject!r}: a {family.value} subject has {_SHAPES[family]} tokens")
    match family:
        case SubjectFamily.COMMAND:
            return ParsedSubject(family, host=validate_host_id(parts[2]))
        case SubjectFamily.EVENT:
            event_type = validate_token(parts[3], "event type")
            if parts[2] == CONTROLLER_SENDER:
                return ParsedSubject(family, event_type=event_type)
            return ParsedSubject(family, host=validate_host_id(parts[2]), event_type=event_type)
        case SubjectFamily.LOGS:
            return ParsedSubject(
                family, host=validate_host_id(parts[2]), service=validate_service_name(parts[3])
            )
        case SubjectFamily.METRICS:
            return ParsedSubject(family, host=validate_host_id(parts[2]))
    raise InvalidSubject(f"unknown subject family {family!r}")  # pragma: no cover
