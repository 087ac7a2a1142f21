"""The handoff's notes, in the state directory both agents mount.

A host may not subscribe to another party's subjects, so the two agents of one host
speak through files: the running agent writes the request, the successor says it is
ready, the running agent says it released the host's commands, the successor says it took
them over and, after its probation, that it is done. Each note is written whole (temp
file and rename)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from node_agent.state_files import write_atomically

REQUEST, READY, RELEASED, TAKEN, DONE = "request", "ready", "released", "taken", "done"


class HandoffNotes:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "handoff"

    def write(self, note: str, **fields: Any) -> None:
        write_atomically(self.directory / f"{note}.json", json.dumps(fields).encode())

    def read(self, note: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.directory / f"{note}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def has(self, note: str) -> bool:
        return (self.directory / f"{note}.json").exists()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def handoff_going_on(notes: HandoffNotes, made_for: str | None) -> str | None:
    """The handoff this agent's container was made for (FLEET_HANDOFF), if it is still
    going on: the variable stays in a successor's settings after its handoff is done,
    and an old agent brought back has a handoff of its own, or none. Past its commit
    point (done) a handoff is over: what is left is only to answer it."""
    if notes.has(DONE):
        return None
    asked = (notes.read(REQUEST) or {}).get("operation_id")
    return made_for if asked is not None and asked == made_for else None
