"""fleet-agent: the daemon that runs on every host."""

from __future__ import annotations

import typer

from protocol import SCHEMA_VERSION
from protocol.version import fleetwave_version

app = typer.Typer(
    name="fleet-agent",
    help="The Fleetwave node agent: updates this host's containers on the controller's command.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Keeps the CLI a group of subcommands even while it has only a few."""


@app.command()
def version() -> None:
    """Print the agent's version and the protocol schema version it speaks."""
    typer.echo(f"fleet-agent {fleetwave_version()} (protocol schema {SCHEMA_VERSION})")


def main() -> None:
    app()
