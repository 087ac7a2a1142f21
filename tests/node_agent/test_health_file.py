"""`fleet-agent health`'s verdict on the record the heartbeat loop writes."""

from __future__ import annotations

from pathlib import Path

from node_agent.health_file import read_health, unhealthy_because, write_health


def test_a_fresh_connected_beat_is_healthy(tmp_path: Path) -> None:
    write_health(tmp_path, connected=True, interval=10.0)
    record = read_health(tmp_path)
    assert record is not None
    assert unhealthy_because(record, record["beat_at"] + 29.0) is None


def test_a_beat_older_than_three_intervals_is_stale(tmp_path: Path) -> None:
    write_health(tmp_path, connected=True, interval=10.0)
    record = read_health(tmp_path)
    assert record is not None
    assert unhealthy_because(record, record["beat_at"] + 31.0) == (
        "last heartbeat 31s ago (every 10s)"
    )


def test_a_beat_that_did_not_reach_nats_is_unhealthy(tmp_path: Path) -> None:
    write_health(tmp_path, connected=False, interval=10.0)
    record = read_health(tmp_path)
    assert record is not None
    assert unhealthy_because(record, record["beat_at"]) == (
        "not connected to NATS (last heartbeat not written)"
    )


def test_no_record_or_a_broken_one_is_unhealthy(tmp_path: Path) -> None:
    assert read_health(tmp_path) is None
    assert unhealthy_because(None, 0.0) == "no heartbeat recorded yet"
    (tmp_path / "health.json").write_text("{not json")
    assert read_health(tmp_path) is None
    assert unhealthy_because({"beat_at": "soon"}, 0.0) == "the health record is unreadable"
