"""What each managed service runs now and ran before (for Rollback), on disk."""

from __future__ import annotations

from pathlib import Path

from node_agent.state_files import read_json, write_json
from protocol.spec import ServiceSpec


class ServiceStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, service: str) -> Path:
        return self._dir / f"{service}.json"

    def current(self, service: str) -> ServiceSpec | None:
        return self._load(service, "current")

    def previous(self, service: str) -> ServiceSpec | None:
        return self._load(service, "previous")

    def _load(self, service: str, which: str) -> ServiceSpec | None:
        record = read_json(self._path(service)) or {}
        value = record.get(which)
        return ServiceSpec.model_validate(value) if value else None

    def record_update(self, new: ServiceSpec, old: ServiceSpec | None) -> None:
        write_json(
            self._path(new.name),
            {
                "current": new.model_dump(mode="json"),
                "previous": old.model_dump(mode="json") if old else None,
            },
        )

    def forget(self, service: str) -> None:
        """The service was removed from this host: it is no longer managed or reported."""
        self._path(service).unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(path.stem for path in self._dir.glob("*.json"))
