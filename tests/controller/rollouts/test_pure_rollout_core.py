"""The rollout core (controller/rollouts/) never reads the clock: every decision takes
the time as an argument, so the planner and transitions are tested at any instant.
(import-linter keeps NATS, Docker, time and asyncio out; this looks for the calls that
read the time through datetime or protocol.models.)"""

from __future__ import annotations

import ast
from pathlib import Path

import controller.rollouts

CLOCK_READS = {"now", "utcnow", "today", "utc_now", "monotonic", "time"}


def clock_reads(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else None
            name = node.func.id if isinstance(node.func, ast.Name) else name
            if name in CLOCK_READS:
                found.append(f"line {node.lineno}: {name}()")
    return found


def test_the_check_sees_a_clock_read() -> None:
    assert clock_reads("from datetime import datetime\nx = datetime.now(UTC)\n") == [
        "line 2: now()"
    ]
    assert clock_reads("y = utc_now()\n") == ["line 1: utc_now()"]


def test_no_module_of_the_rollout_core_reads_the_clock() -> None:
    package = Path(controller.rollouts.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 7  # the package is where this test thinks it is
    reads = {m.name: clock_reads(m.read_text()) for m in modules}
    assert {name: found for name, found in reads.items() if found} == {}
