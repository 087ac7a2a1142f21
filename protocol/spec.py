"""What a service is: the desired container, how to probe it, how to replace it.

Durations are seconds as floats and sizes are bytes, so every language reads them.
Impossible values (a healthy deadline shorter than the time it takes to prove health,
a port of 0, a relative mount target) are rejected here, before any host sees them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from protocol.base import FrozenModel, ImageRefText, ServiceName
from protocol.config_files import ConfigName

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(ge=0, le=86_400)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]
AbsolutePath = Annotated[str, Field(pattern=r"^/", max_length=4096)]


class VolumeMount(FrozenModel):
    kind: Literal["volume", "bind"] = "volume"
    source: Annotated[str, Field(min_length=1, max_length=4096)]
    """A named volume, or an absolute host path for a bind mount."""
    target: AbsolutePath
    read_only: bool = False

    @model_validator(mode="after")
    def _bind_source_is_absolute(self) -> Self:
        if self.kind == "bind" and not self.source.startswith("/"):
            raise ValueError("a bind mount's source must be an absolute host path")
        return self


class PortMapping(FrozenModel):
    """Documents (and with host networking, reserves) a port the service listens on."""

    container_port: Port
    host_port: Port | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


class RestartPolicy(FrozenModel):
    name: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    max_retries: Annotated[int, Field(ge=0, le=1000)] = 0


class Resources(FrozenModel):
    memory_bytes: Annotated[int, Field(ge=6 * 1024 * 1024)] | None = None
    """Docker refuses limits under 6 MiB, so we do too, earlier and more clearly."""
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    pids_limit: Annotated[int, Field(ge=1)] | None = None


Capability = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
"""A Linux capability as `docker run --cap-add` takes it: NET_BIND_SERVICE, or ALL."""
SignalName = Annotated[str, Field(pattern=r"^(SIG[A-Z0-9+-]{2,12}|[0-9]{1,2})$")]


class ContainerHealthcheck(FrozenModel):
    """The container's own healthcheck (Docker's HEALTHCHECK; Compose's ``healthcheck``):
    the engine runs it, and a ``docker`` probe reads what it found."""

    test: Annotated[tuple[str, ...], Field(min_length=1)]
    """As the engine takes it: ("CMD", ...), ("CMD-SHELL", "..."), or ("NONE",)."""
    interval: PositiveSeconds | None = None
    timeout: PositiveSeconds | None = None
    retries: Annotated[int, Field(ge=0, le=1000)] | None = None
    start_period: Seconds | None = None


class Ulimit(FrozenModel):
    name: Annotated[str, Field(pattern=r"^[a-z]{2,12}$")]
    soft: int
    hard: int


class LogSettings(FrozenModel):
    driver: Annotated[str, Field(min_length=1, max_length=64)]
    options: dict[str, str] = Field(default_factory=dict)


class NetworkAttachment(FrozenModel):
    """A network the container joins by name (a Compose app's project network)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    aliases: tuple[str, ...] = ()


class ContainerSettings(FrozenModel):
    env: dict[str, str] = Field(default_factory=dict)
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    restart_policy: RestartPolicy | None = None
    """None keeps the container's own; a service's first container gets unless-stopped."""
    resources: Resources = Resources()
    user: str | None = None
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: Literal["host", "none"] | None = None
    """No bridge networks from Fleetwave: containers share the host's network or have
    none. None keeps the container's own; a service's first container gets host."""
    # Privileged mode and host namespaces are always what the spec says, never carried
    # over from the old container: a copy started privileged by hand must not stay so
    # after an update, since the policies vetted the spec.
    privileged: bool = False
    cap_add: tuple[Capability, ...] | None = None
    """None keeps the container's own (none for a first container); () removes them."""
    cap_drop: tuple[Capability, ...] | None = None
    """None keeps the container's own (none for a first container); () removes them."""
    host_pid: bool = False
    """Share the host's PID namespace."""
    host_ipc: bool = False
    """Share the host's IPC namespace."""
    # Compose's settings (apps); each None or empty keeps the image's or engine's default.
    working_dir: AbsolutePath | None = None
    hostname: Annotated[str, Field(max_length=253)] | None = None
    stop_signal: SignalName | None = None
    read_only: bool | None = None
    init: bool | None = None
    healthcheck: ContainerHealthcheck | None = None
    tmpfs: dict[AbsolutePath, str] = Field(default_factory=dict)
    """Mount point -> mount options ("size=64m,mode=1777", or "")."""
    ulimits: tuple[Ulimit, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    """"name:address" lines for /etc/hosts."""
    sysctls: dict[str, str] = Field(default_factory=dict)
    logging: LogSettings | None = None
    networks: tuple[NetworkAttachment, ...] = ()
    """Only with ``network_mode`` None: the named networks it joins, the first at create."""


class HttpProbe(FrozenModel):
    kind: Literal["http"] = "http"
    port: Port
    path: Annotated[str, Field(pattern=r"^/")] = "/health"
    host: str = "127.0.0.1"
    expect_status: tuple[Annotated[int, Field(ge=100, le=599)], ...] = (200,)
    body_contains: str | None = None


class TcpProbe(FrozenModel):
    kind: Literal["tcp"] = "tcp"
    port: Port
    host: str = "127.0.0.1"


class ExecProbe(FrozenModel):
    kind: Literal["exec"] = "exec"
    command: Annotated[tuple[str, ...], Field(min_length=1)]


class DockerHealthProbe(FrozenModel):
    """Trust the image's own HEALTHCHECK, as reported by the engine."""

    kind: Literal["docker"] = "docker"


Probe = Annotated[HttpProbe | TcpProbe | ExecProbe | DockerHealthProbe, Field(discriminator="kind")]

UNCHECKED_RUN = 3.0
"""Seconds a container with no health check must keep running to count as started."""
UNCHECKED_DEADLINE = 30.0
"""Seconds that takes at most (a slow start), for a container with no health check."""


class HealthCheck(FrozenModel):
    probe: Probe
    initial_delay: Seconds = 0.0
    period: PositiveSeconds = 1.0
    timeout: PositiveSeconds = 2.0
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    min_healthy_time: Seconds = 5.0
    """The new container must stay healthy this long before it counts as done."""
    healthy_deadline: PositiveSeconds = 60.0
    """Give up (and roll back) if it has not proven healthy by then."""

    @model_validator(mode="after")
    def _deadline_leaves_room_to_prove_health(self) -> Self:
        if self.healthy_deadline < self.initial_delay + self.min_healthy_time:
            raise ValueError(
                f"healthy_deadline ({self.healthy_deadline}s) is shorter than initial_delay + "
                f"min_healthy_time ({self.initial_delay + self.min_healthy_time}s): "
                "no container could ever pass"
            )
        if self.timeout > self.healthy_deadline:
            raise ValueError("a probe timeout longer than the healthy deadline can never pass")
        return self


Colour = Literal["blue", "green"]
"""Blue-green: the two copies of a service a host can hold, told apart by a label."""
COLOURS: tuple[Colour, Colour] = ("blue", "green")
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]


COLOUR_ENV = "FLEET_COLOUR"
"""Set by ``coloured`` in a colour's spec: which copy the container is."""


def other_colour(colour: Colour) -> Colour:
    return "green" if colour == "blue" else "blue"


class BlueGreen(FrozenModel):
    """How a host runs two colours side by side, and what tells the traffic to switch.

    Each colour listens on its own port, handed to the container in ``port_env``, so the
    new colour is started and verified next to the old one. Blue is the service's usual
    port: a container that predates blue-green counts as blue.
    """

    port: Port
    alternate_port: Port
    port_env: EnvName = "PORT"
    switch_hook: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    """Run on the host after each switch (e.g. a proxy reload), with FLEET_SERVICE,
    FLEET_ACTIVE_COLOUR, FLEET_ACTIVE_PORT and FLEET_HOST in its environment."""
    hook_timeout: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _ports_differ(self) -> Self:
        if self.port == self.alternate_port:
            raise ValueError("blue-green needs two different ports (port, alternate_port)")
        return self

    def port_of(self, colour: Colour) -> int:
        return self.port if colour == "blue" else self.alternate_port


class ReloadPolicy(StrEnum):
    """What the agent does to a running container when one of its config files changes."""

    SIGNAL = "signal"
    """Send ``ConfigMount.signal`` (SIGHUP) to the container: no restart."""
    RESTART = "restart"
    NONE = "none"
    """The program notices the file by itself (or only reads it at its next start)."""


class ConfigMount(FrozenModel):
    """Where the service's config files (KV ``fleet_config``) go, and how a change is applied.

    The agent writes them into a host directory before the container starts and mounts
    that directory read-only at ``target``; a directory, not single files, so a file
    replaced by rename shows inside the running container.
    """

    target: AbsolutePath = "/config"
    host_dir: AbsolutePath | None = None
    """Default: ``<agent state dir>/config/<container name>``."""
    files: tuple[ConfigName, ...] = ()
    """Files the service cannot start without: Prepare is not ready while one is missing."""
    reload: ReloadPolicy = ReloadPolicy.SIGNAL
    signal: Annotated[str, Field(pattern=r"^SIG[A-Z0-9]{2,8}$")] = "SIGHUP"


class HookPlace(StrEnum):
    CONTAINER = "container"
    """In the service's container (``docker exec``): the running one before an update,
    the new one after it."""
    HOST = "host"
    """On the host, by the agent, as the agent's user."""


HookCommand = Annotated[
    tuple[Annotated[str, Field(max_length=4096)], ...], Field(min_length=1, max_length=256)
]


class Hook(FrozenModel):
    """A command run around one host's update, with FLEET_SERVICE, FLEET_HOST, FLEET_HOOK,
    FLEET_IMAGE and FLEET_OLD_IMAGE in its environment; it fails on a non-zero exit or
    when it outlasts ``timeout``."""

    command: HookCommand
    run_in: HookPlace = HookPlace.CONTAINER
    timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0


class ControllerHook(FrozenModel):
    """A command the leading controller runs on its own host, with FLEET_SERVICE,
    FLEET_ROLLOUT_ID, FLEET_IMAGE, FLEET_REVISION and FLEET_HOSTS in its environment."""

    command: HookCommand
    timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0


class Hooks(FrozenModel):
    pre_update: Hook | None = None
    """Before anything on the host is touched (skipped, in the container, when no copy
    runs yet). Failing stops that host's update, which counts as a host failure."""
    post_update: Hook | None = None
    """Once the new container proved healthy, before the old one is removed. Failing
    restores the old container, as a failed probe does."""
    post_rollout: ControllerHook | None = None
    """After a rollout of the service completed (not after one that failed or stopped)."""


class ImageRetention(FrozenModel):
    """Old images of the service the agent removes after each successful update."""

    keep: Annotated[int, Field(ge=1, le=100)] = 3
    """The newest this many images the service ran stay; never the one a rollback or a
    blue-green switch-back would need, nor one another container uses."""
    prune_on_low_disk: bool = False
    """When a pre-flight finds too little disk, first remove every image of the service's
    that no service here runs or would go back to and no container uses (beyond
    ``keep``, down to none), then measure again."""


class UpdateOrder(StrEnum):
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


class ServiceSpec(FrozenModel):
    name: ServiceName
    image: ImageRefText
    container: ContainerSettings = ContainerSettings()
    health: HealthCheck | None = None
    update_order: UpdateOrder = UpdateOrder.STOP_FIRST
    stop_grace_period: Seconds = 10.0
    blue_green: BlueGreen | None = None
    """Required by the blue-green rollout strategy."""
    config: ConfigMount | None = None
    """Config files synced from KV fleet_config, mounted at ``config.target``."""
    hooks: Hooks = Hooks()
    images: ImageRetention = ImageRetention()

    @model_validator(mode="after")
    def _start_first_needs_no_port_clash(self) -> Self:
        # Two copies of a host-network service cannot both bind the same port.
        if (
            self.update_order is UpdateOrder.START_FIRST
            and self.container.network_mode in ("host", None)  # unset: host when first
            and self.container.ports
        ):
            raise ValueError(
                "start-first with host networking would run two copies on the same ports; "
                "use stop-first, or blue-green with an alternate port"
            )
        return self

    @model_validator(mode="after")
    def _blue_green_has_its_own_hook(self) -> Self:
        if self.blue_green is not None and (self.hooks.pre_update or self.hooks.post_update):
            raise ValueError(
                "a blue-green service runs no pre_update or post_update hooks; "
                "use blue_green.switch_hook (post_rollout works)"
            )
        return self


def coloured(spec: ServiceSpec, colour: Colour) -> ServiceSpec:
    """The spec one colour runs with: its port in the environment, its probes on that port."""
    blue_green = spec.blue_green
    if blue_green is None:
        raise ValueError(f"{spec.name} has no blue_green settings")
    port = blue_green.port_of(colour)
    env = {**spec.container.env, blue_green.port_env: str(port), COLOUR_ENV: colour}
    changes: dict[str, object] = {"container": spec.container.model_copy(update={"env": env})}
    health = spec.health
    if (
        health is not None
        and isinstance(health.probe, HttpProbe | TcpProbe)
        and health.probe.port in (blue_green.port, blue_green.alternate_port)
    ):
        probe = health.probe.model_copy(update={"port": port})
        changes["health"] = health.model_copy(update={"probe": probe})
    return spec.model_copy(update=changes)


def colour_in(spec: ServiceSpec) -> Colour | None:
    """The colour a spec made by ``coloured`` runs in; None for a plain spec."""
    if spec.blue_green is None:
        return None
    value = spec.container.env.get(COLOUR_ENV)
    return next((colour for colour in COLOURS if colour == value), None)
