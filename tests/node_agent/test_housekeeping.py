"""The agent's state dir is pruned: outcomes expire, phase logs keep their newest lines."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from node_agent.housekeeping import PHASE_LOG_KEEP_LINES, PHASE_LOG_MAX_BYTES, Housekeeping
from node_agent.update.journal import Journal
from node_agent.update.outcomes import OutcomeStore
from protocol.models import ErrorReply

DAY = 24 * 3600


def reply(command_id: str) -> ErrorReply:
    return ErrorReply(sender="h1", in_reply_to=command_id, code="busy", message="busy")


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def outcome_file(directory: Path, command_id: str) -> Path:
    """Where an outcome lives: named by the SHA-256 of its id, never by the id itself."""
    return directory / f"{hashlib.sha256(command_id.encode()).hexdigest()}.msgpack"


def test_outcomes_older_than_a_day_are_removed_and_younger_ones_kept(tmp_path: Path) -> None:
    directory = tmp_path / "outcomes"
    store = OutcomeStore(directory)
    replies = {command_id: reply(command_id) for command_id in ("old", "young")}
    for command_id, recorded in replies.items():
        store.put(command_id, recorded)
    assert sorted(directory.iterdir()) == sorted(
        outcome_file(directory, i) for i in ("old", "young")
    )
    age(outcome_file(directory, "old"), DAY + 60)
    age(outcome_file(directory, "young"), DAY - 60)

    Housekeeping(store, Journal(tmp_path / "journal")).sweep()

    assert store.get("old") is None
    assert store.get("young") == replies["young"]


def test_a_phase_log_over_its_size_keeps_only_its_newest_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    big, small = tmp_path / "journal" / "web.log", tmp_path / "journal" / "db.log"
    lines = [f"2026-11-29T00:00:00 op{i:06d} probing {'x' * 60}\n" for i in range(6000)]
    big.write_text("".join(lines))
    small.write_text("".join(lines[:10]))
    assert big.stat().st_size > PHASE_LOG_MAX_BYTES

    Housekeeping(OutcomeStore(tmp_path / "outcomes"), journal).sweep()

    assert big.read_text().splitlines(keepends=True) == lines[-PHASE_LOG_KEEP_LINES:]
    assert small.read_text() == "".join(lines[:10])
