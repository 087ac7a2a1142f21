"""What a member waits for before it starts: Compose's ``depends_on`` conditions."""

from __future__ import annotations

import asyncio
import time

from node_agent.runtime import DockerRuntime
from protocol.app import Condition

POLL = 0.25


async def wait_for(
    runtime: DockerRuntime, container: str, condition: Condition, deadline: float
) -> str | None:
    """None once ``container`` meets ``condition``; else why it does not: at once when
    it never can any more (it exited, or failed), or after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while True:
        info = await runtime.inspect_container(container)
        state = (info or {}).get("State") or {}
        met, why, final = _judge(info is not None, state, condition)
        if met:
            return None
        if final:
            return why
        if time.monotonic() > give_up:
            return f"{why} after {deadline:.0f}s"
        await asyncio.sleep(POLL)


def _judge(exists: bool, state: dict[str, object], condition: Condition) -> tuple[bool, str, bool]:
    """(met, why not, whether that can still change)."""
    if not exists:
        return False, "it does not exist", True
    running = bool(state.get("Running")) and not state.get("Restarting")
    code = state.get("ExitCode")
    exited = not running and str(state.get("FinishedAt", "")).startswith(("1", "2"))
    if condition is Condition.STARTED:
        return running or (exited and code == 0), f"it is not running (exit code {code})", exited
    if condition is Condition.COMPLETED:
        if exited:
            return code == 0, f"it exited with code {code}", True
        return False, "it is still running", False
    health_state = state.get("Health")
    health = str(health_state.get("Status", "")) if isinstance(health_state, dict) else ""
    if health == "healthy" and running:
        return True, "", False
    if exited:
        return False, f"it exited with code {code}", True
    if not health:
        return False, "it has no healthcheck", True
    return False, f"it is {health}", health == "unhealthy"
