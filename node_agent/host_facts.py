"""What the heartbeat writes to KV ``fleet_hosts``: the host's labels, versions, CPU,
memory and disk, and each service's status."""

from __future__ import annotations

import asyncio
import platform

from node_agent import resources
from node_agent.apps.status import app_statuses
from node_agent.apps.store import AppStore
from node_agent.runtime import DockerRuntime
from node_agent.settings import AgentSettings
from node_agent.update.drift import heartbeat_status
from node_agent.update.service_locks import ServiceLocks
from node_agent.update.service_store import ServiceStore
from node_agent.update.updater import ServiceUpdater
from protocol.agent_service import AGENT_SERVICE
from protocol.errors import RuntimeFault
from protocol.fingerprint import image_digest
from protocol.models import ContainerState, Health, HostFacts, ServiceStatus
from protocol.spec import ServiceSpec
from protocol.version import fleetwave_version


async def read_host_facts(
    settings: AgentSettings,
    runtime: DockerRuntime,
    updater: ServiceUpdater,
    services: ServiceStore,
    locks: ServiceLocks,
    last_seen: dict[str, ServiceStatus],
    apps: AppStore | None = None,
) -> HostFacts:
    """The heartbeat. ``last_seen`` keeps each service's status from the last beat the
    engine answered, for the beats it does not."""
    memory = resources.memory()
    try:
        docker_version: str | None = await runtime.version()
        root = await runtime.root_dir()
    except RuntimeFault:
        # The engine is down: the heartbeat still goes, saying so (no docker version),
        # with each service as last seen; the controller takes the host out of rollouts.
        docker_version, root = None, "/"
    statuses = []
    for name in services.names():
        try:
            status = await updater.status(name) if docker_version else None
        except RuntimeFault:  # one container's inspect failed: it is as last seen
            status = None
        applied = services.current(name)
        if name == AGENT_SERVICE and applied is not None:  # this agent: running as applied
            status = agent_running(applied)
        if status is not None:
            last_seen[name] = heartbeat_status(status, services.current(name), locks.busy(name))
        if name in last_seen:
            statuses.append(last_seen[name])
    if apps is not None:  # each app as one line too, from its members' (as last seen)
        members = {status.name: status for status in statuses}
        try:
            found = await app_statuses(apps, runtime, settings.container_name, members)
        except RuntimeFault:
            found = []
        last_seen.update({status.name: status for status in found})
        statuses += [last_seen[name] for name in apps.names() if name in last_seen]
    disk = await asyncio.to_thread(resources.disk_for_report, root)
    return HostFacts(
        sender=settings.host_id,
        host=settings.host_id,
        labels=settings.labels,
        agent_version=f"{fleetwave_version()} ({platform.python_implementation()})",
        docker_version=docker_version,
        engine_down=docker_version is None,
        cpus=resources.cpu_count(),
        memory_total=memory.total,
        memory_available=memory.available,
        disk_total=disk.total,
        disk_free=disk.free,
        services=tuple(statuses),
    )


def agent_running(applied: ServiceSpec) -> ServiceStatus:
    """The agent service as its own heartbeat reports it: whoever beats runs it."""
    return ServiceStatus(
        name=AGENT_SERVICE,
        image=applied.image,
        digest=image_digest(applied.image),
        state=ContainerState.RUNNING,
        health=Health.HEALTHY,
    )
