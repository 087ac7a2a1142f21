"""Signatures of the signed commands this agent accepted, kept until each one expires.

A command replayed byte for byte carries a signature seen before and is refused, also
after an agent restart: the list is a file in the state dir. A controller that resends a
command (same id, to learn its outcome) signs it afresh, with a new ``sent_at``, so its
signature is new and it gets the recorded outcome instead.

Lines are appended and flushed, not fsynced: they survive the agent's own crash or
SIGKILL (the kernel has them), not a power loss within the kernel's writeback window.
The compacting rewrite (fsynced) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

from node_agent.state_files import write_atomically, write_synced

COMPACT_EVERY = 1000
"""Appends between two rewrites that drop expired entries."""


class SeenSignatures:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._expiry: dict[str, float] = {}
        self._load()
        self._compact()
        self._file: TextIO = path.open("a", encoding="ascii")
        self._appended = 0
        self._rewriting: list[str] | None = None
        """While a compaction rewrites the file: the lines appended since it began."""

    def _load(self) -> None:
        try:
            lines = self._path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            expiry, _, signature = line.partition(" ")
            try:
                self._expiry[signature] = float(expiry)
            except ValueError:
                continue  # a torn last line after a crash

    def _compact(self) -> None:
        now = time.time()
        self._expiry = {s: e for s, e in self._expiry.items() if e > now}
        text = "".join(f"{e} {s}\n" for s, e in self._expiry.items())
        write_atomically(self._path, text.encode("ascii"))

    def seen(self, signature: bytes) -> bool:
        expiry = self._expiry.get(signature.hex())
        return expiry is not None and expiry > time.time()

    async def remember(self, signature: bytes, expires_at: datetime) -> None:
        key, expiry = signature.hex(), expires_at.timestamp()
        self._expiry[key] = expiry
        line = f"{expiry} {key}\n"
        self._file.write(line)
        self._file.flush()
        if self._rewriting is not None:
            self._rewriting.append(line)
            return
        self._appended += 1
        if self._appended >= COMPACT_EVERY:
            await self._compact_in_thread()

    async def _compact_in_thread(self) -> None:
        """The rewrite of what is unexpired (and its fsync) in a worker thread, to a new
        file. Lines remembered meanwhile are appended to the old file and kept aside;
        back on the loop, with no await until it is done, they are appended to the new
        file too, which then replaces the old: at every instant the file on disk holds
        every signature remembered, whenever the agent is killed."""
        self._rewriting = []
        self._appended = 0
        now = time.time()
        self._expiry = {s: e for s, e in self._expiry.items() if e > now}
        text = "".join(f"{e} {s}\n" for s, e in self._expiry.items())
        fresh = self._path.with_name(self._path.name + ".compacting")
        try:
            await asyncio.to_thread(write_synced, fresh, text.encode("ascii"))
            with fresh.open("a", encoding="ascii") as new_file:
                new_file.writelines(self._rewriting)
            if self._file.closed:  # closed while compacting: the agent is stopping
                fresh.unlink()
                return
            self._file.close()
            os.replace(fresh, self._path)
            self._file = self._path.open("a", encoding="ascii")
        finally:
            self._rewriting = None

    def close(self) -> None:
        self._file.close()
