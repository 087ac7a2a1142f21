from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol.spec import (
    ContainerSettings,
    HealthCheck,
    HttpProbe,
    PortMapping,
    Resources,
    ServiceSpec,
    UpdateOrder,
    VolumeMount,
)


def test_a_healthy_deadline_too_short_to_prove_health_is_refused() -> None:
    with pytest.raises(ValidationError, match="no container could ever pass"):
        HealthCheck(
            probe=HttpProbe(port=8080), initial_delay=5, min_healthy_time=10, healthy_deadline=12
        )


def test_a_probe_timeout_longer_than_the_deadline_is_refused() -> None:
    with pytest.raises(ValidationError, match="timeout"):
        HealthCheck(probe=HttpProbe(port=8080), timeout=30, min_healthy_time=0, healthy_deadline=10)


def test_start_first_with_host_ports_is_refused_because_two_copies_would_clash() -> None:
    with pytest.raises(ValidationError, match="same ports"):
        ServiceSpec(
            name="web",
            image="127.0.0.1:5000/demo/web:1.0.0",
            container=ContainerSettings(ports=(PortMapping(container_port=8080),)),
            update_order=UpdateOrder.START_FIRST,
        )


def test_a_bind_mount_from_a_relative_path_is_refused() -> None:
    with pytest.raises(ValidationError, match="absolute host path"):
        VolumeMount(kind="bind", source="data", target="/data")


@pytest.mark.parametrize("memory", [0, 1024, 6 * 1024 * 1024 - 1])
def test_memory_limits_docker_would_refuse_are_refused_first(memory: int) -> None:
    with pytest.raises(ValidationError, match="memory_bytes"):
        Resources(memory_bytes=memory)


def test_an_invalid_service_name_is_refused_naming_the_field_and_the_rule() -> None:
    with pytest.raises(ValidationError, match=r"name\n.*should match pattern '\^\[A-Za-z0-9_-\]"):
        ServiceSpec(name="web.api", image="web:1")


def test_specs_are_frozen() -> None:
    spec = ServiceSpec(name="web", image="web:1")
    with pytest.raises(ValidationError, match="frozen"):
        spec.image = "web:2"  # type: ignore[misc]


def test_a_minimal_spec_gets_the_safe_defaults() -> None:
    spec = ServiceSpec(name="web", image="web:1")
    assert spec.update_order is UpdateOrder.STOP_FIRST
    # Unset: an adopted container keeps its own, a first container gets host networking
    # and unless-stopped (node_agent.update.container_config).
    assert spec.container.network_mode is None
    assert spec.container.restart_policy is None
