"""The post_rollout hook: a command the leading controller runs on its own host once a
rollout of the service completed, its outcome published as a HookRun event.

It runs beside the rollouts, never in a pass: a slow hook holds up nothing. At most once
per rollout: a controller that dies while it runs does not run it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from controller.rollouts.model import RolloutRecord, RolloutStatus
from protocol import subjects
from protocol.models import Envelope, HookName, HookResult, HookRun
from protocol.spec import ControllerHook, ServiceSpec

log = logging.getLogger("fleetctl.controller")
OUTPUT_LIMIT = 4000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Publish = Callable[[str, Envelope], Awaitable[None]]


def runs_post_rollout(record: RolloutRecord) -> bool:
    """An operator's rollout (not a convergence, removal or config rollout) that completed."""
    return (
        record.status is RolloutStatus.COMPLETE
        and isinstance(record.target, ServiceSpec)  # an app has no hooks
        and record.target.hooks.post_rollout is not None
        and not record.converging
        and not record.removing
        and record.config is None
    )


HOOKS_OFF = "post_rollout hooks are off on this controller (its FLEET_ALLOW_HOOKS)"


class PostRolloutHooks:
    def __init__(self, publish: Publish, controller_id: str, allowed: bool) -> None:
        self._publish = publish
        self._controller_id = controller_id
        self._allowed = allowed
        self._running: set[asyncio.Task[None]] = set()

    def start(self, record: RolloutRecord) -> None:
        if not runs_post_rollout(record):
            return
        task = asyncio.create_task(self._run(record), name=f"post_rollout {record.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        """Kill what still runs (a leader stepping down, a controller stopping)."""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, record: RolloutRecord) -> None:
        target = record.target
        assert isinstance(target, ServiceSpec)
        assert target.hooks.post_rollout is not None
        hook = target.hooks.post_rollout
        env = {
            "FLEET_SERVICE": record.service,
            "FLEET_ROLLOUT_ID": record.id,
            "FLEET_IMAGE": target.image,
            "FLEET_REVISION": str(record.revision),
            "FLEET_HOSTS": str(len(record.hosts)),
            "FLEET_HOOK": HookName.POST_ROLLOUT.value,
        }
        if self._allowed:
            result = await run_controller_hook(hook, env)
        else:
            result = HookResult(hook=HookName.POST_ROLLOUT, ok=False, output=HOOKS_OFF)
        if not result.ok:
            log.warning("%s: post_rollout hook failed: %s", record.id, result.output[-300:])
        event = HookRun(
            sender=self._controller_id, service=record.service, rollout_id=record.id, result=result
        )
        await self._publish(subjects.controller_event_subject("hook_run"), event)


async def run_controller_hook(hook: ControllerHook, env: dict[str, str]) -> HookResult:
    started = time.monotonic()
    exit_code: int | None = None
    timed_out = False
    try:
        # Only PATH of the controller's environment (which may name the signing key),
        # and a session of its own, so that a timeout kills all it started.
        process = await asyncio.create_subprocess_exec(
            *hook.command,
            env={"PATH": os.environ.get("PATH", DEFAULT_PATH), **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        output = f"cannot run {hook.command[0]!r}: {exc.strerror or exc}"
    else:
        try:
            raw, _ = await asyncio.wait_for(process.communicate(), hook.timeout)
            output, exit_code = raw.decode(errors="replace"), process.returncode
        except TimeoutError:
            output, timed_out = f"ran longer than {hook.timeout:g}s and was killed", True
        finally:  # timed out, or cancelled with the controller: never left running
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.shield(process.wait())
    return HookResult(
        hook=HookName.POST_ROLLOUT,
        ok=exit_code == 0,
        exit_code=exit_code,
        timed_out=timed_out,
        output=output[-OUTPUT_LIMIT:],
        duration=round(time.monotonic() - started, 3),
    )
