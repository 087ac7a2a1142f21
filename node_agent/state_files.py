"""Crash-safe files in the agent's state directory: write to a temp file, fsync, rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_synced(path: Path, data: bytes, mode: int | None = None) -> None:
    """``data`` as the whole of ``path``, on disk (fsynced) when this returns. With
    ``mode``, the file has that mode from its first byte (a secret is never readable)."""
    if mode is None:
        handle = path.open("wb")
    else:
        path.unlink(missing_ok=True)  # a file left with looser bits is not reused
        handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
        os.fchmod(handle.fileno(), mode)  # the umask may have taken bits off
    with handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    write_synced(temp, data, mode)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=1, sort_keys=True, default=str).encode())


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
