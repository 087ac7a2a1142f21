"""The controller's own errors (under protocol.errors.FleetError, like every error of
Fleetwave's): what fleetctl reports with exit code 1 unless a subclass says otherwise."""

from __future__ import annotations

from protocol.errors import FleetError


class ControllerError(FleetError):
    code = "controller_error"
