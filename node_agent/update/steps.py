"""The steps every operation on a service is made of, shared by its phases (apply,
restore, crash recovery): the containers' names, the journaled phase change, the probe,
and the conclusion that stores the outcome before the journal closes."""

from __future__ import annotations

import asyncio
import os
import signal

from node_agent.config.sync import ConfigSync
from node_agent.runtime import DockerRuntime
from node_agent.settings import AgentSettings
from node_agent.update.hooks import PublishHook, publish_nowhere, run_hook
from node_agent.update.image_retention import ImageHistory, ImageRetention
from node_agent.update.journal import Journal
from node_agent.update.operation import (
    ASIDE_SUFFIX,
    NEXT_SUFFIX,
    Operation,
    OperationResult,
    RecordOutcome,
    record_nowhere,
    status_from_inspect,
)
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.service_store import ServiceStore
from protocol.models import (
    HookName,
    HookResult,
    HookRun,
    OperationOutcome,
    ServiceStatus,
    UpdatePhase,
)


class UpdateSteps:
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
        self.publish_hook: PublishHook = publish_nowhere
        """Set by the daemon: publishes each hook run as an event."""
        history = ImageHistory(settings.state_dir / "images")
        self.retention = ImageRetention(runtime, services, history, settings.host_id)

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

    async def _probe(self, op: Operation, container: str) -> HealthVerdict:
        await self._phase(op, UpdatePhase.PROBING, f"probing {container}")

        async def soaking() -> None:
            await self._phase(op, UpdatePhase.SOAKING, "passed; staying healthy for min time")

        return await wait_until_healthy(op.spec.health, self.runtime, container, soaking)

    async def _hook(self, op: Operation, name: HookName, container: str) -> HookResult | None:
        """Run the spec's ``name`` hook, if it has one, and publish how it went."""
        hooks = op.spec.hooks
        hook = hooks.pre_update if name is HookName.PRE_UPDATE else hooks.post_update
        if hook is None:
            return None
        env = {
            "FLEET_SERVICE": op.spec.name,
            "FLEET_HOST": self.settings.host_id,
            "FLEET_IMAGE": op.spec.image,
            "FLEET_OLD_IMAGE": op.old_image,
        }
        allowed = self.settings.allow_host_hooks
        result = await run_hook(name, hook, self.runtime, container, env, allowed)
        event = HookRun(
            sender=self.settings.host_id,
            service=op.spec.name,
            host=self.settings.host_id,
            operation_id=op.operation_id,
            rollout_id=op.rollout_id,
            result=result,
        )
        await self.publish_hook(event)
        return result

    async def _finish_done(self, op: Operation) -> OperationResult:
        previous = self.services.current(op.spec.name)
        if previous != op.spec:  # else recorded already, before a crash: keep its previous
            self.services.record_update(op.spec, previous)
        done = OperationResult(OperationOutcome.DONE, await self.status(op.spec.name))
        concluded = await self._conclude(op, done)
        await self.retention.after_update(
            op.spec.name, self.main_name(op.spec.name), op.operation_id
        )
        return concluded

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
