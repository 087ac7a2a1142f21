"""The agent's own health, as a small file in its state directory.

The heartbeat loop writes it after every beat; `fleet-agent health` reads it. A container
HEALTHCHECK, a systemd watchdog script or a person can then tell whether the agent is
connected and alive without speaking NATS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from protocol.version import fleetwave_version

HEALTH_FILE = "health.json"
STALE_AFTER_BEATS = 3
"""A record older than this many heartbeat intervals means the agent is stuck or gone."""


def health_path(state_dir: Path) -> Path:
    return state_dir / HEALTH_FILE


def write_health(state_dir: Path, connected: bool, interval: float, instance: str = "") -> None:
    """Replace the record (temp file and rename, so a reader never sees half of one).

    Not fsynced: it is rewritten every beat, and after a crash its age tells the truth.
    """
    record = {
        "connected": connected,
        "beat_at": time.time(),
        "interval": interval,
        "version": fleetwave_version(),
        "pid": os.getpid(),
        "instance": instance,
    }
    path = health_path(state_dir)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(record))
    os.replace(temp, path)


def read_health(state_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(health_path(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def unhealthy_because(record: dict[str, Any] | None, now: float) -> str | None:
    """Why the agent is not healthy, or None when it is."""
    if record is None:
        return "no heartbeat recorded yet"
    try:
        beat_at = float(record["beat_at"])
        interval = float(record["interval"])
        connected = bool(record["connected"])
    except (KeyError, TypeError, ValueError):
        return "the health record is unreadable"
    age = now - beat_at
    if age > STALE_AFTER_BEATS * interval:
        return f"last heartbeat {age:.0f}s ago (every {interval:g}s)"
    if not connected:
        return "not connected to NATS (last heartbeat not written)"
    return None
