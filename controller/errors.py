"""The controller's own errors (under protocol.errors.FleetError, like every error of
Fleetwave's): what fleetctl reports with exit code 1 unless a subclass says otherwise."""

from __future__ import annotations

from protocol.errors import FleetError


class ControllerError(FleetError):
    code = "controller_error"


class ComposeError(ControllerError):
    """A Compose file Fleetwave cannot take: the message names the file's key, service
    and value at fault (never a secret's value), in one or two lines."""

    code = "compose_invalid"
