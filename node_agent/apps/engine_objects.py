"""An app's named volumes and networks, made if missing (never removed by an update);
external ones, which someone else makes, checked instead (the engine would make a
missing volume, new and empty, without a word); and the networks a member joins beyond
the first (an engine before API 1.44 takes one network at create)."""

from __future__ import annotations

from node_agent.runtime import DockerRuntime
from protocol.app import AppSpec
from protocol.models import Reason
from protocol.spec import NetworkAttachment


async def missing_external(runtime: DockerRuntime, app: AppSpec) -> list[Reason]:
    """Why the host cannot run the app: each external volume or network it lacks."""
    missing = [
        f"volume {volume.name!r}"
        for volume in app.volumes
        if volume.external and not await runtime.has_volume(volume.name)
    ] + [
        f"network {network.name!r}"
        for network in app.networks
        if network.external and not await runtime.has_network(network.name)
    ]
    return [
        Reason(
            code="external_missing",
            text=f"{what} is external (made by someone else) and not on this host",
        )
        for what in missing
    ]


async def ensure_engine_objects(runtime: DockerRuntime, app: AppSpec) -> None:
    for volume in app.volumes:
        if volume.external:
            continue
        await runtime.ensure_volume(
            volume.name, volume.driver, dict(volume.driver_opts), dict(volume.labels)
        )
    for network in app.networks:
        if network.external:
            continue
        await runtime.ensure_network(
            network.name, network.driver, dict(network.driver_opts), dict(network.labels),
            network.internal,
        )  # fmt: skip


async def connect_others(
    runtime: DockerRuntime, container: str, networks: tuple[NetworkAttachment, ...]
) -> None:
    """Join ``container`` (created, not started) to every network after the first."""
    for network in networks[1:]:
        await runtime.connect_network(container, network.name, list(network.aliases))
