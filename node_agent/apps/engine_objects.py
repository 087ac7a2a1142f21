"""An app's named volumes and networks, made if missing (never removed by an update),
and the networks a member joins beyond the first (an engine before API 1.44 takes one
network at create)."""

from __future__ import annotations

from node_agent.runtime import DockerRuntime
from protocol.app import AppSpec
from protocol.spec import NetworkAttachment


async def ensure_engine_objects(runtime: DockerRuntime, app: AppSpec) -> None:
    for volume in app.volumes:
        await runtime.ensure_volume(
            volume.name, volume.driver, dict(volume.driver_opts), dict(volume.labels)
        )
    for network in app.networks:
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
