"""A Compose file as a Fleetwave app: `compose_app(path, name, environ)`.

The file is read, interpolated and checked against the schema (loading), what Fleetwave
does not do is refused (keys), and each service becomes a member: a service spec whose
container is named ``<app>-<service>``. Named volumes and networks become the engine's
``<app>_<name>`` unless the file names them; a service with neither ``network_mode`` nor
``networks`` joins the app's ``default`` network, as with Compose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.compose import container as convert
from controller.compose.dotenv import read_env_file
from controller.compose.keys import refuse_unsupported
from controller.compose.loading import load_compose
from controller.compose.mounts import mounts
from controller.compose.units import duration_seconds
from controller.errors import ComposeError
from protocol.app import (
    AppSpec,
    Condition,
    Dependency,
    Member,
    NamedNetwork,
    NamedVolume,
    start_order,
)
from protocol.errors import summarise_invalid
from protocol.spec import (
    ContainerSettings,
    DockerHealthProbe,
    HealthCheck,
    NetworkAttachment,
    ServiceSpec,
)

EXTENSION = "x-fleetwave"
HEALTH_SLACK = 10.0


@dataclass(frozen=True)
class ComposeApp:
    app: AppSpec
    missing: frozenset[str]
    """Variables the file used that had no value: an empty string each (warn of them)."""
    extension: dict[str, Any]
    """The file's x-fleetwave block: selector and update policy."""


def compose_app(path: Path, name: str, environ: Mapping[str, str]) -> ComposeApp:
    document, missing = load_compose(path, environ)
    refuse_unsupported(document)
    volumes = _named(document.get("volumes") or {}, name, "volumes", NamedVolume)
    networks = _named(document.get("networks") or {}, name, "networks", NamedNetwork)
    services: dict[str, Any] = document.get("services") or {}
    if not services:
        raise ComposeError(f"{path}: no services")
    context = _Context(name, path.parent, environ, volumes, networks)
    members = _health_where_awaited(
        [context.member(member, service) for member, service in services.items()]
    )
    _check_dependencies(members)
    if context.default_network and "default" not in networks:
        networks["default"] = NamedNetwork(name=f"{name}_default")
    try:
        app = AppSpec(
            name=name,
            members=tuple(members),
            volumes=tuple(volumes.values()),
            networks=tuple(networks.values()),
        )
    except ValidationError as exc:
        raise ComposeError(f"{path}: {summarise_invalid(exc)}") from None
    extension = document.get(EXTENSION) or {}
    if not isinstance(extension, dict):
        raise ComposeError(f"{EXTENSION}: a mapping (selector, update policy)")
    return ComposeApp(app, frozenset(missing), extension)


def _named(found: Mapping[str, Any], app: str, kind: str, model: Any) -> dict[str, Any]:
    named = {}
    for key, settings in found.items():
        settings = settings or {}
        external = bool(convert.boolean(settings.get("external"), f"{kind}.{key}.external"))
        engine_name = settings.get("name") or (key if external else f"{app}_{key}")
        options = {k: v for k, v in settings.items() if k not in ("name", "external")}
        try:
            named[key] = model(name=str(engine_name), external=external, **options)
        except ValidationError as exc:
            raise ComposeError(f"{kind}.{key}: {summarise_invalid(exc)}") from None
    return named


@dataclass
class _Context:
    app: str
    directory: Path
    environ: Mapping[str, str]
    volumes: dict[str, NamedVolume]
    networks: dict[str, NamedNetwork]
    default_network: bool = False

    def member(self, member: str, service: Mapping[str, Any]) -> Member:
        where = f"services.{member}"
        if not service.get("image"):
            raise ComposeError(f"{where}: needs an image: (Fleetwave deploys images)")
        try:
            container = self._settings(service, where)
            spec = ServiceSpec(
                name=f"{self.app}-{member}",
                image=str(service["image"]),
                container=container,
                health=_member_health(service, where) or _health(container),
                stop_grace_period=duration_seconds(
                    service.get("stop_grace_period", "10s"), f"{where}.stop_grace_period"
                ),
            )
            return Member(name=member, spec=spec, depends_on=_dependencies(service))
        except ValidationError as exc:
            raise ComposeError(f"{where}: {summarise_invalid(exc)}") from None

    def _settings(self, service: Mapping[str, Any], where: str) -> ContainerSettings:
        volume_names = {key: volume.name for key, volume in self.volumes.items()}
        volumes, tmpfs = mounts(service.get("volumes") or [], volume_names, f"{where}.volumes")
        extra_tmpfs = service.get("tmpfs") or []
        for mount in [extra_tmpfs] if isinstance(extra_tmpfs, str) else extra_tmpfs:
            target, _, options = str(mount).partition(":")
            if target in tmpfs or any(volume.target == target for volume in volumes):
                raise ComposeError(f"{where}.tmpfs: {target!r} is mounted twice")
            tmpfs[target] = options
        ports = convert.ports(service.get("ports") or [], f"{where}.ports")
        network_mode, networks = self._networking(where.removeprefix("services."), service, where)
        if ports and network_mode is not None:  # the engine would drop them without a word
            raise ComposeError(
                f"{where}.ports: not with network_mode {network_mode} (with host, the "
                "container listens on the host's ports itself)"
            )
        restart, health = service.get("restart"), service.get("healthcheck")
        return ContainerSettings(
            env=self._environment(service, where),
            volumes=volumes,
            tmpfs=tmpfs,
            ports=ports,
            # Compose's default is no: the engine restarts nothing the file did not ask for.
            restart_policy=convert.restart(restart or "no", f"{where}.restart"),
            resources=convert.resources(service, where),
            user=_text(service.get("user")),
            entrypoint=convert.words(service.get("entrypoint"), f"{where}.entrypoint"),
            command=convert.words(service.get("command"), f"{where}.command"),
            labels=_pairs(service, "labels", where),
            network_mode=network_mode,
            networks=networks,
            cap_add=_words_or_none(service.get("cap_add")),
            cap_drop=_words_or_none(service.get("cap_drop")),
            working_dir=_text(service.get("working_dir")),
            hostname=_text(service.get("hostname")),
            stop_signal=_text(service.get("stop_signal")),
            read_only=convert.boolean(service.get("read_only"), f"{where}.read_only"),
            init=convert.boolean(service.get("init"), f"{where}.init"),
            healthcheck=None
            if health is None
            else convert.healthcheck(health, f"{where}.healthcheck"),
            ulimits=convert.ulimits(service.get("ulimits") or {}, f"{where}.ulimits"),
            extra_hosts=convert.extra_hosts(service.get("extra_hosts"), f"{where}.extra_hosts"),
            sysctls=_pairs(service, "sysctls", where),
            logging=convert.logging(service.get("logging") or {}, f"{where}.logging"),
        )

    def _environment(self, service: Mapping[str, Any], where: str) -> dict[str, str]:
        """env_file first, in order, then environment over them."""
        env: dict[str, str] = {}
        files = service.get("env_file")
        for item in [files] if isinstance(files, str | dict) else files or []:
            entry = item if isinstance(item, dict) else {"path": item}
            path = self.directory / str(entry["path"])
            required = convert.boolean(entry.get("required", True), f"{where}.env_file")
            if not path.is_file() and required is False:
                continue
            env.update(read_env_file(path, self.environ))
        env.update(convert.environment(service.get("environment"), self.environ, where))
        return env

    def _networking(
        self, member: str, service: Mapping[str, Any], where: str
    ) -> tuple[Any, tuple[NetworkAttachment, ...]]:
        mode = service.get("network_mode")
        joined = service.get("networks")
        if mode is not None:
            if mode not in ("host", "none"):
                raise ComposeError(
                    f"{where}.network_mode: {mode!r}: host or none (or networks: for the "
                    "app's own networks)"
                )
            if joined:
                raise ComposeError(f"{where}: network_mode and networks: give one of them")
            return mode, ()
        if not joined:
            self.default_network = True
            return None, (NetworkAttachment(name=f"{self.app}_default", aliases=(member,)),)
        entries = joined if isinstance(joined, dict) else dict.fromkeys(joined)
        attachments = []
        for key, settings in entries.items():
            network = self.networks.get(key)
            if network is None and key == "default":
                self.default_network = True
                network = NamedNetwork(name=f"{self.app}_default")
            if network is None:
                raise ComposeError(f"{where}.networks: {key!r} is not declared under networks:")
            # As with Compose, the service's name is always an alias: members find each
            # other by it (db:5432).
            extra = [str(a) for a in (settings or {}).get("aliases") or () if str(a) != member]
            aliases = (member, *extra)
            attachments.append(NetworkAttachment(name=network.name, aliases=aliases))
        return None, tuple(attachments)


def _member_health(service: Mapping[str, Any], where: str) -> HealthCheck | None:
    """The member's ``x-fleetwave: {health: ...}``: Fleetwave's probe (http, tcp, exec or
    docker, with its timings, as in a service's spec) in place of the healthcheck's."""
    block = service.get(EXTENSION)
    if block is None:
        return None
    here = f"{where}.{EXTENSION}"
    if not isinstance(block, Mapping):
        raise ComposeError(f"{here}: a mapping (health)")
    for key in block:
        if key != "health":
            raise ComposeError(f"{here}.{key}: not a member's setting (health is)")
    if "health" not in block:
        raise ComposeError(f"{here}: give health (Fleetwave's probe), or leave the block out")
    try:
        return HealthCheck.model_validate(block["health"])
    except ValidationError as exc:
        raise ComposeError(f"{here}.health: {summarise_invalid(exc)}") from None


def _health(settings: ContainerSettings) -> HealthCheck | None:
    """A member with a healthcheck is healthy when the engine says so, given the time
    the engine takes to say it: start period, then every try (interval and timeout) of
    the retries, Docker's defaults where the file gives none."""
    check = settings.healthcheck
    if check is None or check.test[0] == "NONE":
        return None
    tries = (check.retries if check.retries is not None else 3) + 1
    each = (check.interval or 30.0) + (check.timeout or 30.0)
    deadline = (check.start_period or 0.0) + each * tries + HEALTH_SLACK
    return HealthCheck(probe=DockerHealthProbe(), healthy_deadline=max(deadline, 60.0))


def _check_dependencies(members: list[Member]) -> None:
    names = [member.name for member in members]
    for member in members:
        for dependency in member.depends_on:
            if dependency.member not in names:
                raise ComposeError(
                    f"services.{member.name}.depends_on: {dependency.member!r} is not a "
                    "service of this file"
                )
    try:
        start_order(AppSpec.model_construct(name="-", members=tuple(members)))
    except ValueError as exc:
        raise ComposeError(f"services: {exc}") from None


def _health_where_awaited(members: list[Member]) -> list[Member]:
    """A member another waits to be healthy is probed by the engine's health even when
    the file gives it no healthcheck: its image's own HEALTHCHECK is the one."""
    awaited = {d.member for m in members for d in m.depends_on if d.condition is Condition.HEALTHY}
    probed = HealthCheck(probe=DockerHealthProbe())
    return [
        m.model_copy(update={"spec": m.spec.model_copy(update={"health": probed})})
        if m.name in awaited and m.spec.health is None
        else m
        for m in members
    ]


def _dependencies(service: Mapping[str, Any]) -> tuple[Dependency, ...]:
    found = service.get("depends_on") or []
    if isinstance(found, list):
        return tuple(Dependency(member=str(name)) for name in found)
    return tuple(
        Dependency(member=str(name), **(settings or {})) for name, settings in found.items()
    )


def _pairs(service: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    found = convert.key_values(service.get(key), "=", f"{where}.{key}")
    return {name: value or "" for name, value in found.items()}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _words_or_none(value: object) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(item) for item in value)  # type: ignore[attr-defined]
