"""Blue-green end to end: stage beside the old copy, switch everywhere, switch back, retire."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import docker
import pytest

from protocol import subjects
from protocol.models import (
    ColourSwitch,
    ConvergenceAction,
    ConvergenceEvent,
    OperationReply,
    RolloutEvent,
)
from protocol.spec import BlueGreen, ExecProbe
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import fleet_spec
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

# The probe reads the port from the container's own environment, which differs per colour.
PROBE = ExecProbe(command=("sh", "-c", "wget -q -O /dev/null http://127.0.0.1:$PORT/health"))


def blue_green_spec(fleet: LocalFleet, tag: str, hook_log: Path) -> Path:
    spec = fleet_spec(fleet.stack.demo_image(tag))
    assert spec.health is not None
    hook = 'echo "$FLEET_HOST $FLEET_ACTIVE_COLOUR $FLEET_ACTIVE_PORT" >> ' + str(hook_log)
    spec = spec.model_copy(
        update={
            "health": spec.health.model_copy(update={"probe": PROBE}),
            "blue_green": BlueGreen(port=8080, alternate_port=8081, switch_hook=("sh", "-c", hook)),
        }
    )
    path = fleet.work_dir / f"web-blue-green-{tag}.json"
    path.write_text(spec.model_dump_json())
    return path


async def start_blue_green(fleet: LocalFleet, hook_log: Path, *flags: str) -> None:
    """A blue-green rollout of demo/web 1.1.0 whose switch hook appends to ``hook_log``."""
    spec = blue_green_spec(fleet, "1.1.0", hook_log)
    started = await fleet.fleetctl(
        "rollout", "start", "web", "--spec", str(spec), "--strategy", "blue-green", *flags
    )
    assert started.code == 0, started


async def status(fleet: LocalFleet) -> dict[str, Any]:
    result = await fleet.fleetctl("rollout", "status", "web", "-o", "json")
    assert result.code == 0, result
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def reaches(fleet: LocalFleet, wanted: str, deadline: float = 90) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            state = await status(fleet)
            if state["status"] == wanted:
                return state
            await asyncio.sleep(0.3)

    try:
        return await asyncio.wait_for(poll(), deadline)
    except TimeoutError:
        raise AssertionError(
            f"never {wanted}: {await status(fleet)}\n{fleet.controller.log_text()}"
        ) from None


def copies(client: docker.DockerClient, fleet: LocalFleet) -> dict[str, dict[str, Any]]:
    """Each host's serving and standby container: id, colour, running, start time, port."""
    found: dict[str, dict[str, Any]] = {}
    for agent in fleet.agents:
        for role, name in (
            ("serving", agent.container("web")),
            ("standby", agent.container("web") + "--standby"),
        ):
            try:
                attrs = client.containers.get(name).attrs
            except docker.errors.NotFound:
                continue
            env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
            found[f"{agent.api.host}/{role}"] = {
                "id": attrs["Id"],
                "colour": attrs["Config"]["Labels"].get("io.fleetwave.colour", "blue"),
                "running": attrs["State"]["Running"],
                "started": attrs["State"]["StartedAt"],
                "port": env.get("PORT"),
            }
    return found


async def test_blue_green_switches_every_host_at_once_and_switches_back_in_place(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(3)
    hosts = sorted(agent.api.host for agent in fleet.agents)
    hook_log = fleet.work_dir / "switch-hook.log"
    before = await asyncio.to_thread(copies, docker_client, fleet)
    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        await start_blue_green(fleet, hook_log, "--remove-old-after", "600")
        state = await reaches(fleet, "switched")
        await events.wait_for(lambda m: isinstance(m, ColourSwitch) and m.colour == "green")

        # Every host serves green 1.1.0 on the alternate port; blue is the very same
        # container as before the rollout, still running, never restarted.
        assert set((await fleet.versions()).values()) == {"1.1.0"}
        during = await asyncio.to_thread(copies, docker_client, fleet)
        for host in hosts:
            assert during[f"{host}/serving"]["colour"] == "green"
            assert during[f"{host}/serving"]["port"] == "8081"
            assert during[f"{host}/standby"]["id"] == before[f"{host}/serving"]["id"]
            assert during[f"{host}/standby"]["started"] == before[f"{host}/serving"]["started"]
            assert during[f"{host}/standby"]["running"]
        assert sorted(hook_log.read_text().splitlines()) == [f"{h} green 8081" for h in hosts]
        assert all(entry["phase"] == "done" for entry in state["hosts"].values())

        # The switch came only after every host had staged and verified green.
        messages = [message for _, message in events.messages]
        switch_at = next(
            i for i, m in enumerate(messages) if isinstance(m, ColourSwitch) and m.colour == "green"
        )
        staged_at = [
            i
            for i, m in enumerate(messages)
            if isinstance(m, OperationReply) and (m.status.colour == "green")
        ]
        assert len(staged_at) >= len(hosts)
        assert max(staged_at[: len(hosts)]) < switch_at
        switch = messages[switch_at]
        assert isinstance(switch, ColourSwitch)
        assert (switch.port, sorted(switch.hosts)) == (8081, hosts)
        history = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
        assert json.loads(history.stdout)["colour"] == "green"

        # Undo while blue is still kept is a switch back: the old containers serve again.
        undone = await fleet.fleetctl("rollout", "undo", "web", "-w")
        assert undone.code == 0, (undone, fleet.controller.log_text())
        await events.wait_for(lambda m: isinstance(m, ColourSwitch) and m.colour == "blue")
    assert (await status(fleet))["status"] == "aborted"
    assert set((await fleet.versions()).values()) == {"1.0.0"}
    after = await asyncio.to_thread(copies, docker_client, fleet)
    for host in hosts:
        assert after[f"{host}/serving"]["id"] == before[f"{host}/serving"]["id"]
        assert after[f"{host}/serving"]["started"] == before[f"{host}/serving"]["started"]
        assert f"{host}/standby" not in after  # the bad green copy is gone
    assert sorted(hook_log.read_text().splitlines()[-3:]) == [f"{h} blue 8080" for h in hosts]
    history = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
    assert json.loads(history.stdout)["colour"] == "blue"

    # The undone revision is not accepted: a host enrolled now gets 1.0.0, and the hosts
    # that switched back count as on it (the agents' records follow the switch back).
    late = (await fleet.join()).api.host
    await eventually(fleet.versions, lambda found: found.get(late) == "1.0.0", "1.0.0 on late")
    row = await eventually(
        lambda: services_row(fleet), lambda r: r["converged"] == 4, "every host converged"
    )
    assert (row["matching"], row["ahead"], row["outdated"]) == (4, 0, 0)
    final = await asyncio.to_thread(copies, docker_client, fleet)
    for host in hosts:
        assert final[f"{host}/serving"]["id"] == before[f"{host}/serving"]["id"]


async def test_promote_removes_the_old_colour_and_completes_the_blue_green_rollout(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    hook_log = fleet.work_dir / "switch-hook.log"
    await start_blue_green(fleet, hook_log)
    await reaches(fleet, "switched")
    promoted = await fleet.fleetctl("rollout", "promote", "web", "-o", "json")
    assert promoted.code == 0, promoted
    assert json.loads(promoted.stdout)["promoted"] is True
    done = await fleet.fleetctl("rollout", "status", "web", "-w")
    assert done.code == 0, (done, fleet.controller.log_text())
    state = await status(fleet)
    assert {entry["phase"] for entry in state["hosts"].values()} == {"retired"}
    left = await asyncio.to_thread(copies, docker_client, fleet)
    assert sorted(left) == sorted(f"{agent.api.host}/serving" for agent in fleet.agents)
    assert {copy["colour"] for copy in left.values()} == {"green"}
    assert set((await fleet.versions()).values()) == {"1.1.0"}

    # The next blue-green rollout stages the other colour, back on the usual port.
    again = await fleet.fleetctl(
        "rollout",
        "start",
        "web",
        "--image",
        fleet.stack.demo_image("2.0.0"),
        "--allow-major",
        "--strategy",
        "blue-green",
        "--remove-old-after",
        "0",
        "-w",
    )
    assert again.code == 0, (again, fleet.controller.log_text())
    final = await asyncio.to_thread(copies, docker_client, fleet)
    assert {(c["colour"], c["port"]) for c in final.values()} == {("blue", "8080")}
    assert set((await fleet.versions()).values()) == {"2.0.0"}


async def services_row(fleet: LocalFleet) -> dict[str, Any]:
    listed = await fleet.fleetctl("services", "-o", "json")
    assert listed.code == 0, listed
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    (row,) = (r for r in rows if r["service"] == "web")
    return row


async def converged_everywhere(fleet: LocalFleet, size: int) -> None:
    row = await eventually(
        lambda: services_row(fleet), lambda r: r["converged"] == size, "every host converged"
    )
    assert (row["matching"], row["outdated"], row["missing"], row["ahead"]) == (size, 0, 0, 0)


async def test_hosts_that_join_or_drift_after_a_blue_green_rollout_converge_in_its_colour(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    hosts = sorted(agent.api.host for agent in fleet.agents)
    hook_log = fleet.work_dir / "switch-hook.log"
    await start_blue_green(fleet, hook_log, "--remove-old-after", "0", "-w")
    switched = await asyncio.to_thread(copies, docker_client, fleet)
    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        late = (await fleet.join()).api.host
        # Deployed in the colour that serves (green, on its port), and announced to
        # routers as a switch would be, naming only the host it brought.
        told = await events.wait_for(lambda m: isinstance(m, ColourSwitch) and late in m.hosts)
        assert isinstance(told, ColourSwitch)
        assert (told.colour, told.port, told.hosts) == ("green", 8081, (late,))
        assert "converge" in told.rollout_id
        now = await asyncio.to_thread(copies, docker_client, fleet)
        assert (now[f"{late}/serving"]["colour"], now[f"{late}/serving"]["port"]) == (
            "green",
            "8081",
        )
        assert f"{late}/standby" not in now
        assert f"{late} green 8081" in hook_log.read_text().splitlines()
        await converged_everywhere(fleet, 3)

        # A serving copy removed by hand comes back in green, and routers are told.
        drifted = hosts[0]
        web = docker_client.containers.get(fleet.agents[0].container("web"))
        await asyncio.to_thread(web.remove, force=True)
        back = await events.wait_for(
            lambda m: isinstance(m, ColourSwitch) and m.hosts == (drifted,)
        )
        assert isinstance(back, ColourSwitch)
        assert (back.colour, back.port) == ("green", 8081)
        await events.wait_for(
            lambda m: (
                isinstance(m, ConvergenceEvent)
                and m.host == drifted
                and m.action is ConvergenceAction.DRIFT_REPAIRED
            )
        )
    repaired = await asyncio.to_thread(copies, docker_client, fleet)
    assert (repaired[f"{drifted}/serving"]["colour"], repaired[f"{drifted}/serving"]["port"]) == (
        "green",
        "8081",
    )
    # Converged hosts were left alone all along (the drift's detection and repair took
    # several full passes, one every 2 s).
    assert repaired[f"{hosts[1]}/serving"]["id"] == switched[f"{hosts[1]}/serving"]["id"]
    assert repaired[f"{late}/serving"]["id"] == now[f"{late}/serving"]["id"]
    assert hook_log.read_text().splitlines().count(f"{drifted} green 8081") == 2

    # A rolling rollout of a service that runs in green updates each host in place, in
    # green: no host is outdated afterwards, and none churns.
    rolled = await fleet.fleetctl(
        *("rollout", "start", "web", "--image", fleet.stack.demo_image("2.0.0")),
        *("--allow-major", "--strategy", "rolling", "-w"),
    )
    assert rolled.code == 0, (rolled, fleet.controller.log_text())
    after = await asyncio.to_thread(copies, docker_client, fleet)
    assert {(c["colour"], c["port"]) for c in after.values()} == {("green", "8081")}
    assert set((await fleet.versions()).values()) == {"2.0.0"}
    await converged_everywhere(fleet, 3)

    # Taking the service off every host tells routers nothing: no host serves it.
    async with EventRecorder(fleet.agents[0].api.client, subjects.EVENTS_WILDCARD) as events:
        deleted = await fleet.fleetctl("delete", "service", "web")
        assert deleted.code == 0, deleted
        await eventually(
            lambda: asyncio.to_thread(copies, docker_client, fleet), lambda c: not c, "removed"
        )
        removal = await events.wait_for(
            lambda m: (
                isinstance(m, RolloutEvent)
                and "-remove-" in m.rollout_id
                and m.status == "complete"
            )
        )
        # A switch would be published right after that event, as the rollout is
        # finished; fleetctl (a process of its own) takes far longer than that.
        await eventually(
            lambda: services_row(fleet), lambda r: r["rollout"] is None, "the removal over"
        )
    assert not events.matching(lambda m: isinstance(m, ColourSwitch)), removal
