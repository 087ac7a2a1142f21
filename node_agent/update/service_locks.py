"""One operation per service at a time, shared by commands and the config watcher.

A command finding its service busy is refused ("busy": the controller retries it); the
config watcher, which has no one to retry for it, waits its turn instead.
"""

from __future__ import annotations

import asyncio


class ServiceLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def busy(self, service: str) -> bool:
        lock = self._locks.get(service)
        return lock is not None and lock.locked()

    def hold(self, service: str) -> asyncio.Lock:
        """``async with locks.hold(service):`` runs alone on that service."""
        return self._locks.setdefault(service, asyncio.Lock())
