"""Restore: an update that failed puts the old container back (the same one), proves it
healthy, and reports rolled_back with a failure bundle; or failed, when it cannot."""

from __future__ import annotations

from node_agent.runtime import Inspect
from node_agent.update.operation import (
    LOG_LINES_IN_BUNDLE,
    Operation,
    OperationResult,
)
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.steps import UpdateSteps
from protocol.models import (
    FailureBundle,
    OperationOutcome,
    Reason,
    UpdatePhase,
)


class Restoring(UpdateSteps):
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
            hooks=verdict.hooks,
        )
