"""The successor's container, as the README says it is made: the running agent's own
container (mounts, network, its settings) from the new image, under the guard, in
handoff mode, and left to the guard rather than the engine until its probation is over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.upgrade.handoff_files import READY, REQUEST, HandoffNotes
from node_agent.upgrade.predecessor import successor_config
from protocol.agent_service import READY_DEADLINE, agent_upgrade_spec, ready_deadline

RUNNING: dict[str, dict[str, Any]] = {
    "Config": {
        "Image": "registry/fleetwave/agent:1.0.0",
        "Env": [
            "PATH=/opt/fleetwave/bin:/usr/bin",  # the old image's
            "FLEET_STATE_DIR=/var/lib/fleetwave/agent",  # the old image's, and install's
            "FLEET_AGENT_CONTAINER=fleet-agent",  # set by install
            "FLEET_DOCKER_HOST=unix:///run/fleetwave/engine/docker.sock",
            "FLEET_HANDOFF=an-earlier-one",
        ],
        "Labels": {"io.fleetwave.role": "agent"},
        "Cmd": ["run", "--config", "/etc/fleetwave/agent.toml"],
        "StopSignal": "SIGTERM",
        "User": "0:998",
    },
    "HostConfig": {
        "Binds": ["/etc/fleetwave:/etc/fleetwave:ro", "/run/engine:/run/fleetwave/engine:rw"],
        "NetworkMode": "host",
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "Privileged": False,
        "GroupAdd": ["998"],
        "CapAdd": ["NET_ADMIN"],
        "PidMode": "host",
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
        "ExtraHosts": ["registry.lan:10.0.0.5"],
    },
}
OLD_IMAGE_ENV = {"PATH=/opt/fleetwave/bin:/usr/bin", "FLEET_STATE_DIR=/var/lib/fleetwave/agent"}


def test_the_successor_is_the_running_agents_container_from_the_new_image_under_the_guard() -> None:
    new = "registry/fleetwave/agent@sha256:ab"
    config, host = successor_config(RUNNING, new, "op-7", OLD_IMAGE_ENV)
    running_config, running_host = RUNNING["Config"], RUNNING["HostConfig"]
    # Every host setting is the running container's, but the restart policy: the guard's.
    for key, value in running_host.items():
        if key != "RestartPolicy":
            assert host[key] == value, key
    assert host["RestartPolicy"] == {"Name": "no"}
    # The new image, under the guard, in handoff mode for this upgrade only.
    assert (config["Image"], config["Entrypoint"]) == (new, ["fleet-agent-guard"])
    for key in ("Labels", "Cmd", "StopSignal", "User"):
        assert config[key] == running_config[key], key
    # Its variables: its own and every FLEET_ one (not the old image's PATH), and the
    # earlier handoff's variable replaced by this one's.
    expected_env = [
        e for e in running_config["Env"] if not e.startswith(("PATH=", "FLEET_HANDOFF="))
    ]
    assert config["Env"] == [*expected_env, "FLEET_HANDOFF=op-7"]


def test_a_successor_has_the_ready_deadline_the_upgrade_gave() -> None:
    assert ready_deadline(agent_upgrade_spec("r/a:2", 10.0)) == READY_DEADLINE
    assert ready_deadline(agent_upgrade_spec("r/a:2", 3.0, ready_deadline=8.0)) == 8.0


def test_handoff_notes_are_read_back_whole_and_cleared(tmp_path: Path) -> None:
    notes = HandoffNotes(tmp_path)
    assert notes.read(REQUEST) is None
    notes.write(REQUEST, operation_id="op-7", previous="fleet-agent")
    assert notes.read(REQUEST) == {"operation_id": "op-7", "previous": "fleet-agent"}
    assert (notes.has(REQUEST), notes.has(READY)) == (True, False)
    notes.clear()
    assert not notes.has(REQUEST)
