"""Recorded outcomes per command id, so a retried command replies without running twice."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from node_agent.state_files import write_atomically
from protocol.codec import decode, encode
from protocol.models import AnyMessage, Reply

KEEP_SECONDS = 24 * 3600
"""An outcome is kept a day: far longer than any command's expiry and its retries."""


class OutcomeStore:
    def __init__(self, directory: Path, keep_seconds: float = KEEP_SECONDS) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._keep = keep_seconds

    def _path(self, command_id: str) -> Path:
        # Ids come from the wire: a hash names the file, so no id can reach outside the
        # store, be too long for the file system, or share a file with another id.
        digest = hashlib.sha256(command_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self._dir / f"{digest}.msgpack"

    def get(self, command_id: str) -> AnyMessage | None:
        try:
            return decode(self._path(command_id).read_bytes())
        except FileNotFoundError:
            return None

    def put(self, command_id: str, reply: Reply) -> None:
        write_atomically(self._path(command_id), encode(reply))

    def prune(self, now: float | None = None) -> int:
        """Remove outcomes older than the keep time; returns how many went."""
        cutoff = (now if now is not None else time.time()) - self._keep
        removed = 0
        for path in self._dir.glob("*.msgpack"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
