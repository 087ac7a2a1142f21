"""`fleet-agent-guard run ...`: the successor's first process during an upgrade.

It runs the agent as its child and, if the child dies after taking the host over but
before its probation is over, puts the old agent back: renames itself aside, gives the
old container its name again and starts it. No controller is needed for that. Light on
purpose: nothing heavy is imported unless the fallback is needed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from node_agent.upgrade.handoff_files import DONE, REQUEST, TAKEN, HandoffNotes

DOCKER_TIMEOUT = 30.0
OLD_AGENT_GRACE = 30.0


def guard(args: list[str]) -> int:
    child = subprocess.Popen(["fleet-agent", *args])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    notes = HandoffNotes(Path(os.environ.get("FLEET_STATE_DIR", "/var/lib/fleetwave/agent")))
    mine = (notes.read(REQUEST) or {}).get("operation_id") == os.environ.get("FLEET_HANDOFF")
    # Any end before "done" (a crash, or a stop during probation): the old agent again.
    if mine and notes.has(TAKEN) and not notes.has(DONE):
        asyncio.run(bring_back_the_old_agent(notes))
    return code


async def bring_back_the_old_agent(notes: HandoffNotes) -> None:
    from node_agent.runtime import DockerRuntime  # only now: the guard idles light

    request = notes.read(REQUEST) or {}
    previous = str(request["previous"])
    runtime = DockerRuntime(
        os.environ.get("FLEET_DOCKER_HOST", "unix:///var/run/docker.sock"), DOCKER_TIMEOUT
    )
    try:
        await runtime.rename(previous, f"{previous}.failed")
        await runtime.rename(f"{previous}.previous", previous)
        await runtime.stop(previous, OLD_AGENT_GRACE)  # if it was not stopped yet: afresh
        await runtime.start(previous)
        sys.stderr.write(f"fleet-agent guard: the successor failed; {previous} is back\n")
    finally:
        runtime.close()


def main() -> None:
    """fleet-agent-guard ARGS: runs `fleet-agent ARGS` under the guard."""
    raise SystemExit(guard(sys.argv[1:]))
