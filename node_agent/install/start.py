"""Starting the installed agent: as a container on the host's engine, or as a systemd unit.

Container mode runs the agent image with the settings directory, the state directory and
the engine's socket mounted, on the host's network, restarting unless stopped: exactly
the `docker run` of the README. Systemd mode writes the unit shipped with the agent
(node_agent/units), pointed at this fleet-agent and settings file, and enables it.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path, PurePosixPath

from node_agent.runtime import DockerRuntime
from protocol.errors import AgentError, ConfigurationError
from protocol.image_ref import parse_image_reference

IN_CONTAINER_CONFIG = PurePosixPath("/etc/fleetwave")
IN_CONTAINER_SOCKET = "/var/run/docker.sock"
IN_CONTAINER_SOCKET_DIR = "/run/fleetwave/engine"
ROLE_LABEL = "io.fleetwave.role"
UNIT_NAME = "fleet-agent.service"
SHIPPED_EXEC = "/opt/fleetwave/bin/fleet-agent"
SHIPPED_CONFIG = "/etc/fleetwave/agent.toml"
SYSTEMCTL_TIMEOUT = 60.0
OLD_AGENT_GRACE = 90.0
"""Seconds a replaced agent gets to stop (as the systemd unit's TimeoutStopSec)."""


def socket_path(docker_host: str) -> str:
    """The engine's unix socket, which the agent's container mounts."""
    if not docker_host.startswith("unix://"):
        raise ConfigurationError(
            f"--mode container needs the engine's unix socket, not {docker_host}"
        )
    return docker_host.removeprefix("unix://")


async def start_container(
    runtime: DockerRuntime,
    *,
    image: str,
    name: str,
    config_dir: Path,
    state_dir: Path,
    docker_socket: str,
    socket_dir: bool,
    replace: bool,
    pull_timeout: float,
    place: Callable[[], None],
) -> str:
    """Create and start the agent's container; returns its id. ``state_dir`` exists.

    Nothing is written (``place`` puts the bundle's files in place) and no agent is
    stopped until the name is free or may be taken and the image is here."""
    existing = await runtime.inspect_container(name)
    if existing is not None and not replace:
        raise ConfigurationError(
            f"a container named {name} exists already; pass --replace to take its place"
        )
    if await runtime.inspect_image(image) is None:
        ref = parse_image_reference(image)
        await runtime.pull(ref.name, ref.digest or ref.tag or "latest", None, pull_timeout)
    await asyncio.to_thread(place)
    if existing is not None:  # it finishes or journals what it has in flight first
        await runtime.stop(name, OLD_AGENT_GRACE)
        await runtime.remove(name, volumes=True)
    # The state directory at the same path inside: the agent hands paths under it (config
    # files) to the engine as bind mounts, and the engine reads them on the host.
    env = [f"FLEET_STATE_DIR={state_dir}", f"FLEET_AGENT_CONTAINER={name}"]
    socket_bind = f"{docker_socket}:{IN_CONTAINER_SOCKET}:rw"
    if socket_dir:  # an engine that makes its socket anew when it restarts
        directory, _, socket_name = docker_socket.rpartition("/")
        socket_bind = f"{directory}:{IN_CONTAINER_SOCKET_DIR}:rw"
        env.append(f"FLEET_DOCKER_HOST=unix://{IN_CONTAINER_SOCKET_DIR}/{socket_name}")
    config = {"Image": image, "Labels": {ROLE_LABEL: "agent"}, "Env": env}
    host_config = {
        "Binds": [
            f"{config_dir}:{IN_CONTAINER_CONFIG}:ro",
            f"{state_dir}:{state_dir}:rw",
            socket_bind,
        ],
        "NetworkMode": "host",
        "RestartPolicy": {"Name": "unless-stopped"},
    }
    container_id = await runtime.create_container(name, config, host_config)
    await runtime.start(container_id)
    return container_id


def write_unit(root: Path, executable: Path, settings_file: PurePosixPath) -> Path:
    """The shipped unit under ``root``/etc/systemd/system, run by ``executable``."""
    text = resources.files("node_agent").joinpath("units", UNIT_NAME).read_text()
    text = text.replace(SHIPPED_EXEC, str(executable)).replace(SHIPPED_CONFIG, str(settings_file))
    unit = root / "etc" / "systemd" / "system" / UNIT_NAME
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(text)
    unit.chmod(0o644)
    return unit


def enable_unit() -> None:
    """systemctl daemon-reload, then enable --now; a failure says what systemctl said."""
    for args in (("daemon-reload",), ("enable", "--now", UNIT_NAME)):
        try:
            done = subprocess.run(
                ["systemctl", *args],
                capture_output=True,
                text=True,
                timeout=SYSTEMCTL_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise AgentError("systemctl is not installed here: use --mode container") from None
        except subprocess.TimeoutExpired:
            raise AgentError(f"systemctl {' '.join(args)} did not finish in 60 s") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise AgentError(f"systemctl {' '.join(args)} failed: {said[-1] if said else ''}")
