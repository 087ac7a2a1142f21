"""fleet-agent: the daemon that runs on every host."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from node_agent.daemon import Agent
from node_agent.settings import AgentSettings, load_agent_settings
from protocol import SCHEMA_VERSION
from protocol.errors import FleetError
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


@app.command()
def run(
    nats: Annotated[list[str] | None, typer.Option(help="NATS URL (repeatable)")] = None,
    host_id: Annotated[str | None, typer.Option(help="this host's id (default: hostname)")] = None,
    labels: Annotated[
        str | None, typer.Option(help="host labels, e.g. role=edge,region=eu")
    ] = None,
    docker_host: Annotated[str | None, typer.Option(help="Docker engine URL")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="journal and state directory")] = None,
    container_prefix: Annotated[
        str | None, typer.Option(help="prefix for container names (several agents, one engine)")
    ] = None,
    heartbeat_interval: Annotated[float | None, typer.Option(help="seconds")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML settings file (flags and FLEET_* variables win over it)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the agent until SIGTERM or SIGINT; options override FLEET_* variables."""
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "nats_urls": tuple(nats) if nats else None,
            "host_id": host_id,
            "labels": labels,
            "docker_host": docker_host,
            "state_dir": state_dir,
            "container_prefix": container_prefix,
            "heartbeat_interval": heartbeat_interval,
        }.items()
        if value is not None
    }
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_agent_settings(config, **overrides)
    except ValidationError as exc:
        typer.echo(f"fleet-agent: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"fleet-agent: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        asyncio.run(_serve(settings))
    except FleetError as exc:
        typer.echo(f"fleet-agent: {exc.message}", err=True)
        raise typer.Exit(1) from exc


async def _serve(settings: AgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Agent(settings).run(stop)


def main() -> None:
    app()
