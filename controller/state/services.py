"""Each service's declaration and revisions, in KV ``fleet_services`` (JSON values).

The record keeps the revisions (10), the one the fleet accepted (``current``), the
declared update policy and drift rule, and whether the service was deleted; every
change is a compare-and-set on the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, Field

from controller.rollouts.convergence import Desired, DriftPolicy
from controller.rollouts.model import RolloutSpec
from controller.rollouts.workload import Workload
from controller.state.store import CAS_ATTEMPTS, RolloutConflict, kv_get, kv_keys
from protocol.app import AppSpec
from protocol.base import FrozenModel, ServiceName
from protocol.spec import Colour


class Revision(FrozenModel):
    revision: int
    spec: Workload
    rollout_id: str
    created_at: AwareDatetime


class ServiceRecord(FrozenModel):
    service: ServiceName
    revisions: tuple[Revision, ...] = ()
    current: int | None = None
    """The revision the fleet last completed a rollout to."""
    limit: int = Field(default=10, ge=1)
    colour: Colour | None = None
    """Blue-green: the colour the service's traffic goes to; routers follow this key."""
    policy: RolloutSpec | None = None
    """The declared update policy and host selector (the last rollout's, for a service
    declared with `rollout start`); convergence paces itself by it."""
    drift: DriftPolicy = DriftPolicy.REPAIR
    deleted: bool = False
    """`fleetctl delete service`: taken off every host; its history is kept."""
    keep_containers: bool = False
    """Deleted with --keep-containers: no longer managed, its containers left running."""

    def revision(self, number: int) -> Revision | None:
        return next((r for r in self.revisions if r.revision == number), None)

    @property
    def latest_spec(self) -> Workload | None:
        """The accepted revision's spec, or else the newest's."""
        current = self.revision(self.current) if self.current is not None else None
        if current is not None:
            return current.spec
        return self.revisions[-1].spec if self.revisions else None

    @property
    def next_revision(self) -> int:
        return max((r.revision for r in self.revisions), default=0) + 1

    def desired(self) -> Desired | None:
        """The service as convergence sees it; None until a rollout of it completed."""
        accepted = self.revision(self.current) if self.current else None
        policy = self.policy
        if accepted is None or policy is None or (self.deleted and self.keep_containers):
            return None  # never declared (a service from before declarations), or let go
        return Desired(
            service=self.service,
            revision=accepted.revision,
            spec=accepted.spec,
            selector=dict(policy.selector),
            drift=self.drift,
            newer=tuple(r.spec for r in self.revisions if r.revision > accepted.revision),
            deleted=self.deleted,
            colour=self.colour,
        )


class ServiceStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, service: str) -> tuple[ServiceRecord, int | None]:
        entry = await kv_get(self._kv, service)
        if entry is None or entry.value is None:
            return ServiceRecord(service=service), None
        return ServiceRecord.model_validate_json(entry.value), entry.revision

    async def put(self, record: ServiceRecord, revision: int | None) -> None:
        data = record.model_dump_json().encode()
        try:
            if revision is None:
                await self._kv.create(record.service, data)
            else:
                await self._kv.update(record.service, data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RolloutConflict(f"service {record.service} changed meanwhile; retry") from exc

    async def clash(self, workload: Workload) -> str | None:
        """Why ``workload`` cannot be declared beside what is: an app member's container
        is named ``<app>-<member>``, as a service of that name would be (one container
        name, one lock, one record on each host). None when nothing clashes."""
        if isinstance(workload, AppSpec):
            for member in workload.members:
                record, _ = await self.get(member.spec.name)
                if record.revisions and not record.deleted:
                    return (
                        f"member {member.name} of {workload.name} would run as "
                        f"{member.spec.name}, a declared service: rename one of them"
                    )
            return None
        parts = workload.name.split("-")
        for cut in range(1, len(parts)):  # the apps whose member it could be
            app, _ = await self.get("-".join(parts[:cut]))
            declared = app.latest_spec
            if app.deleted or not isinstance(declared, AppSpec):
                continue
            if any(member.spec.name == workload.name for member in declared.members):
                return f"{workload.name} runs as a member of app {app.service}: rename one of them"
        return None

    async def names(self) -> list[str]:
        return await kv_keys(self._kv, "")

    async def add_revision(
        self,
        service: str,
        spec: Workload,
        rollout_id_for: Callable[[int], str],
        now: datetime,
        policy: RolloutSpec | None = None,
    ) -> tuple[ServiceRecord, Revision]:
        """A new revision of the spec; with ``policy``, the declaration's policy too."""
        record, revision = await self.get(service)
        number = record.next_revision
        added = Revision(
            revision=number, spec=spec, rollout_id=rollout_id_for(number), created_at=now
        )
        kept = (*record.revisions, added)[-record.limit :]
        update: dict[str, object] = {"revisions": kept}
        if policy is not None:  # a rollout of a deleted service declares it again
            update |= {"deleted": False, "keep_containers": False}
            if record.policy is None:  # the first rollout declares it; later, apply does
                update["policy"] = policy
        updated = record.model_copy(update=update)
        await self.put(updated, revision)
        return updated, added

    async def declare(self, service: str, policy: RolloutSpec, drift: DriftPolicy) -> None:
        """Set the declared policy (selector included) and drift rule, and undo a delete;
        nothing restarts."""
        update = {"policy": policy, "drift": drift, "deleted": False, "keep_containers": False}
        await self._change(service, update)

    async def delete(self, service: str, *, keep_containers: bool) -> None:
        """Take the service off every host (or only stop managing it); history is kept."""
        await self._change(service, {"deleted": True, "keep_containers": keep_containers})

    async def mark_current(self, service: str, number: int) -> None:
        await self._change(service, {"current": number})

    async def set_colour(self, service: str, colour: Colour) -> bool:
        """Point the service's traffic at ``colour``; False if it already was."""
        return await self._change(service, {"colour": colour})

    async def _change(self, service: str, update: dict[str, object]) -> bool:
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self.get(service)
            changed = record.model_copy(update=update)
            if changed == record:
                return False
            try:
                await self.put(changed, revision)
                return True
            except RolloutConflict:
                continue
        raise RolloutConflict(f"service {service} kept changing; gave up after retries")
