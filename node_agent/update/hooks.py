"""Lifecycle hooks around one host's update: a command in the service's container or on
the host, bounded by its timeout, its outcome kept with the tail of what it printed.

Also the host command the blue-green switch hook runs through.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from node_agent.runtime import DockerRuntime
from protocol.errors import RuntimeFault, RuntimeTimeout
from protocol.models import HookName, HookResult, HookRun
from protocol.spec import BlueGreen, Colour, Hook, HookPlace

HOOK_OUTPUT_LIMIT = 4000
"""The tail of a hook's output kept in its event and the failure bundle."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_HOOKS_OFF = "hooks on the host are off here (the agent's FLEET_ALLOW_HOST_HOOKS)"

PublishHook = Callable[[HookRun], Awaitable[None]]


async def publish_nowhere(event: HookRun) -> None:
    """The default: an updater used on its own (tests, benches) publishes no hook runs."""


@dataclass(frozen=True)
class HostRun:
    exit_code: int | None
    """None when it could not be started or was killed at its timeout."""
    timed_out: bool
    output: str


async def run_on_host(
    command: Sequence[str], env: dict[str, str], timeout: float, *, inherit: bool = True
) -> HostRun:
    """Run ``command`` on the host, in a session of its own (so that past ``timeout``
    all it started is killed), with ``env`` added to the agent's environment, or with
    only PATH and ``env`` when not ``inherit``."""
    base = dict(os.environ) if inherit else {"PATH": os.environ.get("PATH", DEFAULT_PATH)}
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**base, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return HostRun(None, False, f"cannot run {command[0]!r}: {exc.strerror or exc}")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
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
    name: HookName,
    hook: Hook,
    runtime: DockerRuntime,
    container: str,
    env: dict[str, str],
    allow_host: bool,
) -> HookResult:
    """Run one hook where it says, in ``container`` or on the host (if allowed)."""
    started = time.monotonic()
    env = {**env, "FLEET_HOOK": name.value}
    if hook.run_in is HookPlace.HOST and not allow_host:
        run = HostRun(None, False, HOST_HOOKS_OFF)
    elif hook.run_in is HookPlace.HOST:
        run = await run_on_host(hook.command, env, hook.timeout, inherit=False)
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


async def run_switch_hook(
    blue_green: BlueGreen, service: str, colour: Colour, host: str
) -> str | None:
    """The blue-green switch hook (after a switch, or an update in the serving colour),
    on the host; None when it passed (or there is none), else one line on how it failed."""
    if blue_green.switch_hook is None:
        return None
    env = {
        "FLEET_SERVICE": service,
        "FLEET_ACTIVE_COLOUR": colour,
        "FLEET_ACTIVE_PORT": str(blue_green.port_of(colour)),
        "FLEET_HOST": host,
    }
    run = await run_on_host(blue_green.switch_hook, env, blue_green.hook_timeout)
    if run.timed_out:
        return f"the switch hook ran longer than {blue_green.hook_timeout:g}s"
    if run.exit_code is None:
        return f"cannot run the switch hook: {run.output}"
    if run.exit_code != 0:
        return f"the switch hook exited {run.exit_code}: {run.output[-HOOK_OUTPUT_LIMIT:]}"
    return None
