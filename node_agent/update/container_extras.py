"""The container settings Compose files bring (apps), onto an engine create config:
working directory, hostname, stop signal, read-only root, init, the container's own
healthcheck, tmpfs mounts, ulimits, extra hosts, sysctls, logging and networks. Each one
the spec leaves unset keeps what the config already has. Pure: dicts in, dicts out.
"""

from __future__ import annotations

from typing import Any

from protocol.spec import ContainerHealthcheck, ContainerSettings

Config = dict[str, Any]
NANOSECONDS = 1_000_000_000


def apply_extras(config: Config, host_config: Config, settings: ContainerSettings) -> None:
    for key, value in (
        ("WorkingDir", settings.working_dir),
        ("Hostname", settings.hostname),
        ("StopSignal", settings.stop_signal),
    ):
        if value is not None:
            config[key] = value
    if settings.healthcheck is not None:
        config["Healthcheck"] = engine_healthcheck(settings.healthcheck)
    if settings.read_only is not None:
        host_config["ReadonlyRootfs"] = settings.read_only
    if settings.init is not None:
        host_config["Init"] = settings.init
    if settings.tmpfs:
        host_config["Tmpfs"] = {**(host_config.get("Tmpfs") or {}), **settings.tmpfs}
    if settings.ulimits:
        named = {u.name: {"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in settings.ulimits}
        kept = [u for u in host_config.get("Ulimits") or () if u.get("Name") not in named]
        host_config["Ulimits"] = kept + list(named.values())
    if settings.extra_hosts:
        host_config["ExtraHosts"] = list(settings.extra_hosts)
    if settings.sysctls:
        host_config["Sysctls"] = {**(host_config.get("Sysctls") or {}), **settings.sysctls}
    if settings.logging is not None:
        host_config["LogConfig"] = {
            "Type": settings.logging.driver,
            "Config": dict(settings.logging.options),
        }
    if settings.networks:  # a bridge: ports are published, to a host port or any free one
        host_config["NetworkMode"] = settings.networks[0].name
        config["NetworkingConfig"] = first_network_endpoint(settings)
        if settings.ports:
            host_config["PortBindings"] = port_bindings(settings)


def port_bindings(settings: ContainerSettings) -> Config:
    """One list per container port: Compose may publish one port on several host ports
    (``80:80`` and ``8080:80``), and a dict keyed by the port alone would keep the last."""
    bindings: Config = {}
    for p in settings.ports:
        host_port = "" if p.host_port is None else str(p.host_port)
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append({"HostPort": host_port})
    return bindings


def engine_healthcheck(check: ContainerHealthcheck) -> Config:
    """The engine's form: durations in nanoseconds, 0 for "the engine's default"."""

    def nanoseconds(seconds: float | None) -> int:
        return 0 if seconds is None else int(seconds * NANOSECONDS)

    return {
        "Test": list(check.test),
        "Interval": nanoseconds(check.interval),
        "Timeout": nanoseconds(check.timeout),
        "Retries": check.retries or 0,
        "StartPeriod": nanoseconds(check.start_period),
    }


def first_network_endpoint(settings: ContainerSettings) -> Config:
    """NetworkingConfig for create: the first network, with its aliases (an engine older
    than API 1.44 takes one network at create; the others are connected before start)."""
    first = settings.networks[0]
    return {"EndpointsConfig": {first.name: {"Aliases": list(first.aliases) or None}}}
