"""Lifecycle hooks around one host's update: a command in the service's container or on
the host, bounded by its timeout, its outcome kept with the tail of what it printed.

Also the host command the blue-green switch hook runs through.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from node_agent.runtime import DockerRuntime
from protocol.errors import RuntimeFault, RuntimeTimeout
from protocol.models import HookName, HookResult, HookRun
from protocol.spec import Hook, HookPlace

HOOK_OUTPUT_LIMIT = 4000
"""The tail of a hook's output kept in its event and the failure bundle."""

PublishHook = Callable[[HookRun], Awaitable[None]]


async def publish_nowhere(event: HookRun) -> None:
    """The default: an updater used on its own (tests, benches) publishes no hook runs."""


@dataclass(frozen=True)
class HostRun:
    exit_code: int | None
    """None when it could not be started or was killed at its timeout."""
    timed_out: bool
    output: str


async def run_on_host(command: Sequence[str], env: dict[str, str], timeout: float) -> HostRun:
    """Run ``command`` on the host with ``env`` added to the agent's environment."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return HostRun(None, False, f"cannot run {command[0]!r}: {exc.strerror or exc}")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return HostRun(None, True, f"ran longer than {timeout:g}s and was killed")
    return HostRun(process.returncode, False, output.decode(errors="replace"))


async def run_in_container(
    runtime: DockerRuntime,
    container: str,
    command: Sequence[str],
    env: dict[str, str],
    timeout: float,
) -> HostRun:
    try:
        code, output = await runtime.exec(container, list(command), timeout, env)
    except RuntimeTimeout:
        return HostRun(None, True, f"ran longer than {timeout:g}s and was killed")
    except RuntimeFault as exc:
        return HostRun(None, False, exc.message)
    return HostRun(code, False, output)


async def run_hook(
    name: HookName, hook: Hook, runtime: DockerRuntime, container: str, env: dict[str, str]
) -> HookResult:
    """Run one hook where it says, in ``container`` or on the host."""
    started = time.monotonic()
    env = {**env, "FLEET_HOOK": name.value}
    if hook.run_in is HookPlace.HOST:
        run = await run_on_host(hook.command, env, hook.timeout)
    else:
        run = await run_in_container(runtime, container, hook.command, env, hook.timeout)
    return HookResult(
        hook=name,
        ok=run.exit_code == 0,
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        output=run.output[-HOOK_OUTPUT_LIMIT:],
        duration=round(time.monotonic() - started, 3),
    )


def hook_failure(result: HookResult) -> str:
    """One plain line on how a hook failed, for the reply and the rollout's host detail."""
    if result.timed_out:
        how = "timed out"
    elif result.exit_code is None:
        how = "could not run"
    else:
        how = f"exited {result.exit_code}"
    last = result.output.strip().splitlines()[-1:] or [""]
    return f"the {result.hook.value} hook {how}" + (f": {last[0][:300]}" if last[0] else "")
