"""Crash recovery: an operation the agent died (or the engine failed) in the middle of is
finished when the new container is healthy, else undone, from its journal entry."""

from __future__ import annotations

from typing import Any

from node_agent.runtime import Inspect
from node_agent.update.operation import (
    AGENT_RESTARTED,
    CANDIDATE_STARTED,
    Emit,
    Operation,
    OperationResult,
)
from node_agent.update.restore import Restoring
from protocol.models import (
    FailureBundle,
    OperationOutcome,
    Reason,
    UpdatePhase,
)
from protocol.spec import ServiceSpec, UpdateOrder


class CrashRecovering(Restoring):
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
