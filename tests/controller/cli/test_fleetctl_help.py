"""`fleetctl ... --help` shows every option whole at 80 columns, in a pipe and on a terminal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main

from controller.cli.app import app
from tests.support.terminal import Ran, run_in_terminal, run_piped

WIDTH = 80

# What the README's CLI section documents: a command lost from the walk below fails here.
DOCUMENTED = {
    "version",
    "hosts",
    "hosts enroll",
    "hosts revoke",
    "agent upgrade",
    "pki init",
    "rollout start",
    "rollout status",
    "rollout pause",
    "rollout resume",
    "rollout promote",
    "rollout abort",
    "rollout partition",
    "rollout undo",
    "rollout history",
    "config set",
    "config get",
    "config rm",
    "config list",
    "config history",
    "config diff",
    "config rollout",
    "events",
    "logs",
    "top",
    "exporter",
    "controller run",
    "keys generate",
    "services",
    "apply",
    "diff",
    "delete service",
}


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path under ``command`` (typer's own click: groups have commands)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def declared_options(path: tuple[str, ...]) -> list[str]:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return [name for p in command.params for name in (*p.opts, *p.secondary_opts) if "-" in name]


ALL = sorted(commands(typer.main.get_command(app)))


def shows_whole(name: str, text: str) -> bool:
    """``--max-unavailable`` as a word of its own: not cut, not glued to another."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def assert_readable(ran: Ran, path: tuple[str, ...]) -> None:
    assert ran.code == 0, ran.stderr
    assert "…" not in ran.stdout
    missing = [name for name in declared_options(path) if not shows_whole(name, ran.stdout)]
    assert not missing, f"fleetctl {' '.join(path)} --help cuts {missing}:\n{ran.stdout}"
    wide = [line for line in ran.lines if len(line) > WIDTH]
    assert not wide, f"lines wider than {WIDTH}: {wide}"


def test_the_walk_finds_every_documented_command() -> None:
    walked = {" ".join(path) for path in ALL}
    assert not DOCUMENTED - walked


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "fleetctl")
def test_every_command_help_in_an_80_column_pipe_shows_each_option_whole(
    path: tuple[str, ...],
) -> None:
    assert_readable(run_piped(*path, "--help", columns=WIDTH), path)


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "fleetctl")
def test_every_command_help_on_an_80_column_terminal_shows_each_option_whole(
    path: tuple[str, ...],
) -> None:
    assert_readable(run_in_terminal(*path, "--help", columns=WIDTH), path)


def test_rollout_start_help_names_the_long_options_the_issue_saw_cut() -> None:
    ran = run_piped("rollout", "start", "--help", columns=WIDTH)
    for name in (
        "--max-unavailable",
        "--auto-promote-after",
        "--max-failure-ratio",
        "--min-healthy-time",
        "--progress-deadline",
        "--remove-old-after",
        "--allow-downgrade",
        "--nats",
    ):
        assert shows_whole(name, ran.stdout), name
