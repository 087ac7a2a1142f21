"""The agent's one atomic-file helper, behind the journal, the outcome, service and
colour stores, the applied configs and the seen signatures: a file is either its old
content or its new content, never a mix, whenever the agent dies."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.state_files import read_json, write_atomically, write_json


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary_behind(tmp_path: Path) -> None:
    target = tmp_path / "store" / "web.json"
    write_atomically(target, b"a long first version of the file\n")
    write_atomically(target, b"short\n")
    assert target.read_bytes() == b"short\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["web.json"]


def test_a_write_killed_before_its_rename_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "web.json"
    write_json(target, {"version": 1})

    def killed(source: object, destination: object) -> None:
        raise KeyboardInterrupt("the agent died here")

    monkeypatch.setattr("node_agent.state_files.os.replace", killed)
    with pytest.raises(KeyboardInterrupt, match="the agent died here"):
        write_json(target, {"version": 2})
    monkeypatch.undo()
    assert read_json(target) == {"version": 1}
    write_json(target, {"version": 3})  # the leftover temporary is no obstacle
    assert read_json(target) == {"version": 3}


def test_reading_a_file_never_written_gives_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json") is None
