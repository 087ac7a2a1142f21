"""The successor's container, as the README says it is made: the running agent's own
container (mounts, network, its settings) from the new image, under the guard, in
handoff mode, and left to the guard rather than the engine until its probation is over."""

from __future__ import annotations

from pathlib import Path

from node_agent.upgrade.handoff_files import READY, REQUEST, HandoffNotes
from node_agent.upgrade.predecessor import successor_config
from protocol.agent_service import READY_DEADLINE, agent_upgrade_spec, ready_deadline

RUNNING = {
    "Config": {
        "Image": "registry/fleetwave/agent:1.0.0",
        "Env": [
            "PATH=/opt/fleetwave/bin:/usr/bin",  # the old image's
            "FLEET_STATE_DIR=/var/lib/fleetwave/agent",  # the old image's too
            "FLEET_AGENT_CONTAINER=fleet-agent",  # set by install
            "FLEET_DOCKER_HOST=unix:///run/fleetwave/engine/docker.sock",
            "FLEET_HANDOFF=an-earlier-one",
        ],
        "Labels": {"io.fleetwave.role": "agent"},
        "Cmd": ["run", "--config", "/etc/fleetwave/agent.toml"],
        "StopSignal": "SIGTERM",
    },
    "HostConfig": {
        "Binds": ["/etc/fleetwave:/etc/fleetwave:ro", "/run/engine:/run/fleetwave/engine:rw"],
        "NetworkMode": "host",
        "RestartPolicy": {"Name": "unless-stopped"},
        "Privileged": False,
    },
}
OLD_IMAGE_ENV = {"PATH=/opt/fleetwave/bin:/usr/bin", "FLEET_STATE_DIR=/var/lib/fleetwave/agent"}


def test_the_successor_is_the_running_agents_container_from_the_new_image_under_the_guard() -> None:
    new = "registry/fleetwave/agent@sha256:ab"
    config, host = successor_config(RUNNING, new, "op-7", OLD_IMAGE_ENV)
    assert config == {
        "Image": new,
        "Env": [
            "FLEET_AGENT_CONTAINER=fleet-agent",
            "FLEET_DOCKER_HOST=unix:///run/fleetwave/engine/docker.sock",
            "FLEET_HANDOFF=op-7",
        ],
        "Labels": {"io.fleetwave.role": "agent"},
        "Entrypoint": ["fleet-agent-guard"],
        "Cmd": ["run", "--config", "/etc/fleetwave/agent.toml"],
        "StopSignal": "SIGTERM",
    }
    assert host == {
        "Binds": ["/etc/fleetwave:/etc/fleetwave:ro", "/run/engine:/run/fleetwave/engine:rw"],
        "NetworkMode": "host",
        "RestartPolicy": {"Name": "no"},
    }


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
