"""The seen-signatures store: compacted off the event loop, nothing remembered is lost.

README: a command replayed byte for byte is refused also after an agent restart, until
it expires; the store is pruned of expired entries, and its fsyncs do not block the
event loop.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node_agent import seen_commands
from node_agent.seen_commands import COMPACT_EVERY, SeenSignatures
from node_agent.state_files import write_synced


def signature(number: int) -> bytes:
    return number.to_bytes(64, "big")


async def test_a_compaction_runs_in_a_thread_and_loses_nothing_remembered_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "seen"
    rewriting = threading.Event()
    may_finish = threading.Event()
    writers: list[int] = []

    def held_write(target: Path, data: bytes) -> None:
        writers.append(threading.get_ident())
        rewriting.set()
        assert may_finish.wait(10), "the test never let the rewrite finish"
        write_synced(target, data)

    store = SeenSignatures(path)
    monkeypatch.setattr(seen_commands, "write_synced", held_write)
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.remember(signature(0), past)  # expired: the compaction drops it
    for number in range(1, COMPACT_EVERY - 1):
        await store.remember(signature(number), soon)
    compacting = asyncio.create_task(store.remember(signature(COMPACT_EVERY - 1), soon))
    # While the rewrite is held in its thread, the loop is free and takes more.
    assert await asyncio.to_thread(rewriting.wait, 10)
    meanwhile = range(COMPACT_EVERY, COMPACT_EVERY + 5)
    for number in meanwhile:
        await store.remember(signature(number), soon)
    may_finish.set()
    await compacting

    assert len(writers) == 1
    assert writers[0] != threading.get_ident()  # a worker thread, not the event loop's
    # Read back as an agent killed right now would find it (the first never closed).
    reopened = SeenSignatures(path)
    try:
        remembered = [n for n in range(COMPACT_EVERY + 5) if reopened.seen(signature(n))]
        assert remembered == list(range(1, COMPACT_EVERY + 5))
        lines = path.read_text().splitlines()
        assert len(lines) == COMPACT_EVERY + 4  # the expired one is gone from the file
    finally:
        reopened.close()
        store.close()
