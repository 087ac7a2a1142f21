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

from node_agent.upgrade.handoff_files import DONE, RELEASED, REQUEST, TAKEN, HandoffNotes

DOCKER_TIMEOUT = 30.0
OLD_AGENT_GRACE = 30.0


def guard(args: list[str]) -> int:
    notes = HandoffNotes(Path(os.environ.get("FLEET_STATE_DIR", "/var/lib/fleetwave/agent")))
    # Started again by the engine (the successor sets its restart policy before it takes
    # the host over): the container itself died, killed, out of memory or in a reboot.
    if in_probation(notes):  # after it took over: the old agent again, at once
        asyncio.run(bring_back_the_old_agent(notes))
        return 1
    if mine(notes) and notes.has(RELEASED) and not notes.has(TAKEN):  # before: the old
        return 1  # agent still holds the host, sees this stop, removes it and serves on
    child = subprocess.Popen(["fleet-agent", *args])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    # Any end before "done" (a crash, or a stop during probation): the old agent again.
    if in_probation(notes):
        asyncio.run(bring_back_the_old_agent(notes))
    return code


def mine(notes: HandoffNotes) -> bool:
    """The handoff in the notes is the one this container was made for."""
    made_for = os.environ.get("FLEET_HANDOFF")
    return made_for is not None and (notes.read(REQUEST) or {}).get("operation_id") == made_for


def in_probation(notes: HandoffNotes) -> bool:
    """This container's handoff took the host over and is not done yet."""
    return mine(notes) and notes.has(TAKEN) and not notes.has(DONE)


async def bring_back_the_old_agent(notes: HandoffNotes) -> None:
    from node_agent.runtime import DockerRuntime  # only now: the guard idles light

    request = notes.read(REQUEST) or {}
    previous = str(request["previous"])
    runtime = DockerRuntime(
        os.environ.get("FLEET_DOCKER_HOST", "unix:///var/run/docker.sock"), DOCKER_TIMEOUT
    )
    try:
        await runtime.rename(previous, f"{previous}.failed")
        # Not restarted by the engine once this guard exits; the old agent removes it.
        await runtime.set_restart_policy(f"{previous}.failed", "no")
        await runtime.rename(f"{previous}.previous", previous)
        await runtime.stop(previous, OLD_AGENT_GRACE)  # if it was not stopped yet: afresh
        await runtime.start(previous)
        sys.stderr.write(f"fleet-agent guard: the successor failed; {previous} is back\n")
    finally:
        runtime.close()


def main() -> None:
    """fleet-agent-guard ARGS: runs `fleet-agent ARGS` under the guard."""
    raise SystemExit(guard(sys.argv[1:]))
