"""A Compose service's volumes: named volumes of the project, absolute bind mounts and
tmpfs mounts. Refused, each with the reason: anonymous volumes (a replaced container
would get a new, empty one: the data would be lost at the first update) and relative
or home-relative bind paths (they would name the controller's disk, not the host's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.compose.container import boolean
from controller.compose.units import size_bytes
from controller.errors import ComposeError
from protocol.spec import VolumeMount

BIND_OPTIONS = {"ro", "rw"}
"""Of the short syntax's modes; SELinux relabelling (z, Z) and nocopy are refused by
the generic message, never dropped."""


def mounts(
    value: list[Any], volume_names: Mapping[str, str], where: str
) -> tuple[tuple[VolumeMount, ...], dict[str, str]]:
    """The mounts and the tmpfs mounts; ``volume_names`` maps the file's volume names to
    the engine's."""
    found: list[VolumeMount] = []
    tmpfs: dict[str, str] = {}
    for n, item in enumerate(value):
        here = f"{where}[{n}]"
        kind, source, target, read_only, options = (
            _long(item, here) if isinstance(item, Mapping) else _short(str(item), here)
        )
        if not target.startswith("/"):
            raise ComposeError(f"{here}: the target {target!r} must be an absolute path")
        if target in tmpfs or any(mount.target == target for mount in found):
            raise ComposeError(f"{here}: {target!r} is mounted twice")
        if kind == "tmpfs":
            tmpfs[target] = options
            continue
        if not source:
            raise ComposeError(
                f"{here}: an anonymous volume is new and empty in every replaced container; "
                "name it (and declare it under volumes:)"
            )
        if kind == "bind" and not source.startswith("/"):
            raise ComposeError(
                f"{here}: bind path {source!r} is relative to the controller's disk; "
                "give the absolute path on the hosts"
            )
        if kind == "volume":
            if source not in volume_names:
                raise ComposeError(f"{here}: volume {source!r} is not declared under volumes:")
            source = volume_names[source]
        found.append(VolumeMount(kind=kind, source=source, target=target, read_only=read_only))
    return tuple(found), tmpfs


def _short(text: str, where: str) -> tuple[str, str, str, bool, str]:
    parts = text.split(":")
    if len(parts) == 1:
        return "volume", "", parts[0], False, ""
    if len(parts) > 3:
        raise ComposeError(f"{where}: {text!r} is not SOURCE:TARGET[:MODE]")
    source, target = parts[0], parts[1]
    modes = set(parts[2].split(",")) if len(parts) == 3 else set()
    unknown = modes - BIND_OPTIONS
    if unknown:
        raise ComposeError(f"{where}: mount option {sorted(unknown)[0]!r} is not supported")
    if modes == BIND_OPTIONS:
        raise ComposeError(f"{where}: ro and rw: give one of them")
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return kind, source, target, "ro" in modes, ""


def _long(item: Mapping[str, Any], where: str) -> tuple[str, str, str, bool, str]:
    kind = str(item.get("type") or "volume")
    if kind not in ("volume", "bind", "tmpfs"):
        raise ComposeError(f"{where}.type: {kind!r}: volume, bind or tmpfs")
    options = ""
    if kind != "tmpfs" and item.get("tmpfs") is not None:
        raise ComposeError(f"{where}.tmpfs: only for a mount of type tmpfs")
    read_only = bool(boolean(item.get("read_only"), f"{where}.read_only"))
    if kind == "tmpfs":
        if item.get("source") is not None:
            raise ComposeError(f"{where}.source: not supported for a tmpfs mount")
        settings = item.get("tmpfs") or {}
        parts = ["ro"] if read_only else []  # the engine's tmpfs option for it
        if settings.get("size") is not None:
            parts.append(f"size={size_bytes(settings['size'], f'{where}.tmpfs.size')}")
        if settings.get("mode") is not None:  # written in octal digits: 1777
            mode = str(settings["mode"])
            if not mode.isdigit() or set(mode) & {"8", "9"}:
                raise ComposeError(f"{where}.tmpfs.mode: {mode!r} is not an octal mode")
            parts.append(f"mode={mode}")
        options = ",".join(parts)
    source = "" if item.get("source") is None else str(item["source"])
    return kind, source, str(item.get("target") or ""), read_only, options
