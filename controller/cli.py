"""fleetctl: the operator's command line."""

from __future__ import annotations

import typer

from protocol import SCHEMA_VERSION
from protocol.version import fleetwave_version

app = typer.Typer(
    name="fleetctl",
    help="Roll container updates across a fleet of Docker hosts, safely.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Keeps the CLI a group of subcommands even while it has only a few."""


@app.command()
def version() -> None:
    """Print fleetctl's version and the protocol schema version it speaks."""
    typer.echo(f"fleetctl {fleetwave_version()} (protocol schema {SCHEMA_VERSION})")


def main() -> None:
    app()
