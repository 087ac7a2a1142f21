"""The app each host last applied, on disk: what the heartbeat reports it runs."""

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

    def put(self, app: AppSpec) -> None:
        write_json(self._path(app.name), app.model_dump(mode="json"))

    def get(self, app: str) -> AppSpec | None:
        value: Any = read_json(self._path(app))
        if value and "app" in value:  # (an agent of one development version wrapped it)
            value = value["app"]
        return AppSpec.model_validate(value) if value else None

    def names(self) -> list[str]:
        return sorted(path.stem for path in self._dir.glob("*.json"))

    def forget(self, app: str) -> None:
        self._path(app).unlink(missing_ok=True)
