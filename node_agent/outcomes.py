"""Recorded outcomes per command id, so a retried command replies without running twice."""

from __future__ import annotations

import time
from pathlib import Path

from node_agent.state_files import write_atomically
from protocol.codec import decode, encode
from protocol.models import AnyMessage, Reply

KEEP_SECONDS = 24 * 3600


class OutcomeStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, command_id: str) -> Path:
        # Command ids come from the wire: never let one name a path outside the store.
        safe = "".join(c for c in command_id if c.isalnum() or c in "-_")[:128]
        return self._dir / f"{safe}.msgpack"

    def get(self, command_id: str) -> AnyMessage | None:
        try:
            return decode(self._path(command_id).read_bytes())
        except FileNotFoundError:
            return None

    def put(self, command_id: str, reply: Reply) -> None:
        write_atomically(self._path(command_id), encode(reply))

    def prune(self, now: float | None = None) -> int:
        cutoff = (now if now is not None else time.time()) - KEEP_SECONDS
        removed = 0
        for path in self._dir.glob("*.msgpack"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
