"""One Compose service's container settings, as Fleetwave's ContainerSettings.

Each function takes the service's (interpolated, schema-valid) value and the path it was
found at, for the error, and returns the settings' form of it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from controller.compose.units import duration_seconds, size_bytes
from controller.errors import ComposeError
from protocol.spec import (
    ContainerHealthcheck,
    LogSettings,
    PortMapping,
    Resources,
    RestartPolicy,
    Ulimit,
)

HEALTHCHECK_DURATIONS = ("interval", "timeout", "start_period")


def words(value: object, where: str) -> tuple[str, ...] | None:
    """command and entrypoint: a list as it is, a string split as a shell would
    (without running one); null keeps the image's."""
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        raise ComposeError(f"{where}: cannot be split into words ({exc})") from None


def boolean(value: object, where: str) -> bool | None:
    """A YAML boolean, or the text of one (an interpolated value is text)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ComposeError(f"{where}: not true or false")


def scalar_text(value: object) -> str:
    """A YAML scalar as Compose writes it into a container: true, 1.5, 8080."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def key_values(value: object, separator: str, where: str) -> dict[str, str | None]:
    """labels, sysctls, environment: a mapping, or a list of KEY<separator>VALUE (a bare
    KEY has no value: None)."""
    if isinstance(value, Mapping):
        return {str(k): None if v is None else scalar_text(v) for k, v in value.items()}
    found: dict[str, str | None] = {}
    for item in value or ():  # type: ignore[attr-defined]
        key, has_value, text = str(item).partition(separator)
        if not key:  # (the value is not shown: it may be a secret)
            raise ComposeError(f"{where}: an entry has no name before {separator!r}")
        found[key] = text if has_value else None
    return found


def environment(value: object, environ: Mapping[str, str], where: str) -> dict[str, str]:
    """A variable without a value takes the environment's, or is left out."""
    found = key_values(value, "=", where)
    return {
        k: environ[k] if v is None else v for k, v in found.items() if v is not None or k in environ
    }


def ports(value: list[Any], where: str) -> tuple[PortMapping, ...]:
    mappings: list[PortMapping] = []
    for n, item in enumerate(value):
        here = f"{where}[{n}]"
        if isinstance(item, Mapping):
            target, published = item.get("target"), item.get("published")
            protocol = str(item.get("protocol") or "tcp")
        else:
            text = str(item)
            text, _, protocol = text.partition("/")
            parts = text.split(":")
            if len(parts) > 2:
                raise ComposeError(f"{here}: {item!r}: a host address is not supported")
            target = parts[-1]
            published = parts[0] if len(parts) == 2 else None
            protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            raise ComposeError(f"{here}: protocol {protocol!r}: tcp or udp")
        mapping = PortMapping(
            container_port=_port(target, here),
            host_port=None if published in (None, "") else _port(published, here),
            protocol=protocol,
        )
        _check_unique(mapping, mappings, here)
        mappings.append(mapping)
    return tuple(mappings)


def _check_unique(mapping: PortMapping, earlier: list[PortMapping], where: str) -> None:
    """One host port serves one mapping; the engine would refuse the second at start. One
    container port may be published on several host ports."""
    for other in earlier:
        same_host_port = mapping.host_port is not None and other.host_port == mapping.host_port
        if other.protocol == mapping.protocol and same_host_port:
            raise ComposeError(
                f"{where}: host port {mapping.host_port}/{mapping.protocol} is published twice"
            )


def _port(value: object, where: str) -> int:
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ComposeError(f"{where}: {text!r} is not a port (ranges are not supported)")
    return int(text)


def restart(value: object, where: str) -> RestartPolicy:
    name, _, retries = str(value).partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped") or (
        retries and (name != "on-failure" or not retries.isdigit())
    ):
        raise ComposeError(f"{where}: {value!r}: no, always, on-failure[:N] or unless-stopped")
    return RestartPolicy(name=name, max_retries=int(retries or 0))


def healthcheck(value: Mapping[str, Any], where: str) -> ContainerHealthcheck | None:
    """None when the service leaves the image's own; ("NONE",) when it disables it."""
    if boolean(value.get("disable"), f"{where}.disable"):
        return ContainerHealthcheck(test=("NONE",))
    test = value.get("test")
    if test is None:
        if any(key in value for key in (*HEALTHCHECK_DURATIONS, "retries")):
            raise ComposeError(f"{where}: timing without a test: give test: as well")
        return None
    if isinstance(test, str):
        test_words: tuple[str, ...] = ("CMD-SHELL", test)
    else:
        test_words = tuple(str(word) for word in test)
        if not test_words or test_words[0] not in ("NONE", "CMD", "CMD-SHELL"):
            raise ComposeError(f"{where}.test: a list starts with NONE, CMD or CMD-SHELL")
    timing = {
        key: duration_seconds(value[key], f"{where}.{key}")
        for key in HEALTHCHECK_DURATIONS
        if value.get(key) is not None
    }
    retries = value.get("retries")
    return ContainerHealthcheck(
        test=test_words,
        retries=None if retries is None else integer(retries, f"{where}.retries"),
        **timing,
    )


def integer(value: object, where: str) -> int:
    """A number the file may give as text (an interpolated value is text)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        raise ComposeError(f"{where}: {text!r} is not a whole number")
    return int(text)


def ulimits(value: Mapping[str, Any], where: str) -> tuple[Ulimit, ...]:
    found = []
    for name, limit in value.items():
        here = f"{where}.{name}"
        if isinstance(limit, Mapping):
            soft, hard = integer(limit["soft"], here), integer(limit["hard"], here)
        else:
            soft = hard = integer(limit, here)
        if soft > hard:
            raise ComposeError(f"{where}.{name}: soft limit {soft} above hard limit {hard}")
        found.append(Ulimit(name=name, soft=soft, hard=hard))
    return tuple(found)


def resources(service: Mapping[str, Any], where: str) -> Resources:
    """mem_limit and cpus, or deploy.resources.limits; both only if they agree."""
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    memory = _either(service, "mem_limit", limits, "memory", where, size_bytes)
    cpus = _either(service, "cpus", limits, "cpus", where, _number)
    pids = limits.get("pids")
    return Resources(memory_bytes=memory, cpus=cpus, pids_limit=None if pids is None else int(pids))


def _either(
    service: Mapping[str, Any], key: str, limits: Mapping[str, Any], limit: str, where: str,
    convert: Any,
) -> Any:  # fmt: skip
    plain = None if service.get(key) is None else convert(service[key], f"{where}.{key}")
    deployed = None if limits.get(limit) is None else convert(limits[limit], where)
    if plain is not None and deployed is not None and plain != deployed:
        raise ComposeError(
            f"{where}: {key} and deploy.resources.limits.{limit} differ; give one of them"
        )
    return plain if plain is not None else deployed


def _number(value: object, where: str) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise ComposeError(f"{where}: {value!r} is not a number") from None


def extra_hosts(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, Mapping):
        pairs = [
            (str(name), str(address))
            for name, addresses in value.items()
            for address in (addresses if isinstance(addresses, list) else [addresses])
        ]
    else:
        pairs = []
        for item in value or ():  # type: ignore[attr-defined]
            text = str(item)
            name, separator, address = text.partition("=")
            if not separator:
                name, separator, address = text.partition(":")
            if not separator or not name or not address:
                raise ComposeError(f"{where}: {text!r} is not name=address")
            pairs.append((name, address))
    return tuple(f"{name}:{address}" for name, address in pairs)


def logging(value: Mapping[str, Any], where: str) -> LogSettings | None:
    if not value.get("driver"):
        if value.get("options"):
            raise ComposeError(f"{where}: options without a driver: give driver: as well")
        return None
    options = {str(k): scalar_text(v) for k, v in (value.get("options") or {}).items()}
    return LogSettings(driver=str(value["driver"]), options=options)
