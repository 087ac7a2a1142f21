"""`fleet-agent install --bundle FILE --mode container|systemd`."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from node_agent.install.bundle_files import Bundle, place_bundle, read_bundle
from node_agent.install.start import (
    IN_CONTAINER_CONFIG,
    enable_unit,
    socket_path,
    start_container,
    write_unit,
)
from node_agent.runtime import DockerRuntime
from protocol.errors import ConfigurationError, FleetError

DOCKER_TIMEOUT = 60.0
PULL_TIMEOUT = 600.0


@dataclass(frozen=True)
class Engine:
    docker_host: str
    socket_dir: bool
    """Mount the socket's directory rather than the socket itself."""


class Mode(StrEnum):
    container = "container"
    systemd = "systemd"


def install(
    bundle: Annotated[Path, typer.Option(help="the tar `fleetctl hosts enroll --bundle` wrote")],
    mode: Annotated[Mode, typer.Option(help="run the agent as a container or a systemd unit")],
    image: Annotated[
        str | None,
        typer.Option(
            help="the agent image (--mode container), e.g. REGISTRY/fleetwave/agent:1.2.0"
        ),
    ] = None,
    config_dir: Annotated[Path, typer.Option(help="where the settings and certificates go")] = Path(
        "/etc/fleetwave"
    ),
    state_dir: Annotated[Path, typer.Option(help="the agent's state directory")] = Path(
        "/var/lib/fleetwave/agent"
    ),
    docker_host: Annotated[
        str, typer.Option(help="the engine the agent manages")
    ] = "unix:///var/run/docker.sock",
    name: Annotated[str, typer.Option(help="the agent container's name")] = "fleet-agent",
    socket_dir: Annotated[
        bool,
        typer.Option(
            "--socket-dir",
            help="mount the socket's directory, not the socket: for an engine that makes "
            "its socket anew when it restarts (no systemd socket activation)",
        ),
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="remove an existing agent container first")
    ] = False,
    root: Annotated[
        Path, typer.Option(help="--mode systemd: install under this root and start nothing")
    ] = Path("/"),
) -> None:
    """Put an enrolment bundle in place and start the agent from it.

    The host's key is written with mode 0600 and never printed. Container mode runs the
    agent image on the host's network with the settings, the state directory and the
    engine's socket mounted, restarting unless stopped; systemd mode installs and enables
    fleet-agent.service (with --root, only writes the files)."""
    try:
        found = read_bundle(bundle)
        if mode is Mode.container:
            where = Engine(docker_host, socket_dir)
            _install_container(found, image, config_dir, state_dir, where, name, replace)
        else:
            _install_systemd(found, root, config_dir)
    except FleetError as exc:
        typer.echo(f"fleet-agent install: {exc.message}", err=True)
        raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1) from exc
    except OSError as exc:
        typer.echo(f"fleet-agent install: {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc


def _install_container(
    found: Bundle,
    image: str | None,
    config_dir: Path,
    state_dir: Path,
    engine: Engine,
    name: str,
    replace: bool,
) -> None:
    if image is None:
        raise ConfigurationError("--mode container needs --image (the agent image to run)")
    socket = socket_path(engine.docker_host)
    config_dir, state_dir = config_dir.resolve(), state_dir.resolve()

    def place() -> None:
        place_bundle(found, config_dir, IN_CONTAINER_CONFIG)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        typer.echo(f"settings for {found.host_id} in {config_dir} (key mode 0600)")

    async def start(agent_image: str) -> str:
        runtime = DockerRuntime(engine.docker_host, DOCKER_TIMEOUT)
        try:
            return await start_container(
                runtime,
                image=agent_image,
                name=name,
                config_dir=config_dir,
                state_dir=state_dir,
                docker_socket=socket,
                socket_dir=engine.socket_dir,
                replace=replace,
                pull_timeout=PULL_TIMEOUT,
                place=place,
            )
        finally:
            runtime.close()

    container_id = asyncio.run(start(image))
    typer.echo(f"container {name} ({container_id[:12]}) started from {image}")


def _install_systemd(found: Bundle, root: Path, config_dir: Path) -> None:
    if not config_dir.is_absolute():
        raise ConfigurationError("--config-dir must be an absolute path")
    target_dir = root / config_dir.relative_to("/")
    settings_file = place_bundle(found, target_dir, PurePosixPath(config_dir))
    typer.echo(f"settings for {found.host_id} in {target_dir} (key mode 0600)")
    executable = Path(sys.executable).parent / "fleet-agent"
    unit = write_unit(root, executable, PurePosixPath(config_dir) / settings_file.name)
    if root != Path("/"):
        typer.echo(f"unit {unit} written; not started (--root)")
        return
    enable_unit()
    typer.echo(f"unit {unit.name} enabled and started")
