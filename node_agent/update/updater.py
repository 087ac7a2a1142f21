"""One host's update of one service: prepare, apply and rollback here; restore
(restore.py) and crash recovery (crash_recovery.py) in the classes it builds on.

The phases are DESIGN.md's state machine. Every phase is journaled before it happens and
published as an event. The old container is set aside (stopped and renamed), never
removed, until the new one has proven healthy; any failure restores it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node_agent.runtime import AGENT_LABEL, Inspect
from node_agent.update.container_config import (
    config_from_spec,
    derive_config,
)
from node_agent.update.crash_recovery import CrashRecovering
from node_agent.update.hooks import hook_failure, run_switch_hook
from node_agent.update.operation import (
    COPY_SUFFIXES,
    Emit,
    Operation,
    OperationResult,
    PrepareResult,
    dump_spec,
    image_label,
    status_from_inspect,
)
from node_agent.update.prepare import Preparing, prepare
from node_agent.update.probes import HealthVerdict
from protocol.errors import CommandRefused, RuntimeFault
from protocol.image_ref import parse_image_reference, registry_refusal
from protocol.models import (
    FailureBundle,
    Health,
    HookName,
    OperationOutcome,
    PrepareCommand,
    Reason,
    UpdatePhase,
)
from protocol.spec import HookPlace, ServiceSpec, UpdateOrder, colour_in


class ServiceUpdater(CrashRecovering):
    """Prepare, apply (stop-first or start-first), rollback; restore and crash recovery
    come from the classes it builds on, the shared steps from UpdateSteps."""

    # ---- prepare ----

    async def prepare(self, command: PrepareCommand, emit: Emit) -> PrepareResult:
        on = Preparing(
            self.settings, self.runtime, self.config, self.failpoint, self.retention.make_room
        )
        return await prepare(command, emit, on)

    # ---- apply ----

    async def apply(
        self,
        operation_id: str,
        spec: ServiceSpec,
        emit: Emit,
        rollout_id: str | None = None,
        *,
        going_back: bool = False,
    ) -> OperationResult:
        """Replace the service's container with ``spec``; ``going_back`` (a rollback) runs
        no pre_update hook: the way back is never refused."""
        image = await self.local_image(spec)
        old = await self.runtime.inspect_container(self.main_name(spec.name))
        op = Operation(operation_id, spec, emit, rollout_id, image_label(old) or "")
        if self._already_runs(spec, image, old):
            await emit(UpdatePhase.DONE, "this spec already runs; nothing to do")
            unchanged = Reason(code="unchanged", text=f"{spec.name} already runs {spec.image}")
            return OperationResult(
                OperationOutcome.DONE, status_from_inspect(spec.name, old), reasons=[unchanged]
            )
        # Read before the pre_update hook runs: an unreadable bucket refuses the command
        # with nothing touched, and the controller sends it again.
        files = await self.config.files_for_start(spec)
        refused = None if going_back else await self._pre_update(op, old)
        if refused is not None:
            return refused
        # Like an init container: the config files are in place before anything stops.
        container_spec = await self.config.sync_for_start(spec, files)
        old_image = await self.runtime.inspect_image(old["Image"]) if old else None
        await asyncio.to_thread(
            self.journal.begin,
            spec.name,
            {
                "operation_id": operation_id,
                "rollout_id": rollout_id,
                "service": spec.name,
                "order": spec.update_order.value,
                "image": image,
                "spec": spec.model_dump(mode="json"),
                "old_spec": dump_spec(self.services.current(spec.name)),
                "old_container": old,
                "fresh": old is None,
            },
        )
        await self._phase(op, UpdatePhase.SNAPSHOTTING, "old container configuration journaled")
        try:
            if old is None:
                config, host_config = config_from_spec(container_spec, image, self.agent_id)
                return await self._replace_stop_first(op, None, config, host_config)
            config, host_config = derive_config(
                old, old_image, container_spec, image, self.agent_id
            )
            if spec.update_order is UpdateOrder.START_FIRST:
                return await self._replace_start_first(op, old, config, host_config)
            return await self._replace_stop_first(op, old, config, host_config)
        except RuntimeFault as exc:
            # The engine failed us half-way: settle it as after a crash, from the journal.
            entry = self.journal.get(spec.name)
            if entry is None:
                raise
            cause = Reason(code="engine_error", text=exc.message)
            return await self.recover(entry, emit, cause)

    async def _pre_update(self, op: Operation, old: Inspect | None) -> OperationResult | None:
        """The pre_update hook, before anything is touched: its failure ends the update
        here (the old container runs on), as a host failure. None: go on."""
        if op.spec.hooks.pre_update is None:
            return None
        state = (old or {}).get("State") or {}
        labels = ((old or {}).get("Config") or {}).get("Labels") or {}
        ours = labels.get(AGENT_LABEL) == self.agent_id
        if op.spec.hooks.pre_update.run_in is HookPlace.CONTAINER and not (
            state.get("Running") and ours
        ):
            # Nothing of ours runs (a first deploy, or a container made by hand, which a
            # repair replaces): there is nothing to ask.
            await op.emit(UpdatePhase.CHECKING, "pre_update skipped: no copy of ours runs here")
            return None
        result = await self._hook(op, HookName.PRE_UPDATE, self.main_name(op.spec.name))
        if result is None or result.ok:
            return None
        reason = Reason(code="pre_update_failed", text=hook_failure(result))
        await op.emit(UpdatePhase.ROLLED_BACK, f"{reason.text}; nothing was changed")
        return OperationResult(
            OperationOutcome.ROLLED_BACK,
            status_from_inspect(op.spec.name, old),
            failure=FailureBundle(reason=reason, hooks=(result,)),
            reasons=[reason],
        )

    def _already_runs(self, spec: ServiceSpec, image: str, running: Inspect | None) -> bool:
        """Whether ``spec`` is what this host last completed and its container still runs
        it, healthy: applying it again (a retry, a re-sent rollout) must change nothing.

        A service with config files is always applied: its files may have changed.
        """
        if running is None or spec.config is not None:
            return False
        state = running.get("State") or {}
        config = running.get("Config") or {}
        labels = config.get("Labels") or {}
        if not state.get("Running") or state.get("Restarting"):
            return False
        if (state.get("Health") or {}).get("Status") == Health.UNHEALTHY.value:
            return False
        if config.get("Image") != image or labels.get(AGENT_LABEL) != self.agent_id:
            return False
        return self.services.current(spec.name) == spec

    @property
    def agent_id(self) -> str:
        """The value of the agent label on every container this agent manages."""
        return f"{self.settings.host_id}/{self.settings.container_prefix}"

    async def local_image(self, spec: ServiceSpec) -> str:
        """The image to run: by digest when known, pulled by tag if Prepare was skipped.

        Refused for a registry outside the allowlist, even if the image is already here."""
        ref = parse_image_reference(spec.image)
        refusal = registry_refusal(ref, self.settings.allowed_registries)
        if refusal is not None:
            raise CommandRefused("registry_not_allowed", refusal)
        wanted = ref.local
        if await self.runtime.inspect_image(wanted) is None:
            credential = self.settings.registry_credentials.get(ref.registry_or_default)
            auth = credential.docker_auth() if credential else None
            await self.runtime.pull(
                ref.name, ref.digest or ref.tag or "latest", auth, self.settings.pull_timeout
            )
        return wanted

    async def _replace_stop_first(
        self,
        op: Operation,
        old: Inspect | None,
        config: dict[str, Any],
        host_config: dict[str, Any],
    ) -> OperationResult:
        service = op.spec.name
        main = self.main_name(service)
        if old is not None:
            await self._phase(op, UpdatePhase.STOPPING_OLD, f"stopping {main}")
            await self.runtime.stop(old["Id"], op.spec.stop_grace_period)
            await self.runtime.remove(self.aside_name(service))  # leftover of an old failure
            await self.runtime.rename(old["Id"], self.aside_name(service))
        await self._phase(op, UpdatePhase.STARTING_NEW, f"starting {config['Image']}")
        _, verdict = await self._start_and_probe(op, main, config, host_config)
        if not verdict.healthy:
            return await self._restore(op, old, main, verdict)
        await self._phase(op, UpdatePhase.DONE, "healthy; removing the old container")
        if old is not None:
            await self.runtime.remove(self.aside_name(service))
        return await self._finish_done(op)

    async def _replace_start_first(
        self, op: Operation, old: Inspect, config: dict[str, Any], host_config: dict[str, Any]
    ) -> OperationResult:
        service = op.spec.name
        candidate = self.next_name(service)
        await self.runtime.remove(candidate)
        await self._phase(op, UpdatePhase.STARTING_NEW, f"starting {config['Image']} alongside")
        new_id, verdict = await self._start_and_probe(op, candidate, config, host_config)
        if new_id is None or not verdict.healthy:
            return await self._restore(op, None, candidate, verdict, old_untouched=old)
        await self._phase(op, UpdatePhase.STOPPING_OLD, "new copy healthy; stopping the old one")
        await self.runtime.stop(old["Id"], op.spec.stop_grace_period)
        await self.runtime.remove(self.aside_name(service))
        await self.runtime.rename(old["Id"], self.aside_name(service))
        await self.runtime.rename(new_id, self.main_name(service))
        await self._phase(op, UpdatePhase.DONE, "healthy; removing the old container")
        await self.runtime.remove(self.aside_name(service))
        return await self._finish_done(op)

    async def _start_and_probe(
        self, op: Operation, name: str, config: dict[str, Any], host_config: dict[str, Any]
    ) -> tuple[str | None, HealthVerdict]:
        """Create and start the new container as ``name`` and wait for its health verdict.

        The id is None when the engine would not create or start it.
        """
        try:
            new_id = await self.runtime.create_container(name, config, host_config)
            await self.runtime.start(new_id)
        except RuntimeFault as exc:
            return None, HealthVerdict(False, f"could not start the new container: {exc.message}")
        verdict = await self._probe(op, name)
        if not verdict.healthy:
            return new_id, verdict
        hooked = await self._hook(op, HookName.POST_UPDATE, name)
        if hooked is not None and not hooked.ok:
            return new_id, HealthVerdict(False, hook_failure(hooked), hooks=(hooked,))
        colour, blue_green = colour_in(op.spec), op.spec.blue_green
        if colour is not None and blue_green is not None:
            # Like post_update: the update is done only once routers follow it.
            host = self.settings.host_id
            failed = await run_switch_hook(blue_green, op.spec.name, colour, host)
            if failed is not None:
                return new_id, HealthVerdict(False, failed)
        return new_id, verdict

    # ---- rollback ----

    async def rollback(
        self, operation_id: str, service: str, emit: Emit, rollout_id: str | None = None
    ) -> OperationResult:
        previous = self.services.previous(service)
        if previous is None:
            raise CommandRefused(
                "no_previous_version", f"the agent has recorded no previous version of {service}"
            )
        current = self.services.current(service)
        result = await self.apply(operation_id, previous, emit, rollout_id, going_back=True)
        if result.outcome is OperationOutcome.DONE:
            # Swap, so that a second rollback returns to where the first one started.
            self.services.record_update(previous, current)
        return result

    # ---- remove ----

    async def remove(self, service: str, emit: Emit) -> OperationResult:
        """Stop and remove every copy of the service, and forget it: it left this host's
        selector, or was deleted. Removing what is already gone is done as well."""
        spec = self.services.current(service)
        grace = spec.stop_grace_period if spec is not None else 10.0
        for suffix in COPY_SUFFIXES:
            name = self.main_name(service) + suffix
            if await self.runtime.inspect_container(name) is None:
                continue
            await emit(UpdatePhase.STOPPING_OLD, f"removing {name}")
            await self.runtime.stop(name, grace)
            await self.runtime.remove(name)
        self.services.forget(service)
        await emit(UpdatePhase.DONE, f"{service} removed")
        return OperationResult(OperationOutcome.DONE, await self.status(service))
