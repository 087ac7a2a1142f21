"""Capabilities through an update, by the README's rule: left out of the spec, the
container's own are kept; given (even empty), they are the spec's."""

from __future__ import annotations

from typing import Any

import pytest

from node_agent.update.container_config import config_from_spec, derive_config
from protocol.spec import ContainerSettings, ServiceSpec

OLD: dict[str, Any] = {
    "Name": "/web",
    "Config": {"Image": "demo:1", "Env": [], "Labels": {}},
    "HostConfig": {"CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"], "NetworkMode": "host"},
}


def spec(**capabilities: tuple[str, ...] | None) -> ServiceSpec:
    return ServiceSpec(name="web", image="demo:2", container=ContainerSettings(**capabilities))


@pytest.mark.parametrize(
    ("given", "cap_add", "cap_drop"),
    [
        ({}, ["NET_ADMIN"], ["MKNOD"]),
        ({"cap_add": (), "cap_drop": ()}, None, None),
        ({"cap_add": ("CHOWN",)}, ["CHOWN"], ["MKNOD"]),
        ({"cap_drop": ("ALL",)}, ["NET_ADMIN"], ["ALL"]),
    ],
    ids=["left out: kept", "empty: removed", "cap_add given", "cap_drop given"],
)
def test_an_update_keeps_the_containers_capabilities_unless_the_spec_gives_them(
    given: dict[str, tuple[str, ...]], cap_add: list[str] | None, cap_drop: list[str] | None
) -> None:
    _, host_config = derive_config(OLD, None, spec(**given), "demo:2", "agent-1")
    assert (host_config.get("CapAdd"), host_config.get("CapDrop")) == (cap_add, cap_drop)


def test_a_first_container_without_capabilities_in_its_spec_gets_none_added() -> None:
    _, host_config = config_from_spec(spec(), "demo:2", "agent-1")
    assert host_config.get("CapAdd") is None
    assert host_config.get("CapDrop") is None
