"""How an unavailable host looks: `rollout status` shows it offline with how long, and
`fleetctl hosts` marks a stale heartbeat, in a pipe, on an 80-column terminal and in
JSON. The expected lines are written out by hand from the README's rules."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

from rich.cells import cell_len
from rich.console import Console

from controller.cli import render_hosts
from controller.cli.render import print_rollout, rollout_json, rollout_line
from controller.cli.tables import print_table
from controller.rollouts.model import (
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
)
from protocol.models import HostFacts, ServiceStatus
from protocol.spec import ServiceSpec

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WIDTH = 80
LONG_DETAIL = "no answer within 85s; the agent may be stuck in a probe that never returns"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def stalled(
    detail: str = "probing", status: RolloutStatus = RolloutStatus.RUNNING
) -> RolloutRecord:
    """Three hosts: one done, one updating whose heartbeat stopped 42 s ago, one ready."""
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(),
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        hosts={
            "host-000": HostRecord(phase=HostPhase.DONE, since=ago(300), detail="web:1.1.0"),
            "host-001": HostRecord(
                phase=HostPhase.UPDATING,
                since=ago(60),
                command_id="c1",
                detail=detail,
                no_heartbeat_since=ago(42),
            ),
            "host-002": HostRecord(phase=HostPhase.READY, since=ago(90), detail="pulled"),
        },
        status=status,
        created_at=ago(400),
        updated_at=ago(1),
        last_progress_at=ago(60),
    )


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=WIDTH, force_terminal=False, color_system=None), out


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=WIDTH, force_terminal=True, color_system=None)
    return console, out


def row_cells(lines: list[str], host: str) -> list[str]:
    """The cells of the one terminal table row that names ``host``."""
    rows = [line for line in lines if host in line]
    assert len(rows) == 1, lines
    return [cell.strip() for cell in rows[0].split("│")[1:-1]]


def test_rollout_status_in_a_pipe_shows_a_silent_host_offline_with_how_long() -> None:
    console, out = piped()

    print_rollout(stalled(), console, NOW)

    assert out.getvalue().splitlines()[-4:] == [
        "#   HOST       PHASE         DETAIL              SINCE",
        "0   host-000   done          web:1.1.0           5m ago",
        "1   host-001   offline 42s   updating: probing   60s ago",
        "2   host-002   ready         pulled              90s ago",
    ]


def test_rollout_status_on_an_80_column_terminal_keeps_offline_whole_on_one_line() -> None:
    console, out = terminal()

    print_rollout(stalled(detail=LONG_DETAIL), console, NOW)

    lines = out.getvalue().splitlines()
    assert all(cell_len(line) <= WIDTH for line in lines), lines
    number, host, phase, detail, since = row_cells(lines, "host-001")
    assert (number, host, phase, since) == ("1", "host-001", "offline 42s", "60s ago")
    assert detail.startswith("updating: no answer within 85s")
    assert detail.endswith("…")  # the detail gives way, not the phase
    assert row_cells(lines, "host-000")[2] == "done"


def test_rollout_status_json_gives_each_host_offline_since_and_for_how_long() -> None:
    hosts = json.loads(rollout_json(stalled(), NOW))["hosts"]

    assert hosts["host-001"]["phase"] == "updating"
    assert hosts["host-001"]["offline_since"] == "2026-11-24T11:59:18+00:00"
    assert hosts["host-001"]["offline_for"] == 42.0
    for healthy in ("host-000", "host-002"):
        assert hosts[healthy]["offline_since"] is None
        assert hosts[healthy]["offline_for"] is None


def test_a_finished_rollout_shows_how_long_a_host_was_offline_when_it_ended() -> None:
    ended = stalled(status=RolloutStatus.FAILED).model_copy(update={"updated_at": ago(10)})

    hosts = json.loads(rollout_json(ended, NOW))["hosts"]
    console, out = piped()
    print_rollout(ended, console, NOW)

    assert hosts["host-001"]["offline_for"] == 32.0
    assert "1   host-001   offline 32s   updating: probing   60s ago" in out.getvalue()


def test_a_followed_rollout_line_marks_the_offline_host() -> None:
    assert rollout_line(stalled()) == (
        "web-r2 running 1/3 done | host-000:done host-001:updating(offline) host-002:ready"
    )


def heartbeat(host: str, sent_seconds_ago: float) -> HostFacts:
    return HostFacts(
        sender=host,
        host=host,
        sent_at=ago(sent_seconds_ago),
        labels={"role": "edge"},
        agent_version="0.3.0 (protocol 3)",
        docker_version="27.1.1",
        cpus=2,
        memory_total=1 << 30,
        memory_available=1 << 29,
        disk_total=1 << 34,
        disk_free=1 << 33,
        services=(
            ServiceStatus(
                name="web", image="127.0.0.1:5000/demo/web:1.1.0", state="running", health="healthy"
            ),
        ),
    )


FLEET = [heartbeat("h-fresh", 2), heartbeat("h-stale", 150)]
TIMEOUT = 30.0


def test_hosts_in_a_pipe_mark_a_stale_host_and_do_not_vouch_for_its_services() -> None:
    console, out = piped()

    print_table(render_hosts.hosts_table(FLEET, NOW, TIMEOUT), console)

    assert out.getvalue().splitlines() == [
        "HOST      LABELS      AGENT   DOCKER   "
        "SERVICES                        STATUS     LAST SEEN",
        "h-fresh   role=edge   0.3.0   27.1.1   web web:1.1.0 running/healthy   up         2s ago",
        "h-stale   role=edge   0.3.0   27.1.1   web web:1.1.0 ?/?               stale 2m   2m ago",
    ]


def test_hosts_on_an_80_column_terminal_keep_the_stale_mark_whole_on_one_line() -> None:
    console, out = terminal()

    print_table(render_hosts.hosts_table(FLEET, NOW, TIMEOUT), console)

    lines = out.getvalue().splitlines()
    assert all(cell_len(line) <= WIDTH for line in lines), lines
    assert row_cells(lines, "h-stale")[-2:] == ["stale 2m", "2m ago"]
    assert row_cells(lines, "h-fresh")[-2:] == ["up", "2s ago"]


def test_hosts_json_marks_a_stale_host_and_its_service_health_unknown() -> None:
    listed = {host["host"]: host for host in json.loads(render_hosts.hosts_json(FLEET, NOW, 30))}

    assert (listed["h-stale"]["status"], listed["h-stale"]["heartbeat_age"]) == ("stale", 150.0)
    assert listed["h-stale"]["services"][0]["health"] == "unknown"
    assert (listed["h-fresh"]["status"], listed["h-fresh"]["heartbeat_age"]) == ("up", 2.0)
    assert listed["h-fresh"]["services"][0]["health"] == "healthy"


def test_a_heartbeat_exactly_the_host_timeout_old_is_not_yet_stale() -> None:
    # README: stale means older than the host timeout.
    edge = [heartbeat("h-edge", 30), heartbeat("h-past", 30.5)]

    listed = json.loads(render_hosts.hosts_json(edge, NOW, TIMEOUT))

    assert [host["status"] for host in listed] == ["up", "stale"]
