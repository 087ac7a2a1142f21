"""The app each host last applied, on disk: what the heartbeat reports it runs; and
which of its members completed (one-shot jobs that ended with 0 when they were last
started by an update), so that one stopped by hand later is not taken for done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.state_files import read_json, write_json
from protocol.app import AppSpec


class AppStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, app: str) -> Path:
        return self._dir / f"{app}.json"

    def put(self, app: AppSpec, completed: set[str]) -> None:
        document = {"app": app.model_dump(mode="json"), "completed": sorted(completed)}
        write_json(self._path(app.name), document)

    def _read(self, app: str) -> dict[str, Any] | None:
        value = read_json(self._path(app))
        if not value:
            return None
        if "members" in value:  # written before completions were recorded: the app alone
            return {"app": value, "completed": []}
        return dict(value)

    def get(self, app: str) -> AppSpec | None:
        value = self._read(app)
        return AppSpec.model_validate(value["app"]) if value else None

    def completed(self, app: str) -> set[str]:
        """The members (by member name) that completed when last started."""
        value = self._read(app)
        return set(value["completed"]) if value else set()

    def names(self) -> list[str]:
        return sorted(path.stem for path in self._dir.glob("*.json"))

    def forget(self, app: str) -> None:
        self._path(app).unlink(missing_ok=True)
