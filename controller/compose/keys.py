"""What of the Compose Specification Fleetwave does, key by key; anything else in a file
is refused with its path, never silently ignored. ``x-`` extensions are always allowed
(they are the file's own); ``x-fleetwave`` is Fleetwave's: at the top, selector and
update policy; in a service, its health (controller/compose/project.py checks both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.errors import ComposeError


@dataclass(frozen=True)
class ListOf:
    """A list whose mapping items (the long syntax) may have these keys."""

    keys: Tree


ANY = None
"""Whatever the schema allows below this key."""
Tree = dict[str, "Tree | ListOf | None"]

HEALTHCHECK: Tree = dict.fromkeys(
    ("test", "interval", "timeout", "retries", "start_period", "disable")
)  # not start_interval: it needs Docker Engine API 1.44 (Docker 25); hosts run older ones
SERVICE: Tree = {
    "image": ANY,
    "command": ANY,
    "entrypoint": ANY,
    "environment": ANY,
    "env_file": ListOf(dict.fromkeys(("path", "required"))),
    "volumes": ListOf(
        {
            "type": ANY,
            "source": ANY,
            "target": ANY,
            "read_only": ANY,
            "tmpfs": dict.fromkeys(("size", "mode")),
        }
    ),
    "tmpfs": ANY,
    "ports": ListOf(dict.fromkeys(("target", "published", "protocol"))),
    "network_mode": ANY,
    "networks": {"*": {"aliases": ANY}},
    "depends_on": {"*": dict.fromkeys(("condition", "restart", "required"))},
    "healthcheck": HEALTHCHECK,
    "restart": ANY,
    "user": ANY,
    "working_dir": ANY,
    "labels": ANY,
    "cap_add": ANY,
    "cap_drop": ANY,
    "ulimits": ANY,
    "mem_limit": ANY,
    "cpus": ANY,
    "deploy": {"resources": {"limits": dict.fromkeys(("cpus", "memory", "pids"))}},
    "stop_signal": ANY,
    "stop_grace_period": ANY,
    "read_only": ANY,
    "extra_hosts": ANY,
    "logging": {"driver": ANY, "options": ANY},
    "hostname": ANY,
    "init": ANY,
    "sysctls": ANY,
}
TOP_LEVEL: Tree = {
    "name": ANY,
    "version": ANY,  # obsolete; Compose ignores it, and so do we
    "services": {"*": SERVICE},
    "volumes": {"*": dict.fromkeys(("name", "driver", "driver_opts", "labels", "external"))},
    "networks": {
        "*": dict.fromkeys(("name", "driver", "driver_opts", "labels", "internal", "external"))
    },
}
WHY_NOT = {
    "build": "Fleetwave deploys images, it does not build them: build and push the image, "
    "then name it in image:",
    "container_name": "Fleetwave names each member's container <app>-<member> itself",
    "secrets": "not supported yet: use config files (fleetctl config) or environment",
    "configs": "not supported yet: use config files (fleetctl config)",
    "profiles": "every service of an app runs on every host it is declared for",
    "extends": "not supported: write the service out in full",
    "include": "not supported: one file per app",
    "start_interval": "not supported: it needs Docker Engine API 1.44 (Docker 25) on every host",
}


def refuse_unsupported(document: dict[str, Any]) -> None:
    """ComposeError naming the first key Fleetwave does not do, with its path."""
    _walk(document, TOP_LEVEL, "")


def _walk(node: object, allowed: Tree | ListOf | None, path: str) -> None:
    if allowed is None:
        return
    if isinstance(allowed, ListOf):
        if isinstance(node, list):
            for n, item in enumerate(node):
                _walk(item, allowed.keys, f"{path}[{n}]")
        return
    if not isinstance(node, dict):
        return  # the short syntax; the schema has checked it
    for key, value in node.items():
        here = f"{path}.{key}" if path else key
        if key.startswith("x-"):
            continue
        below = allowed.get(key, allowed.get("*", KeyError))
        if below is KeyError:
            raise ComposeError(f"{here}: {WHY_NOT.get(key, 'not supported by Fleetwave')}")
        _walk(value, below, here)  # type: ignore[arg-type]
