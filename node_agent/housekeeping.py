"""The agent's state dir does not grow without bound: old outcomes and phase logs go.

Runs at start and then every hour, off the event loop (it reads, writes and unlinks
files). The seen-signatures store prunes itself: it drops expired entries every
1000 appends.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from pathlib import Path

from node_agent.update.journal import Journal
from node_agent.update.outcomes import OutcomeStore

log = logging.getLogger("fleet-agent.housekeeping")

INTERVAL_SECONDS = 3600.0
PHASE_LOG_MAX_BYTES = 256 * 1024
PHASE_LOG_KEEP_LINES = 1000
"""A phase log over the size limit keeps its newest lines (a few hundred updates)."""


class Housekeeping:
    def __init__(
        self, outcomes: OutcomeStore, journal: Journal, interval: float = INTERVAL_SECONDS
    ) -> None:
        self._outcomes = outcomes
        self._journal = journal
        self._interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sweep)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    def sweep(self) -> None:
        try:
            outcomes = self._outcomes.prune()
            logs = sum(trim_log(path) for path in self._journal.phase_logs())
        except OSError as exc:
            log.warning("housekeeping of the state dir failed: %s", exc)
            return
        if outcomes or logs:
            log.info(
                "housekeeping: %d old outcome(s) removed, %d phase log(s) trimmed", outcomes, logs
            )


def trim_log(path: Path) -> int:
    """Keep the newest lines of ``path`` once it is over the size limit; 1 if trimmed."""
    if path.stat().st_size <= PHASE_LOG_MAX_BYTES:
        return 0
    lines = path.read_bytes().splitlines(keepends=True)[-PHASE_LOG_KEEP_LINES:]
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(b"".join(lines))
    temp.replace(path)
    return 1
