"""The version every Fleetwave component reports, read from the installed distribution."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def fleetwave_version() -> str:
    try:
        return version("fleetwave")
    except PackageNotFoundError:
        return "0+unknown"
