"""One host's update of one service: prepare, apply, restore, rollback, recover.

The phases are DESIGN.md's state machine. Every phase is journaled before it happens and
published as an event. The old container is set aside (stopped and renamed), never
removed, until the new one has proven healthy; any failure restores it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from node_agent.config.sync import ConfigSync
from node_agent.runtime import AGENT_LABEL, DockerRuntime, Inspect
from node_agent.settings import AgentSettings
from node_agent.update.container_config import (
    config_from_spec,
    derive_config,
)
from node_agent.update.journal import Journal
from node_agent.update.operation import (
    AGENT_RESTARTED,
    ASIDE_SUFFIX,
    CANDIDATE_STARTED,
    LOG_LINES_IN_BUNDLE,
    NEXT_SUFFIX,
    Emit,
    Operation,
    OperationResult,
    PrepareResult,
    RecordOutcome,
    dump_spec,
    record_nowhere,
    status_from_inspect,
)
from node_agent.update.prepare import Preparing, prepare
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.service_store import ServiceStore
from protocol.errors import CommandRefused, RuntimeFault
from protocol.image_ref import parse_image_reference, registry_refusal
from protocol.models import (
    FailureBundle,
    Health,
    OperationOutcome,
    PrepareCommand,
    Reason,
    ServiceStatus,
    UpdatePhase,
)
from protocol.spec import ServiceSpec, UpdateOrder


class ServiceUpdater:
    def __init__(
        self,
        settings: AgentSettings,
        runtime: DockerRuntime,
        journal: Journal,
        services: ServiceStore,
        config: ConfigSync,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.journal = journal
        self.services = services
        self.config = config
        self.record_outcome: RecordOutcome = record_nowhere
        """Set by the daemon: called before the journal is closed (see :meth:`_conclude`)."""

    # ---- names ----

    def main_name(self, service: str) -> str:
        return self.settings.container_name(service)

    def aside_name(self, service: str) -> str:
        return self.main_name(service) + ASIDE_SUFFIX

    def next_name(self, service: str) -> str:
        return self.main_name(service) + NEXT_SUFFIX

    # ---- inspect ----

    async def status(self, service: str) -> ServiceStatus:
        info = await self.runtime.inspect_container(self.main_name(service))
        return status_from_inspect(service, info)

    # ---- prepare ----

    async def prepare(self, command: PrepareCommand, emit: Emit) -> PrepareResult:
        on = Preparing(self.settings, self.runtime, self.config, self.failpoint)
        return await prepare(command, emit, on)

    # ---- apply ----

    async def apply(
        self, operation_id: str, spec: ServiceSpec, emit: Emit, rollout_id: str | None = None
    ) -> OperationResult:
        op = Operation(operation_id, spec, emit)
        image = await self.local_image(spec)
        old = await self.runtime.inspect_container(self.main_name(spec.name))
        if self._already_runs(spec, image, old):
            await emit(UpdatePhase.DONE, "this spec already runs; nothing to do")
            unchanged = Reason(code="unchanged", text=f"{spec.name} already runs {spec.image}")
            return OperationResult(
                OperationOutcome.DONE, status_from_inspect(spec.name, old), reasons=[unchanged]
            )
        # Like an init container: the config files are in place before anything stops.
        container_spec = await self.config.sync_for_start(spec)
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
        wanted = f"{ref.name}@{ref.digest}" if ref.digest else spec.image
        if await self.runtime.inspect_image(wanted) is None:
            credential = self.settings.registry_credentials.get(ref.registry_or_default)
            auth = credential.docker_auth() if credential else None
            await self.runtime.pull(
                ref.name, ref.digest or ref.tag or "latest", auth, self.settings.pull_timeout
            )
        return wanted

    async def _phase(self, op: Operation, phase: UpdatePhase, detail: str = "") -> None:
        # fsynced: in a worker thread, so other services' work goes on meanwhile
        await asyncio.to_thread(self.journal.record, op.spec.name, phase)
        op.mark(phase.value)
        await op.emit(phase, detail)
        self.failpoint(phase.value)

    def failpoint(self, name: str) -> None:
        """Crash tests: SIGKILL this agent at the named point (FLEET_FAILPOINT)."""
        if self.settings.failpoint == name:
            os.kill(os.getpid(), signal.SIGKILL)

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
        return new_id, await self._probe(op, name)

    async def _probe(self, op: Operation, container: str) -> HealthVerdict:
        await self._phase(op, UpdatePhase.PROBING, f"probing {container}")

        async def soaking() -> None:
            await self._phase(op, UpdatePhase.SOAKING, "passed; staying healthy for min time")

        return await wait_until_healthy(op.spec.health, self.runtime, container, soaking)

    async def _finish_done(self, op: Operation) -> OperationResult:
        previous = self.services.current(op.spec.name)
        if previous != op.spec:  # else recorded already, before a crash: keep its previous
            self.services.record_update(op.spec, previous)
        done = OperationResult(OperationOutcome.DONE, await self.status(op.spec.name))
        return await self._conclude(op, done)

    async def _conclude(self, op: Operation, result: OperationResult) -> OperationResult:
        """Store the outcome, then close the journal.

        In this order, an agent killed between the two finds on restart the outcome and
        an entry to settle (which changes nothing more), never a closed journal and no
        outcome: the controller's retry of the same command would run it twice.
        """
        await self.record_outcome(op.operation_id, op.spec.name, result)
        self.failpoint("concluded")
        self.journal.finish(op.spec.name)
        return result

    async def _restore(
        self,
        op: Operation,
        old: Inspect | None,
        new_container: str,
        verdict: HealthVerdict,
        old_untouched: Inspect | None = None,
    ) -> OperationResult:
        service = op.spec.name
        await self._phase(op, UpdatePhase.RESTORING, verdict.reason)
        bundle = await self.failure_bundle(op, new_container, verdict)
        await self.runtime.remove(new_container)
        if old_untouched is not None:  # start-first: the old copy never stopped
            return await self._end_rolled_back(op, bundle)
        if old is None:
            await self._phase(op, UpdatePhase.FAILED, "new service failed; nothing to restore")
            failed = OperationResult(
                OperationOutcome.FAILED, await self.status(service), bundle, [bundle.reason]
            )
            return await self._conclude(op, failed)
        await self.runtime.rename(old["Id"], self.main_name(service))
        return await self._bring_back_old(op, old["Id"], bundle)

    async def _bring_back_old(
        self, op: Operation, old_id: str, bundle: FailureBundle
    ) -> OperationResult:
        """Start the old container (already named as the service) and prove it healthy."""
        service = op.spec.name
        info = await self.runtime.inspect_container(old_id)
        if info is not None and not info["State"]["Running"]:
            await self.runtime.start(old_id)
        old_spec = self.services.current(service)
        old_verdict = await wait_until_healthy(
            old_spec.health if old_spec else None, self.runtime, self.main_name(service)
        )
        if not old_verdict.healthy:
            await self._phase(
                op, UpdatePhase.FAILED, f"old version unhealthy: {old_verdict.reason}"
            )
            reason = Reason(code="restore_failed", text=old_verdict.reason)
            failed = OperationResult(
                OperationOutcome.FAILED, await self.status(service), bundle, [bundle.reason, reason]
            )
            return await self._conclude(op, failed)
        return await self._end_rolled_back(op, bundle)

    async def _end_rolled_back(self, op: Operation, bundle: FailureBundle) -> OperationResult:
        await self._phase(op, UpdatePhase.ROLLED_BACK, "old version restored and healthy")
        rolled_back = OperationResult(
            OperationOutcome.ROLLED_BACK, await self.status(op.spec.name), bundle, [bundle.reason]
        )
        return await self._conclude(op, rolled_back)

    async def failure_bundle(
        self, op: Operation, container: str, verdict: HealthVerdict
    ) -> FailureBundle:
        info = await self.runtime.inspect_container(container)
        state = (info or {}).get("State") or {}
        running = bool(state.get("Running"))
        return FailureBundle(
            reason=Reason(code="update_failed", text=verdict.reason),
            exit_code=verdict.exit_code
            if verdict.exit_code is not None
            else (None if running else state.get("ExitCode")),
            oom_killed=verdict.oom_killed or bool(state.get("OOMKilled")),
            last_log_lines=tuple(await self.runtime.logs_tail(container, LOG_LINES_IN_BUNDLE)),
            probe_results=tuple(verdict.results),
            timings=dict(op.timings),
        )

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
        result = await self.apply(operation_id, previous, emit, rollout_id)
        if result.outcome is OperationOutcome.DONE:
            # Swap, so that a second rollback returns to where the first one started.
            self.services.record_update(previous, current)
        return result

    # ---- recovery after a crash ----

    async def recover(
        self, entry: dict[str, Any], emit: Emit, cause: Reason = AGENT_RESTARTED
    ) -> OperationResult:
        """Finish or undo an operation the agent died (or the engine failed) in the middle of."""
        spec = ServiceSpec.model_validate(entry["spec"])
        op = Operation(entry["operation_id"], spec, emit)
        service = spec.name
        main = await self.runtime.inspect_container(self.main_name(service))
        aside = await self.runtime.inspect_container(self.aside_name(service))
        candidate = await self.runtime.inspect_container(self.next_name(service))
        started_first = entry.get("order") == UpdateOrder.START_FIRST.value
        if candidate is not None and started_first and entry.get("phase") in CANDIDATE_STARTED:
            return await self._recover_start_first(op, main, aside, candidate)
        if candidate is not None:
            await self.runtime.remove(candidate["Id"])
        main_is_new = main is not None and main["Config"]["Image"] == entry["image"]
        if main_is_new and (aside is not None or entry["fresh"] or entry["phase"] == "done"):
            assert main is not None
            if not main["State"]["Running"]:
                await self.runtime.start(main["Id"])
            verdict = await self._probe(op, self.main_name(service))
            if verdict.healthy:
                await self._phase(op, UpdatePhase.DONE, "recovered: new version healthy")
                if aside is not None:
                    await self.runtime.remove(aside["Id"])
                return await self._finish_done(op)
            return await self._restore(op, aside, self.main_name(service), verdict)
        # The old container is still the service (never renamed, or renamed aside).
        if aside is not None:
            if main is not None:
                await self.runtime.remove(main["Id"])
            await self.runtime.rename(aside["Id"], self.main_name(service))
            main = aside
        if main is None:
            await self._phase(op, UpdatePhase.FAILED, "recovered: no container to restore")
            failed = OperationResult(OperationOutcome.FAILED, await self.status(service))
            return await self._conclude(op, failed)
        bundle = FailureBundle(reason=cause, timings=dict(op.timings))
        await self._phase(op, UpdatePhase.RESTORING, "recovered: restoring the old version")
        return await self._bring_back_old(op, main["Id"], bundle)

    async def _recover_start_first(
        self, op: Operation, main: Inspect | None, aside: Inspect | None, candidate: Inspect
    ) -> OperationResult:
        """Start-first, killed once the new copy ran beside the old: go forward when the
        new copy is healthy now, else remove it and bring the old one back."""
        service = op.spec.name
        name = self.next_name(service)
        if not candidate["State"]["Running"]:
            await self.runtime.start(candidate["Id"])
        verdict = await self._probe(op, name)
        old = main if main is not None else aside
        if verdict.healthy:
            await self._phase(op, UpdatePhase.STOPPING_OLD, "recovered: new copy healthy")
            if main is not None:
                await self.runtime.stop(main["Id"], op.spec.stop_grace_period)
                await self.runtime.remove(self.aside_name(service))
                await self.runtime.rename(main["Id"], self.aside_name(service))
            await self.runtime.rename(candidate["Id"], self.main_name(service))
            await self._phase(op, UpdatePhase.DONE, "recovered: new version healthy")
            if old is not None:
                await self.runtime.remove(old["Id"])
            return await self._finish_done(op)
        await self._phase(op, UpdatePhase.RESTORING, verdict.reason)
        bundle = await self.failure_bundle(op, name, verdict)
        await self.runtime.remove(candidate["Id"])
        if old is None:
            await self._phase(op, UpdatePhase.FAILED, "recovered: no container to restore")
            failed = OperationResult(OperationOutcome.FAILED, await self.status(service), bundle)
            return await self._conclude(op, failed)
        if main is None:
            await self.runtime.rename(old["Id"], self.main_name(service))
        return await self._bring_back_old(op, old["Id"], bundle)
