"""An app's line in the heartbeat: one status for the whole group, from its members',
with the app's fingerprint and digest, so convergence compares an app as one unit."""

from __future__ import annotations

from collections.abc import Callable

from node_agent.apps.store import AppStore
from node_agent.runtime import DockerRuntime
from protocol.app import AppSpec, one_shots
from protocol.fingerprint import app_digest, app_fingerprint
from protocol.models import ContainerState, Health, ServiceStatus


def app_status(
    app: AppSpec, members: dict[str, ServiceStatus | None], completed: set[str]
) -> ServiceStatus:
    """Running and healthy when every member is (``completed``: members that may exit and
    did, successfully, count as fine); else as the first member that is not. ``members``
    by member name."""
    state, health, drift = ContainerState.RUNNING, Health.HEALTHY, None
    for member in app.members:
        status = members.get(member.name)
        if status is None:
            state, health = ContainerState.ABSENT, Health.UNKNOWN
            break
        if member.name in completed:
            continue
        if status.state is not ContainerState.RUNNING or status.health is Health.UNHEALTHY:
            state, health, drift = status.state, status.health, status.drift
            break
    return ServiceStatus(
        name=app.name, state=state, health=health, drift=drift,
        fingerprint=app_fingerprint(app), applied_digest=app_digest(app),
    )  # fmt: skip


async def app_statuses(
    apps: AppStore,
    runtime: DockerRuntime,
    container_name: Callable[[str], str],
    services: dict[str, ServiceStatus],
) -> list[ServiceStatus]:
    """Each app this host last applied, from its members' statuses (``services``, by
    service name); a one-shot member (protocol.app.one_shots: a job such as a
    migration) that exited is asked the engine how it ended: with 0 it is done. Any
    other member stopped is a member down."""
    found = []
    for name in apps.names():
        app = apps.get(name)
        if app is None:
            continue
        members = {m.name: services.get(m.spec.name) for m in app.members}
        completed, jobs = set(), one_shots(app)
        for member in app.members:
            status = members[member.name]
            if status is None or status.state is not ContainerState.EXITED:
                continue
            if member.name not in jobs:
                continue
            info = await runtime.inspect_container(container_name(member.spec.name))
            if info is not None and (info.get("State") or {}).get("ExitCode") == 0:
                completed.add(member.name)
        found.append(app_status(app, members, completed))
    return found
