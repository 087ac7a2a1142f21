"""The new container's create config: the old one's settings, the new image's defaults.

Like watchtower, the old container's ``inspect`` minus the old image's own defaults is
what the operator chose; that is kept, the new image supplies its defaults, and the
spec's explicit settings go on top. HostConfig (mounts, limits, restart policy, network,
ulimits, log driver, restart policy, network mode, capabilities...) carries over whole,
except privileged mode and host namespaces, which are always the spec's.
Pure: dicts in, dicts out.
"""

from __future__ import annotations

import copy
from typing import Any

from node_agent.runtime import AGENT_LABEL, MANAGED_LABEL, SERVICE_LABEL
from node_agent.update.container_extras import apply_extras
from protocol.spec import (
    COLOUR_ENV,
    COLOURS,
    ContainerSettings,
    Resources,
    RestartPolicy,
    ServiceSpec,
    VolumeMount,
)

IMAGE_LABEL = "io.fleetwave.image"
"""The reference the operator asked for (tag and digest), which inspect no longer shows."""
COLOUR_LABEL = "io.fleetwave.colour"
"""Blue-green: which colour a container is; absent on a service never run that way."""

Config = dict[str, Any]
NEW_NETWORK_MODE = "host"
NEW_RESTART_POLICY = RestartPolicy(name="unless-stopped")
"""What a service's first container gets where the spec leaves these unset."""


def managed_labels(spec: ServiceSpec, agent_id: str) -> dict[str, str]:
    return {
        MANAGED_LABEL: "1",
        SERVICE_LABEL: spec.name,
        AGENT_LABEL: agent_id,
        IMAGE_LABEL: spec.image,
    }


def config_from_spec(spec: ServiceSpec, image: str, agent_id: str) -> tuple[Config, Config]:
    """Create config for a service that has no container yet."""
    config: Config = {"Image": image, "Env": [], "Labels": {}}
    host_config: Config = {}
    _apply_spec(config, host_config, spec, agent_id)
    return config, host_config


def derive_config(
    old: Config, old_image: Config | None, spec: ServiceSpec, image: str, agent_id: str
) -> tuple[Config, Config]:
    """Create config for replacing container ``old`` (its inspect) with ``image``."""
    config: Config = copy.deepcopy(old["Config"])
    host_config: Config = copy.deepcopy(old["HostConfig"])
    defaults: Config = (old_image or {}).get("Config") or {}
    config["Image"] = image
    for key, empty in (
        ("Cmd", None),
        ("Entrypoint", None),
        ("WorkingDir", ""),
        ("User", ""),
        ("Healthcheck", None),
        ("StopSignal", None),
    ):
        if config.get(key) == defaults.get(key):
            config[key] = empty
    image_env = set(defaults.get("Env") or ())
    config["Env"] = [item for item in config.get("Env") or () if item not in image_env]
    image_labels = defaults.get("Labels") or {}
    config["Labels"] = {
        key: value
        for key, value in (config.get("Labels") or {}).items()
        if image_labels.get(key) != value
    }
    for key in ("Volumes", "ExposedPorts"):
        image_side = defaults.get(key) or {}
        kept = {k: v for k, v in (config.get(key) or {}).items() if k not in image_side}
        config[key] = kept or None
    _apply_spec(config, host_config, spec, agent_id)
    _keep_names(config, host_config, old)
    return config, host_config


def _keep_names(config: Config, host_config: Config, old: Config) -> None:
    """Keep a hostname and domain name the operator gave; drop the ones the engine made
    up (the container id's start) or took from the host (host networking, where
    passing them back conflicts)."""
    made_up = str(old.get("Id") or "")[:12]
    mode = str(host_config.get("NetworkMode") or "")
    shared = mode == "host" or mode.startswith("container:")
    if shared or config.get("Hostname") == made_up:
        config.pop("Hostname", None)
    if shared or not config.get("Domainname"):
        config.pop("Domainname", None)


def _apply_spec(config: Config, host_config: Config, spec: ServiceSpec, agent_id: str) -> None:
    settings = spec.container
    env = dict(item.split("=", 1) for item in config.get("Env") or () if "=" in item)
    env.update(settings.env)
    config["Env"] = [f"{key}={value}" for key, value in env.items()]
    config["Labels"] = {
        **(config.get("Labels") or {}),
        **settings.labels,
        **managed_labels(spec, agent_id),
    }
    # The colour label follows the environment the container gets (a colour's spec
    # sets it; a plain one keeps what the copy it replaces had).
    colour = env.get(COLOUR_ENV)
    if colour in COLOURS:
        config["Labels"][COLOUR_LABEL] = colour
    else:
        config["Labels"].pop(COLOUR_LABEL, None)
    if settings.user is not None:
        config["User"] = settings.user
    if settings.command is not None:
        config["Cmd"] = list(settings.command)
    if settings.entrypoint is not None:
        config["Entrypoint"] = list(settings.entrypoint)
    if settings.ports:
        exposed = dict(config.get("ExposedPorts") or {})
        exposed.update({f"{p.container_port}/{p.protocol}": {} for p in settings.ports})
        config["ExposedPorts"] = exposed
    _apply_host_settings(host_config, settings)
    apply_extras(config, host_config, settings)
    _apply_resources(host_config, settings.resources)
    if settings.volumes:
        _apply_volumes(host_config, settings.volumes)


def _apply_host_settings(host_config: Config, settings: ContainerSettings) -> None:
    """Network, security and restart policy: the spec's where it sets them."""
    if settings.network_mode is not None or not host_config.get("NetworkMode"):
        host_config["NetworkMode"] = settings.network_mode or NEW_NETWORK_MODE
    host_config["Privileged"] = settings.privileged
    if settings.cap_add is not None:
        host_config["CapAdd"] = list(settings.cap_add) or None
    if settings.cap_drop is not None:
        host_config["CapDrop"] = list(settings.cap_drop) or None
    host_config["PidMode"] = "host" if settings.host_pid else ""
    if settings.host_ipc:
        host_config["IpcMode"] = "host"
    elif host_config.get("IpcMode") == "host":
        host_config["IpcMode"] = "private"
    if host_config["NetworkMode"] in ("host", "none"):
        host_config["PortBindings"] = None  # meaningless there; a bridge keeps its own
    if settings.restart_policy is not None or not host_config.get("RestartPolicy"):
        policy = settings.restart_policy or NEW_RESTART_POLICY
        host_config["RestartPolicy"] = {
            "Name": policy.name,
            "MaximumRetryCount": policy.max_retries,
        }


def _apply_resources(host_config: Config, resources: Resources) -> None:
    if resources.memory_bytes is not None:
        host_config["Memory"] = resources.memory_bytes
    if resources.cpus is not None:
        host_config["NanoCpus"] = int(resources.cpus * 1e9)
        host_config["CpuQuota"] = 0
        host_config["CpuPeriod"] = 0
    if resources.pids_limit is not None:
        host_config["PidsLimit"] = resources.pids_limit


def _apply_volumes(host_config: Config, volumes: tuple[VolumeMount, ...]) -> None:
    """The spec's mounts replace whatever the container had at the same targets."""
    targets = {mount.target for mount in volumes}
    host_config["Binds"] = [
        bind for bind in host_config.get("Binds") or () if _bind_target(bind) not in targets
    ] or None
    mounts = [m for m in host_config.get("Mounts") or () if m.get("Target") not in targets]
    mounts += [
        {
            "Type": mount.kind,
            "Source": mount.source,
            "Target": mount.target,
            "ReadOnly": mount.read_only,
        }
        for mount in volumes
    ]
    host_config["Mounts"] = mounts


def _bind_target(bind: str) -> str:
    # "source:target[:options]"
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]
