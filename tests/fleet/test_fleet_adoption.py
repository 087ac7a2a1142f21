"""A container made by hand, taken over and then updated through fleetctl, keeps every
setting its operator gave it; only what the spec sets and the new image defines changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import docker.types
import pytest

from fleet_lab.stack import LocalStack
from protocol.spec import ContainerSettings, ExecProbe, HealthCheck, Resources, ServiceSpec
from tests.conftest import FleetFactory

pytestmark = pytest.mark.integration

# What the operator set by hand (docker create flags), each away from Docker's and the
# image's defaults, so that a lost setting shows as a change.
CONFIG_BY_HAND: dict[str, Any] = {
    "stop_signal": "SIGINT",
    "stop_timeout": 17,
    "hostname": "adopted",
    "domainname": "fleet.test",
    "healthcheck": {"test": ["CMD", "true"], "interval": 1_000_000_000, "retries": 2},
    "entrypoint": ["/bin/sh", "-c"],
    "command": ["exec /bin/demo-web"],
    "user": "65534",
    "working_dir": "/data",
    "labels": {"team": "payments"},
}
HOST_CONFIG_BY_HAND: dict[str, Any] = {
    "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
    "network_mode": "none",
    "ulimits": [docker.types.Ulimit(name="nofile", soft=4096, hard=8192)],
    "tmpfs": {"/scratch": "size=1m", "/run/demo": "mode=1777"},
    "read_only": True,
    "extra_hosts": {"db.internal": "10.1.2.3"},
    "log_config": docker.types.LogConfig(type="json-file", config={"max-size": "1m"}),
    "devices": ["/dev/null:/dev/fleet-null:rwm"],
    "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
    "security_opt": ["no-new-privileges"],
    "shm_size": "128m",
    "pids_limit": 64,
    "init": True,
    "dns": ["10.0.0.53"],
    "cap_drop": ["MKNOD"],
    "cap_add": ["NET_ADMIN"],
}
KEPT_CONFIG = (
    "StopSignal",
    "StopTimeout",
    "Hostname",
    "Domainname",
    "Healthcheck",
    "Entrypoint",
    "Cmd",
    "User",
    "WorkingDir",
)
KEPT_HOST_CONFIG = (
    "RestartPolicy",
    "NetworkMode",
    "Ulimits",
    "Tmpfs",
    "ReadonlyRootfs",
    "ExtraHosts",
    "LogConfig",
    "Devices",
    "Sysctls",
    "SecurityOpt",
    "ShmSize",
    "PidsLimit",
    "Init",
    "Dns",
    "CapAdd",
    "CapDrop",
)


def adopting_spec(image: str) -> ServiceSpec:
    """What the operator declares: the image, one variable and a probe; nothing else."""
    probe = ExecProbe(command=("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"))
    return ServiceSpec(
        name="web",
        image=image,
        container=ContainerSettings(
            env={"GREETING": "adopted"}, resources=Resources(memory_bytes=32 * 1024 * 1024)
        ),
        health=HealthCheck(probe=probe, period=0.5, min_healthy_time=1.0, healthy_deadline=20),
    )


def settings_of(attrs: dict[str, Any]) -> dict[str, Any]:
    config, host = attrs["Config"], attrs["HostConfig"]
    return {
        **{key: config.get(key) for key in KEPT_CONFIG},
        **{key: host.get(key) for key in KEPT_HOST_CONFIG},
        "team label": config["Labels"].get("team"),
    }


async def test_a_container_made_by_hand_keeps_every_setting_through_takeover_and_update(
    fleet_factory: FleetFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
    tmp_path: Path,
) -> None:
    image = local_stack.demo_image("1.0.0")
    api = docker_client.api
    made = api.create_container(
        image,
        name=f"t{test_id}-p0-web",
        host_config=api.create_host_config(**HOST_CONFIG_BY_HAND),
        **CONFIG_BY_HAND,
    )["Id"]
    api.start(made)
    by_hand = settings_of(docker_client.containers.get(made).attrs)
    # Every setting differs from what a container gets without it (so none can pass as
    # kept by being a default), and reads as the operator gave it.
    plain = docker_client.containers.create(image, name=f"t{test_id}-plain")
    try:
        defaults = settings_of(plain.attrs)
    finally:
        plain.remove(force=True)
    assert [key for key in by_hand if by_hand[key] == defaults[key]] == []
    assert by_hand["StopTimeout"] == 17
    assert by_hand["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}

    spec_file = tmp_path / "adopt.json"
    spec_file.write_text(adopting_spec(image).model_dump_json())
    fleet = await fleet_factory(size=1, first_spec=spec_file)  # takes the container over
    taken_over = docker_client.containers.get(f"t{test_id}-p0-web").attrs
    assert taken_over["Id"] != made
    assert settings_of(taken_over) == by_hand

    spec_file.write_text(adopting_spec(local_stack.demo_image("1.1.0")).model_dump_json())
    rolled = await fleet.fleetctl("rollout", "start", "web", "--spec", str(spec_file), "-w")
    assert rolled.code == 0, rolled
    updated = docker_client.containers.get(f"t{test_id}-p0-web").attrs
    assert updated["Config"]["Image"].startswith(local_stack.demo_image("1.1.0").split(":")[0])
    assert settings_of(updated) == by_hand
    # What the spec sets, and what the new image defines, did change.
    env = updated["Config"]["Env"]
    assert "GREETING=adopted" in env
    assert "DEMO_VERSION=1.1.0" in env
    assert updated["Config"]["Labels"]["org.opencontainers.image.version"] == "1.1.0"
