"""Config files across a real local fleet: `fleetctl config set` and `fleetctl config rollout`.

The demo's containers run without a network, so what each serves on /config is asked
inside the container (wget on its own loopback).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import docker
import pytest

from controller.broker import NatsServer
from controller.state.services import Revision, ServiceRecord, ServiceStore
from controller.state.store import open_buckets
from fleet_lab.agent_client import connect
from protocol import subjects
from protocol.models import AnyMessage, ConfigPhase, ConfigProgress, utc_now
from protocol.spec import ConfigMount
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import fleet_spec, fleetctl

pytestmark = pytest.mark.integration


def served(client: docker.DockerClient, container: str, path: str = "/config") -> str:
    result = client.containers.get(container).exec_run(
        ["wget", "-q", "-O", "-", f"http://127.0.0.1:8080{path}"]
    )
    return bytes(result.output).decode().strip() if result.exit_code == 0 else ""


async def wait_all_serve(
    fleet: LocalFleet, client: docker.DockerClient, want: str, deadline_s: float = 60.0
) -> None:
    await wait_serving(fleet, client, {agent.api.host: want for agent in fleet.agents}, deadline_s)


async def wait_serving(
    fleet: LocalFleet, client: docker.DockerClient, want: dict[str, str], deadline_s: float = 60.0
) -> None:
    """Until each host serves what ``want`` says for it on /config."""
    last: dict[str, str] = {}
    for _ in range(int(deadline_s * 2)):
        last = {
            agent.api.host: await asyncio.to_thread(served, client, agent.container("web"))
            for agent in fleet.agents
        }
        if last == want:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"hosts do not serve {want}: {last}")


def identities(fleet: LocalFleet, client: docker.DockerClient) -> dict[str, tuple[str, str, int]]:
    found = {}
    for agent in fleet.agents:
        info = client.api.inspect_container(agent.container("web"))
        found[agent.api.host] = (info["Id"], info["State"]["StartedAt"], info["State"]["Pid"])
    return found


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def set_everywhere(fleet: LocalFleet, path: Path) -> None:
    stored = await fleet.fleetctl("config", "set", "web", "app.conf", "--file", str(path))
    assert stored.code == 0, stored


def reloading_peak(messages: list[AnyMessage], rollout_id: str) -> int:
    """The most hosts between config_reloading and its end at once, for one rollout."""
    edges: list[tuple[datetime, int]] = []
    for message in messages:
        if not isinstance(message, ConfigProgress) or message.rollout_id != rollout_id:
            continue
        if message.phase is ConfigPhase.RELOADING:
            edges.append((message.sent_at, 1))
        else:
            edges.append((message.sent_at, -1))
    edges.sort()
    current = peak = 0
    for _, change in edges:
        current += change
        peak = max(peak, current)
    return peak


async def test_config_set_reaches_every_host_and_restarts_no_container(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    fleet = await fleet_factory(size=3)
    before = identities(fleet, docker_client)
    new_file = write(tmp_path / "app.conf", "message=fleet-wide\n")

    stored = await fleet.fleetctl("config", "set", "web", "app.conf", "--file", str(new_file))
    assert stored.code == 0, stored
    assert "version 1 stored" in stored.stdout

    await wait_all_serve(fleet, docker_client, "fleet-wide")
    assert identities(fleet, docker_client) == before, "a container was restarted"
    for agent in fleet.agents:
        reloads = await asyncio.to_thread(served, docker_client, agent.container("web"), "/reloads")
        assert reloads == "1"
    got = await fleet.fleetctl("config", "get", "web", "app.conf")
    assert got.stdout == "message=fleet-wide\n"
    listed = await fleet.fleetctl("config", "list", "-o", "json")
    assert [(c["service"], c["name"], c["version"]) for c in json.loads(listed.stdout)] == [
        ("web", "app.conf", 1)
    ]


async def test_a_config_rollout_reloads_one_host_at_a_time_and_is_in_the_history(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    fleet = await fleet_factory(size=3)
    first = write(tmp_path / "v1.conf", "message=v1\n")
    await set_everywhere(fleet, first)
    await wait_all_serve(fleet, docker_client, "v1")
    second = write(tmp_path / "v2.conf", "message=v2\n")

    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        rolled = await fleet.fleetctl(
            "config", "rollout", "web", "app.conf", "--file", str(second),
            "--max-unavailable", "1", "-w",
        )  # fmt: skip
        assert rolled.code == 0, (rolled, fleet.controller.log_text()[-3000:])
        latest = await fleet.fleetctl("rollout", "status", "web", "-o", "json")
        rollout_id = json.loads(latest.stdout)["id"]
        assert rollout_id in rolled.stdout
        applied = events.matching(
            lambda m: (
                isinstance(m, ConfigProgress)
                and m.rollout_id == rollout_id
                and m.phase is ConfigPhase.APPLIED
            )
        )
        peak = reloading_peak([m for _, m in events.messages], rollout_id)

    assert {m.host for m in applied if isinstance(m, ConfigProgress)} == {
        agent.api.host for agent in fleet.agents
    }
    assert peak == 1, f"{peak} hosts reloaded at once with max-unavailable 1"
    await wait_all_serve(fleet, docker_client, "v2")
    history = await fleet.fleetctl("rollout", "history", "web")
    assert rollout_id in history.stdout
    assert "config app.conf v2" in history.stdout
    assert (await fleet.fleetctl("config", "get", "web", "app.conf")).stdout == "message=v2\n"
    diff = await fleet.fleetctl("config", "diff", "web", "app.conf", "1", "2")
    assert diff.code == 0, diff
    assert "-message=v1" in diff.lines
    assert "+message=v2" in diff.lines
    versions = await fleet.fleetctl("config", "history", "web", "app.conf", "-o", "json")
    assert [v["version"] for v in json.loads(versions.stdout)] == [1, 2]


async def test_a_config_rollout_whose_file_breaks_the_canary_is_reverted_and_not_stored(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    fleet = await fleet_factory(size=3)
    good = write(tmp_path / "good.conf", "message=good\n")
    await set_everywhere(fleet, good)
    await wait_all_serve(fleet, docker_client, "good")
    bad = write(tmp_path / "bad.conf", "message=bad\nhealthy=false\n")

    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        rolled = await fleet.fleetctl(
            "config", "rollout", "web", "app.conf", "--file", str(bad),
            "--strategy", "canary", "--canary", "1", "--failure-action", "revert", "-w",
        )  # fmt: skip
        rolled_back = events.matching(
            lambda m: isinstance(m, ConfigProgress) and m.phase is ConfigPhase.ROLLED_BACK
        )

    assert rolled.code == 1, rolled
    assert "reverted" in rolled.stdout
    assert len(rolled_back) == 1, "only the canary host should have tried the file"
    await wait_all_serve(fleet, docker_client, "good")
    stored = await fleet.fleetctl("config", "list", "web", "-o", "json")
    assert [c["version"] for c in json.loads(stored.stdout)] == [1]


async def test_config_rm_drops_an_override_then_the_file_and_versions_go_on_after_it(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    fleet = await fleet_factory(size=2)
    first, second = (agent.api.host for agent in fleet.agents)
    await set_everywhere(fleet, write(tmp_path / "base.conf", "message=base\n"))
    special = write(tmp_path / "special.conf", "message=special\n")
    override = await fleet.fleetctl(
        "config", "set", "web", "app.conf", "--file", str(special), "--host", second
    )
    assert override.code == 0, override
    await wait_serving(fleet, docker_client, {first: "base", second: "special"})
    before = identities(fleet, docker_client)

    absent = await fleet.fleetctl("config", "rm", "web", "app.conf", "--host", first)
    assert absent.code == 4
    assert f"no override for host={first}" in absent.stderr
    dropped = await fleet.fleetctl("config", "rm", "web", "app.conf", "--host", second)
    assert dropped.code == 0, dropped
    assert f"version 3 stored (removed override for host={second})" in dropped.stdout
    await wait_all_serve(fleet, docker_client, "base")

    removed = await fleet.fleetctl("config", "rm", "web", "app.conf")
    assert removed.code == 0, removed
    await wait_all_serve(fleet, docker_client, "default")  # the demo's answer with no file
    assert identities(fleet, docker_client) == before, "a container was restarted"
    gone = await fleet.fleetctl("config", "get", "web", "app.conf")
    assert gone.code == 4
    listed = await fleet.fleetctl("config", "list", "-o", "json")
    assert json.loads(listed.stdout) == []

    # Set again, the file goes on from its last version, so no number names two contents.
    again = await fleet.fleetctl(
        "config",
        "set",
        "web",
        "app.conf",
        "--file",
        str(write(tmp_path / "n.conf", "message=new\n")),
    )
    assert "version 4 stored" in again.stdout, again
    await wait_all_serve(fleet, docker_client, "new")
    history = await fleet.fleetctl("config", "history", "web", "app.conf", "-o", "json")
    assert [entry["version"] for entry in json.loads(history.stdout)] == [1, 2, 3, 4]


async def test_config_commands_refuse_bad_input_with_clear_errors(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    good = write(tmp_path / "app.conf", "message=x\n")
    huge = tmp_path / "huge.conf"
    huge.write_bytes(b"x" * (256 * 1024 + 1))

    bad_name = await fleetctl(url, "config", "set", "web", "../app.conf", "--file", str(good))
    assert bad_name.code == 2
    assert "invalid file name" in bad_name.stderr
    bad_service = await fleetctl(url, "config", "set", "web.x", "app.conf", "--file", str(good))
    assert bad_service.code == 2
    assert "not a valid subject token" in bad_service.stderr
    too_big = await fleetctl(url, "config", "set", "web", "app.conf", "--file", str(huge))
    assert too_big.code == 2
    assert "262145 bytes" in too_big.stderr
    absent_file = await fleetctl(
        url, "config", "set", "web", "app.conf", "--file", str(tmp_path / "nope")
    )
    assert absent_file.code == 2
    override_first = await fleetctl(
        url, "config", "set", "web", "app.conf", "--file", str(good), "--host", "h1"
    )
    assert override_first.code == 4
    assert "set its base content first" in override_first.stderr

    missing = await fleetctl(url, "config", "get", "web", "app.conf")
    assert missing.code == 4
    assert "no config file app.conf" in missing.stderr
    assert (await fleetctl(url, "config", "set", "web", "app.conf", "--file", str(good))).code == 0
    no_version = await fleetctl(url, "config", "diff", "web", "app.conf", "1", "9")
    assert no_version.code == 4
    assert "keeps no version 9" in no_version.stderr
    unknown_service = await fleetctl(
        url, "config", "rollout", "nosuch", "app.conf", "--file", str(good)
    )
    assert unknown_service.code == 2
    assert "no spec is known for nosuch" in unknown_service.stderr

    # A file the service's spec requires cannot be removed: its next container would
    # not start. The spec is written as a completed rollout would leave it.
    spec = fleet_spec("127.0.0.1:5000/demo/web:1.0.0")
    spec = spec.model_copy(update={"config": ConfigMount(files=("app.conf",))})
    client = await connect(url)
    try:
        _, services, _ = await open_buckets(client.jetstream(timeout=5))
        record = ServiceRecord(
            service="web",
            revisions=(Revision(revision=1, spec=spec, rollout_id="web-r1", created_at=utc_now()),),
            current=1,
        )
        await ServiceStore(services).put(record, None)
    finally:
        await client.close()
    required = await fleetctl(url, "config", "rm", "web", "app.conf")
    assert required.code == 2
    assert "web requires app.conf" in required.stderr
    assert (await fleetctl(url, "config", "get", "web", "app.conf")).code == 0
    both = await fleetctl(
        url, "config", "rm", "web", "app.conf", "--host", "h1", "--selector", "a=b"
    )
    assert both.code == 2
