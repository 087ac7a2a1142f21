"""Prepare: is this host ready for the new image (engine, registry, memory, disk, open
files, load, version policy, config files)? If so, pull it by digest, reporting the
pull's progress, and check the pulled image carries that digest."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fleet_registry.client import RegistryCheck, check_registry
from node_agent.config.sync import ConfigSync
from node_agent.resources import ResourceNeeds, check_resources
from node_agent.runtime import DockerRuntime, PullProgress
from node_agent.settings import AgentSettings
from node_agent.update.operation import Emit, PrepareResult, image_label
from node_agent.update.versions import version_policy_reasons
from protocol.errors import RuntimeFault
from protocol.image_ref import ImageReference, parse_image_reference, registry_refusal
from protocol.models import PrepareCommand, Reason, UpdatePhase

PULL_PROGRESS_INTERVAL = 0.5


class _PullReporter:
    """Turns the pulling thread's running totals into at most two events a second."""

    def __init__(self, emit: Emit, loop: asyncio.AbstractEventLoop) -> None:
        self._emit = emit
        self._loop = loop
        self._last = 0.0
        self._sent: list[concurrent.futures.Future[None]] = []

    def __call__(self, progress: PullProgress) -> None:  # runs in the pulling thread
        now = time.monotonic()
        if now - self._last < PULL_PROGRESS_INTERVAL:
            return
        self._last = now
        coroutine = self._emit(UpdatePhase.PULLING, progress.describe(), progress.fraction)
        self._sent.append(asyncio.run_coroutine_threadsafe(_awaited(coroutine), self._loop))

    async def settle(self) -> None:
        """Wait for every event already handed to the loop (so none outlives the pull)."""
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._sent))


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


@dataclass(frozen=True)
class Preparing:
    """What Prepare works with: the agent's settings, the engine, the config files."""

    settings: AgentSettings
    runtime: DockerRuntime
    config: ConfigSync
    failpoint: Callable[[str], None]
    make_room: Callable[[str, str], Awaitable[int]]
    """Removes the service's images nothing needs (service, operation id); bytes freed."""


async def prepare(command: PrepareCommand, emit: Emit, on: Preparing) -> PrepareResult:
    spec = command.service
    await emit(UpdatePhase.CHECKING, f"checking host and registry for {spec.image}")
    ref = parse_image_reference(spec.image)
    reasons, registry = await _readiness(command, ref, on)
    if reasons:
        await emit(UpdatePhase.NOT_READY, "; ".join(r.code for r in reasons))
        return PrepareResult(False, reasons, registry.digest)
    assert registry.digest is not None
    await emit(UpdatePhase.PULLING, f"pulling {ref.name}@{registry.digest}")
    on.failpoint("pulling")
    reason = await _pull(ref, registry.digest, emit, on)
    if reason is not None:
        await emit(UpdatePhase.NOT_READY, reason.code)
        return PrepareResult(False, [reason], registry.digest)
    await emit(UpdatePhase.READY, f"{ref.name}@{registry.digest} pulled")
    return PrepareResult(True, [], registry.digest)


async def _readiness(
    command: PrepareCommand, ref: ImageReference, on: Preparing
) -> tuple[list[Reason], RegistryCheck]:
    """Why this host cannot take the image now (none: ready), and what the registry said."""
    spec, settings, runtime = command.service, on.settings, on.runtime
    reasons: list[Reason] = []
    engine_up = True
    try:
        await runtime.ping()
        docker_root = await runtime.root_dir()
    except RuntimeFault as exc:
        reasons.append(Reason(code="engine_unavailable", text=exc.message))
        docker_root, engine_up = "/", False
    refusal = registry_refusal(ref, settings.allowed_registries)
    if refusal is not None:
        # Not even asked: a host does not talk to a registry it must not use.
        reasons.append(Reason(code="registry_not_allowed", text=refusal))
        registry = RegistryCheck()
    else:
        registry = await check_registry(ref, settings.registry_access())
        reasons += registry.reasons
    memory_needed = max(spec.container.resources.memory_bytes or 0, settings.min_free_memory)
    needs = ResourceNeeds(
        memory=memory_needed,
        disk=registry.size + settings.min_free_disk,
        open_files=settings.min_open_files,
        max_load_per_cpu=settings.max_load_per_cpu,
    )
    found = check_resources(needs, docker_root)
    short_of_disk = any(r.code == "insufficient_disk" for r in found)
    if short_of_disk and engine_up and spec.images.prune_on_low_disk:
        await on.make_room(spec.name, command.id)
        found = check_resources(needs, docker_root)  # measured again
    reasons += found
    reasons += await on.config.prepare_reasons(spec)
    if not engine_up:  # the engine is the reason; its containers cannot be asked about
        return reasons, registry
    current = await runtime.inspect_container(settings.container_name(spec.name))
    current_ref = image_label(current)
    current_tag = parse_image_reference(current_ref).tag if current_ref else None
    reasons += version_policy_reasons(
        current_tag,
        ref.tag,
        allow_downgrade=command.allow_downgrade,
        allow_major=command.allow_major,
    )
    return reasons, registry


async def _pull(ref: ImageReference, digest: str, emit: Emit, on: Preparing) -> Reason | None:
    """Pull by digest, reporting progress; why it failed, or None."""
    credential = on.settings.registry_credentials.get(ref.registry_or_default)
    auth = credential.docker_auth() if credential else None
    reporter = _PullReporter(emit, asyncio.get_running_loop())
    try:
        pulled = await on.runtime.pull(ref.name, digest, auth, on.settings.pull_timeout, reporter)
    except RuntimeFault as exc:
        return Reason(code="pull_failed", text=exc.message)
    finally:
        await reporter.settle()
    await emit(UpdatePhase.PULLING, f"pulled {pulled.size / 1e6:.1f} MB", 1.0)
    if f"{ref.name}@{digest}" not in pulled.repo_digests:
        return Reason(
            code="digest_mismatch",
            text=f"pulled image does not carry {digest} ({pulled.repo_digests})",
        )
    return None
