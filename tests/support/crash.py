"""Killing an agent process at a named point of its work (FLEET_FAILPOINT)."""

from __future__ import annotations

import signal
from typing import Any

from fleet_lab.agent_client import wait_until_serving
from tests.conftest import SpawnedAgent

KILLED_WITHIN = 120.0


async def killed_at(agent: SpawnedAgent, failpoint: str, command: Any) -> None:
    """Restart ``agent`` to die at ``failpoint``, send ``command``, see it die there, and
    start it again, serving."""
    assert await agent.process.stop() == 0
    await agent.process.start(FLEET_FAILPOINT=failpoint)
    await wait_until_serving(agent.api, deadline_s=60)
    await agent.api.send(command)
    assert await agent.process.wait(timeout=KILLED_WITHIN) == -signal.SIGKILL
    await agent.process.start(FLEET_FAILPOINT="never")
    await wait_until_serving(agent.api, deadline_s=120)
