"""The on-disk journal of each service's update in progress.

Each phase is recorded (and fsynced) *before* it happens, so an agent killed at any
point knows on restart what it was doing, which container is which, and what the old
container looked like. One record per service: the agent runs one operation per service
at a time. A human-readable line per phase is also appended to ``<service>.log``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from node_agent.state_files import read_json, write_json
from protocol.models import UpdatePhase, utc_now


class Journal:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, service: str) -> Path:
        return self._dir / f"{service}.json"

    def begin(self, service: str, record: dict[str, Any]) -> None:
        write_json(self._path(service), {**record, "phase": None, "phases": []})

    def record(self, service: str, phase: UpdatePhase, **updates: Any) -> dict[str, Any]:
        entry = read_json(self._path(service))
        if entry is None:
            raise FileNotFoundError(f"no journal open for {service}")
        at: datetime = utc_now()
        entry.update(updates)
        entry["phase"] = phase.value
        entry["phases"].append([phase.value, at.isoformat()])
        write_json(self._path(service), entry)
        with (self._dir / f"{service}.log").open("a") as log:
            log.write(f"{at.isoformat()} {entry.get('operation_id')} {phase.value}\n")
        return dict(entry)

    def get(self, service: str) -> dict[str, Any] | None:
        return read_json(self._path(service))

    def finish(self, service: str) -> None:
        self._path(service).unlink(missing_ok=True)

    def phase_logs(self) -> list[Path]:
        """Each service's human-readable log of phases (kept trimmed by housekeeping)."""
        return sorted(self._dir.glob("*.log"))

    def open_entries(self) -> list[dict[str, Any]]:
        """Operations that started and never finished (the agent died during them)."""
        entries = []
        for path in sorted(self._dir.glob("*.json")):
            entry = read_json(path)
            if entry is not None:
                entries.append(entry)
        return entries
