"""fleet-agent: the daemon that runs on every host."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from node_agent.daemon import Agent
from node_agent.health_file import read_health, unhealthy_because
from node_agent.install.command import install
from node_agent.settings import AgentSettings, load_agent_settings
from protocol import SCHEMA_VERSION
from protocol.errors import FleetError, summarise_invalid
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
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING (default: the settings' log_level)")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow plaintext NATS to a non-loopback address")
    ] = False,
) -> None:
    """Run the agent until SIGTERM or SIGINT; options override FLEET_* variables.

    SIGHUP reloads the settings file: labels, intervals and the log level change at once,
    without a restart or a reconnect.
    """
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
            "log_level": log_level,
            "nats_insecure": insecure or None,
        }.items()
        if value is not None
    }
    settings = _settings_or_exit(config, overrides)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(settings, lambda: load_agent_settings(config, **overrides)))
    except FleetError as exc:
        typer.echo(f"fleet-agent: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def health(
    config: Annotated[
        Path | None, typer.Option(help="TOML settings file (for its state_dir)")
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="journal and state directory")] = None,
) -> None:
    """Exit 0 if the agent's last heartbeat reached NATS and is recent, 1 if not (the
    container image's HEALTHCHECK); prints why when it is not."""
    overrides: dict[str, Any] = {"state_dir": state_dir} if state_dir else {}
    directory = _settings_or_exit(config, overrides).state_dir
    reason = unhealthy_because(read_health(directory), time.time())
    if reason is not None:
        typer.echo(f"unhealthy: {reason}")
        raise typer.Exit(1)
    typer.echo("healthy")


def _settings_or_exit(config: Path | None, overrides: dict[str, Any]) -> AgentSettings:
    try:
        return load_agent_settings(config, **overrides)
    except ValidationError as exc:
        typer.echo(f"fleet-agent: invalid settings: {summarise_invalid(exc)}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"fleet-agent: {exc}", err=True)
        raise typer.Exit(2) from exc


app.command()(install)


async def _serve(settings: AgentSettings, load: Callable[[], AgentSettings]) -> None:
    stop = asyncio.Event()
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, agent, load)
    await agent.run(stop)


def _reload(agent: Agent, load: Callable[[], AgentSettings]) -> None:
    """SIGHUP: read the settings again; a broken file is reported and changes nothing."""
    try:
        fresh = load()
    except (ValidationError, OSError) as exc:
        why = summarise_invalid(exc) if isinstance(exc, ValidationError) else exc
        logging.getLogger("fleet-agent").error("SIGHUP: settings not reloaded: %s", why)
        return
    agent.reload_settings(fresh)


def main() -> None:
    app()
