"""One host's update of an app: its members as one unit.

Every changed member's image is pulled before anything stops. Unchanged members are not
touched. Changed members are replaced in dependency order, each once what it depends on
meets its condition (started, healthy, completed successfully); a member whose
dependency was replaced is restarted only when the file says so (``restart: true``).
Each replaced member's old container is set aside (stopped and renamed), never removed,
until the whole app is through. If any member fails, every member already replaced is
restored, in reverse order, and the reply carries a bundle per replaced member
(bundles.py).

One journal entry covers the whole group: the members replaced so far are written down
before each is touched. An agent killed at any point restores the whole group on restart
(``recover``), unless it had reached ``done``, after which it only finishes tidying: the
host never runs a mix of old and new members that the file never described.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node_agent.apps.bundles import bundle, member_bundle, member_bundles
from node_agent.apps.conditions import wait_for
from node_agent.apps.engine_objects import (
    connect_others,
    ensure_engine_objects,
    missing_external,
)
from node_agent.apps.store import AppStore
from node_agent.runtime import AGENT_LABEL, Inspect
from node_agent.update.container_config import config_from_spec
from node_agent.update.operation import AGENT_RESTARTED, Emit, OperationResult
from node_agent.update.probes import HealthVerdict, wait_until_healthy
from node_agent.update.updater import ServiceUpdater
from protocol.app import AppSpec, Member, one_shots, start_order
from protocol.errors import RuntimeFault
from protocol.fingerprint import image_digest, settings_fingerprint
from protocol.models import (
    ContainerState,
    FailureBundle,
    Health,
    OperationOutcome,
    PrepareAppCommand,
    PrepareCommand,
    Reason,
    ServiceStatus,
    UpdatePhase,
)

JOURNAL_SUFFIX = "@app"


class AppUpdater:
    def __init__(self, updater: ServiceUpdater, store: AppStore) -> None:
        self._u = updater
        self.runtime = updater.runtime
        self.store = store
        """The app each host last applied: what its heartbeat reports."""

    # ---- prepare ----

    async def prepare(
        self, command: PrepareAppCommand, emit: Emit
    ) -> tuple[list[Reason], dict[str, str]]:
        """Every changed member checked and its image pulled, by digest (nothing running
        is touched); why the host is not ready (none: ready), and each member's digest:
        pulled, or, for a member that runs as declared, the one it runs."""
        reasons = await missing_external(self.runtime, command.app)
        digests: dict[str, str] = {}
        jobs = one_shots(command.app)
        for member in command.app.members:
            runs = await self._runs_as_declared(member, member.name in jobs)
            if runs is not None:
                digests[member.name] = runs
                continue
            one = PrepareCommand(
                service=member.spec, allow_downgrade=command.allow_downgrade,
                allow_major=command.allow_major, rollout_id=command.rollout_id,
                host=command.host, sender=command.sender, expires_at=command.expires_at,
            )  # fmt: skip
            prepared = await self._u.prepare(one, emit)
            if prepared.digest is not None:
                digests[member.name] = prepared.digest
            reasons += [
                reason.model_copy(update={"text": f"{member.name}: {reason.text}"})
                for reason in prepared.reasons
            ]
        return reasons, digests

    async def _runs_as_declared(self, member: Member, one_shot: bool) -> str | None:
        """The digest this host runs the member at, when it runs what ``member`` declares
        (the declaration may name a tag where the host pinned a digest)."""
        current = self._u.services.current(member.spec.name)
        digest = image_digest(current.image) if current is not None else None
        if current is None or digest is None:
            return None
        # The fingerprint holds the image's name and tag; a digest the declaration names
        # must be the one this host runs.
        if settings_fingerprint(current) != settings_fingerprint(member.spec):
            return None
        if image_digest(member.spec.image) not in (None, digest):
            return None
        running = await self.runtime.inspect_container(self._main(member))
        image = str(((running or {}).get("Config") or {}).get("Image") or "")
        return digest if self._unchanged(member, image, running, one_shot) else None

    # ---- apply ----

    async def apply(
        self, operation_id: str, app: AppSpec, emit: Emit, rollout_id: str | None = None
    ) -> OperationResult:
        members = {m.name: m for m in app.members}
        images = {name: await self._u.local_image(m.spec) for name, m in members.items()}
        await emit(UpdatePhase.PULLING, "every member's image is here")
        olds = {
            name: await self.runtime.inspect_container(self._main(m)) for name, m in members.items()
        }
        jobs = one_shots(app)
        changed = [
            name for name in start_order(app)
            if not self._unchanged(members[name], images[name], olds[name], name in jobs)
        ]  # fmt: skip
        if not changed:
            await self._remove_dropped(app, emit)
            # (What changed may be only what nothing on the host shows.)
            self.store.put(app)
            await emit(UpdatePhase.DONE, "every member already runs as declared")
            return OperationResult(OperationOutcome.DONE, _app_status(app.name))
        missing = await missing_external(self.runtime, app)
        if missing:  # before anything is touched
            return OperationResult(
                OperationOutcome.FAILED, _app_status(app.name),
                failure=FailureBundle(reason=missing[0]), reasons=missing,
            )  # fmt: skip
        await ensure_engine_objects(self.runtime, app)
        key = app_journal_key(app.name)
        await asyncio.to_thread(
            self._u.journal.begin, key,
            {
                "kind": "app", "journal_key": key, "operation_id": operation_id,
                "rollout_id": rollout_id,
                "service": app.name, "app": app.model_dump(mode="json"), "images": images,
                "olds": olds, "replaced": [],
            },
        )  # fmt: skip
        for name in start_order(app):
            member = members[name]
            try:
                if name in changed:
                    failure = await self._replace(key, app, member, images[name], olds[name], emit)
                elif any(d.restart and d.member in changed for d in member.depends_on):
                    failure = await self._restart(app, member, emit)
                else:
                    continue
            except RuntimeFault as exc:  # the engine refused or failed: a failed member
                failure = bundle(f"{member.name}: {exc.message}", "engine_error")
            if failure is not None:
                return await self._restore(key, emit, failure, member.name)
        return await self._commit(key, app, emit, changed)

    def _unchanged(self, member: Member, image: str, old: Inspect | None, one_shot: bool) -> bool:
        """What this host last completed for the member, and its container still runs it
        (or, for a ``one_shot`` member, ran it to success: any other stopped member is
        started again). Its settings count, not its
        health check (a change of probe timing alone restarts nothing, as for a service)."""
        current = self._u.services.current(member.spec.name)
        if old is None or current is None:
            return False
        if settings_fingerprint(current) != settings_fingerprint(member.spec):
            return False
        config, state = old.get("Config") or {}, old.get("State") or {}
        labels = config.get("Labels") or {}
        if config.get("Image") != image or labels.get(AGENT_LABEL) != self._u.agent_id:
            return False
        if not state.get("Running"):
            return one_shot and state.get("ExitCode") == 0
        return (state.get("Health") or {}).get("Status") != Health.UNHEALTHY.value

    async def _replace(
        self, key: str, app: AppSpec, member: Member, image: str, old: Inspect | None, emit: Emit
    ) -> FailureBundle | None:
        why = await self._dependencies_met(app, member)
        if why is not None:
            return bundle(f"{member.name} cannot start: {why}")
        main = self._main(member)
        # Written down first: from here on, a crash restores this member too.
        entry = self._u.journal.get(key) or {}
        await asyncio.to_thread(
            self._u.journal.record, key, UpdatePhase.STOPPING_OLD,
            replaced=[*entry.get("replaced", []), member.name],
        )  # fmt: skip
        await emit(UpdatePhase.STOPPING_OLD, f"replacing {member.name}")
        if old is not None:
            await self.runtime.stop(old["Id"], member.spec.stop_grace_period)
            await self.runtime.remove(self._aside(member))
            await self.runtime.rename(old["Id"], self._aside(member))
        self._u.failpoint("app_member_stopped")
        self._u.failpoint(f"app_member_stopped:{member.name}")
        config, host_config = config_from_spec(member.spec, image, self._u.agent_id)
        await self.runtime.remove(main)  # a leftover of an earlier failure
        created = await self.runtime.create_container(main, config, host_config)
        await connect_others(self.runtime, created, member.spec.container.networks)
        await self.runtime.start(created)
        await emit(UpdatePhase.PROBING, f"{member.name} started; checking it")
        self._u.failpoint("app_member_started")
        self._u.failpoint(f"app_member_started:{member.name}")
        verdict = await self._settle(member, main)
        if not verdict.healthy:
            return await member_bundle(self.runtime, member.name, main, verdict)
        return None

    async def _restart(self, app: AppSpec, member: Member, emit: Emit) -> FailureBundle | None:
        why = await self._dependencies_met(app, member)
        if why is not None:
            return bundle(f"{member.name} cannot restart: {why}")
        await emit(UpdatePhase.STARTING_NEW, f"restarting {member.name} (restart: true)")
        main = self._main(member)
        await self.runtime.restart(main, member.spec.stop_grace_period)
        verdict = await self._settle(member, main)
        return (
            None
            if verdict.healthy
            else await member_bundle(self.runtime, member.name, main, verdict)
        )

    async def _dependencies_met(self, app: AppSpec, member: Member) -> str | None:
        for dependency in member.depends_on:
            other = app.member(dependency.member)
            why = await wait_for(
                self.runtime, self._main(other), dependency.condition, other.awaited_for
            )
            if why is not None and dependency.required:
                return f"{dependency.member} is not {dependency.condition.value}: {why}"
        return None

    async def _settle(self, member: Member, container: str) -> HealthVerdict:
        """Healthy (or, without a check, running for a while); a member whose restart
        policy lets it end (no, on-failure) may also end successfully: a one-shot job."""
        verdict = await wait_until_healthy(member.spec.health, self.runtime, container)
        if verdict.healthy or not member.may_exit:
            return verdict
        state = ((await self.runtime.inspect_container(container)) or {}).get("State") or {}
        if not state.get("Running") and state.get("ExitCode") == 0:
            return HealthVerdict(True, "completed")
        return verdict

    # ---- the end: committed, or restored ----

    async def _commit(
        self, key: str, app: AppSpec, emit: Emit, changed: list[str]
    ) -> OperationResult:
        await asyncio.to_thread(self._u.journal.record, key, UpdatePhase.DONE)
        self._u.failpoint("app_done")
        return await self._finish(key, app, emit, changed)

    async def _finish(
        self, key: str, app: AppSpec, emit: Emit, changed: list[str]
    ) -> OperationResult:
        """After the commit point: the set-aside containers go, the specs are recorded."""
        for name in changed:
            member = app.member(name)
            await self.runtime.remove(self._aside(member))
            previous = self._u.services.current(member.spec.name)
            if previous != member.spec:
                self._u.services.record_update(member.spec, previous)
        await self._remove_dropped(app, emit)
        self.store.put(app)
        await emit(UpdatePhase.DONE, f"{', '.join(changed)} replaced; the app is healthy")
        return await self._conclude(
            key, OperationResult(OperationOutcome.DONE, _app_status(app.name))
        )

    async def _remove_dropped(self, app: AppSpec, emit: Emit) -> None:
        """Members the app had here and has no more (the file dropped them) are removed,
        dependants first, once the update went through; before the app is recorded, so
        an agent killed meanwhile removes them when it finishes the update."""
        previous = self.store.get(app.name)
        if previous is None:
            return
        kept = {member.name for member in app.members}
        for name in reversed(start_order(previous)):
            if name not in kept:
                await self._u.remove(previous.member(name).spec.name, emit)

    async def _restore(
        self, key: str, emit: Emit, failure: FailureBundle, failed: str | None = None
    ) -> OperationResult:
        entry = self._u.journal.get(key) or {}
        journaled = entry.get("members")
        if journaled is None:  # read once, while the new containers are still there
            app = AppSpec.model_validate(entry["app"])
            found = await member_bundles(
                self.runtime, entry.get("replaced", []), failed, failure,
                lambda name: self._main(app.member(name)),
            )  # fmt: skip
            journaled = {name: b.model_dump(mode="json") for name, b in found.items()}
        # The bundles are journaled: an agent killed while restoring answers with them,
        # not with "the agent restarted".
        await asyncio.to_thread(
            self._u.journal.record, key, UpdatePhase.RESTORING,
            bundle=failure.model_dump(mode="json"), members=journaled,
        )  # fmt: skip
        await emit(UpdatePhase.RESTORING, failure.reason.text)
        self._u.failpoint("app_restoring")
        await self._put_back(entry)
        await asyncio.to_thread(self._u.journal.record, key, UpdatePhase.ROLLED_BACK)
        self._u.failpoint("app_rolled_back")
        await emit(UpdatePhase.ROLLED_BACK, "every replaced member is back as it was")
        status = _app_status(str(entry["service"]))
        members = {name: FailureBundle.model_validate(b) for name, b in journaled.items()}
        # Each member's reason too: the controller keeps a host's reasons in the rollout.
        restored = [b.reason for b in members.values() if b.reason != failure.reason]
        result = OperationResult(
            OperationOutcome.ROLLED_BACK, status, failure, [failure.reason, *restored], members
        )
        return await self._conclude(key, result)

    async def _put_back(self, entry: dict[str, Any]) -> None:
        """Each replaced member's old container under its name again, in reverse order,
        started if it ran; the new one removed. Safe to run again after a crash."""
        app = AppSpec.model_validate(entry["app"])
        for name in reversed(entry.get("replaced", [])):
            member = app.member(name)
            main, aside = self._main(member), self._aside(member)
            old: Inspect | None = (entry.get("olds") or {}).get(name)
            current = await self.runtime.inspect_container(main)
            if current is not None and (old is None or current["Id"] != old["Id"]):
                await self.runtime.remove(main)
            if old is None:
                continue
            set_aside = await self.runtime.inspect_container(aside)
            if set_aside is not None and set_aside["Id"] == old["Id"]:  # not a leftover
                await self.runtime.rename(aside, main)
            back = await self.runtime.inspect_container(main)
            if back is not None and not back["State"]["Running"] and old["State"]["Running"]:
                await self.runtime.start(main)
            self._u.failpoint(f"app_put_back:{name}")

    async def recover(self, entry: dict[str, Any], emit: Emit) -> OperationResult:
        """After a crash: past ``done``, finish; before it, put the whole group back."""
        key, app = app_journal_key(str(entry["service"])), AppSpec.model_validate(entry["app"])
        if entry.get("phase") == UpdatePhase.DONE.value:
            return await self._finish(key, app, emit, list(entry.get("replaced", [])))
        journaled = entry.get("bundle")
        bundle = (
            FailureBundle.model_validate(journaled)
            if journaled
            else FailureBundle(reason=AGENT_RESTARTED)
        )
        return await self._restore(key, emit, bundle)

    async def _conclude(self, key: str, result: OperationResult) -> OperationResult:
        entry = self._u.journal.get(key) or {}
        await self._u.record_outcome(str(entry["operation_id"]), str(entry["service"]), result)
        self._u.failpoint("app_concluded")
        self._u.journal.finish(key)
        return result

    # ---- remove ----

    async def remove(self, name: str, emit: Emit) -> OperationResult:
        """Every member removed, dependants first, and the app forgotten: it left this
        host's selector, or was deleted. Its volumes and networks stay (their data is
        the operator's). Removing what is already gone is done as well."""
        app = self.store.get(name)
        if app is not None:
            for member in reversed(start_order(app)):
                await self._u.remove(app.member(member).spec.name, emit)
        self.store.forget(name)
        await emit(UpdatePhase.DONE, f"{name} removed")
        gone = ServiceStatus(name=name, state=ContainerState.ABSENT, health=Health.UNKNOWN)
        return OperationResult(OperationOutcome.DONE, gone)

    # ---- names ----

    def _main(self, member: Member) -> str:
        return self._u.main_name(member.spec.name)

    def _aside(self, member: Member) -> str:
        return self._u.aside_name(member.spec.name)


def app_journal_key(app: str) -> str:
    """The app's journal entry and lock: not a service name (those have no "@")."""
    return f"{app}{JOURNAL_SUFFIX}"


def _app_status(app: str) -> ServiceStatus:
    return ServiceStatus(name=app, state=ContainerState.RUNNING, health=Health.HEALTHY)
