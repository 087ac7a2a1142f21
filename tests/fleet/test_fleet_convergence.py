"""Declared state: hosts that were away, join late or drift converge to the accepted revision.

Real agents as processes, a real controller, the real engine. Each host's version is
asked of its agent; what the controller did is read from its convergence events.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import docker
import docker.errors
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import wait_until_serving
from node_agent.runtime import SERVICE_LABEL
from protocol import subjects
from protocol.models import AnyMessage, ConvergenceAction, ConvergenceEvent, PrepareCommand
from tests.conftest import FleetFactory, LocalFleet, SpawnedAgent
from tests.support.events import EventRecorder
from tests.support.fleet import HOST_TIMEOUT, BudgetChecker, fleet_spec, fleetctl_running
from tests.support.polling import eventually
from tests.support.prometheus import Series, scrape, scrape_until

pytestmark = pytest.mark.integration
CONVERGENCE = subjects.controller_event_subject("convergence")


def convergence(host: str, action: ConvergenceAction) -> Any:
    def match(message: AnyMessage) -> bool:
        return (
            isinstance(message, ConvergenceEvent)
            and message.host == host
            and message.action is action
        )

    return match


FLEETCTL_HOST_TIMEOUT = {"FLEET_HOST_TIMEOUT": str(HOST_TIMEOUT.total_seconds())}
"""fleetctl judges hosts live as the fixture's controller does (not by its 30 s default)."""


async def host_status(fleet: LocalFleet, host: str) -> str:
    listed = await fleet.fleetctl("hosts", "-o", "json", env=FLEETCTL_HOST_TIMEOUT)
    assert listed.code == 0, listed
    return str({h["host"]: h for h in json.loads(listed.stdout)}[host]["status"])


async def until_versions(fleet: LocalFleet, wanted: str) -> None:
    everywhere = {agent.api.host: wanted for agent in fleet.agents}
    await eventually(fleet.versions, lambda found: found == everywhere, f"{wanted} everywhere", 90)


async def exporter_agrees(port: int, events: EventRecorder, action: ConvergenceAction) -> None:
    """Wait until the exporter's count of ``action`` is the number of such events seen."""
    key = (("action", action.value), ("service", "web"))

    def said() -> float:
        return float(len(events.matching(lambda m: getattr(m, "action", None) is action)))

    async def read() -> Series:
        return await asyncio.to_thread(scrape, port)

    def agrees(series: Series) -> bool:
        return series.get("fleet_convergence_actions_total", {}).get(key) == said()

    await eventually(read, agrees, f"the exporter counting {action.value} as the events do")


def replace_by_hand(fleet: LocalFleet, agent: SpawnedAgent, client: docker.DockerClient) -> None:
    """`docker rm -f` + `docker run` of another image under the service's name, done while
    the agent is stopped (SIGSTOP), so no heartbeat sees the container missing between."""
    agent.process.send(signal.SIGSTOP)
    try:
        name = agent.container("web")
        client.containers.get(name).remove(force=True)
        client.containers.run(
            fleet.stack.demo_image("1.1.0"), name=name, network_mode="none", detach=True
        )
    finally:
        agent.process.send(signal.SIGCONT)


async def test_a_removed_or_replaced_container_is_repaired_and_a_restart_by_its_policy_is_not(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(3)
    removed, replaced, restarted = fleet.agents
    drifted = {removed.api.host, replaced.api.host}
    port = reserve_loopback_port()
    async with (
        fleetctl_running(fleet.nats_url, "exporter", "--listen", f"127.0.0.1:{port}"),
        EventRecorder(removed.api.client, CONVERGENCE) as events,
    ):
        await scrape_until(port, "fleet_host_up", {"host": removed.api.host}, 1)  # it serves
        # The container's server dies: its restart policy (on-failure) starts it again.
        web = docker_client.containers.get(restarted.container("web"))
        # (The exec may die with the container, 137: the restart count below is the proof.)
        web.exec_run(["sh", "-c", "kill $(pidof nc)"])

        async def restarts() -> int:
            return int(docker_client.containers.get(web.id).attrs["RestartCount"])

        await eventually(restarts, lambda count: count >= 1, "restarted by its policy")

        async def reported_restarts() -> int:
            listed = await fleet.fleetctl("hosts", "-o", "json")
            host = {h["host"]: h for h in json.loads(listed.stdout)}[restarted.api.host]
            return max((s["restart_count"] for s in host["services"]), default=0)

        # A heartbeat has shown the controller the restarted container before the rest.
        await eventually(reported_restarts, lambda count: count >= 1, "restart reported")

        docker_client.containers.get(removed.container("web")).remove(force=True)
        replace_by_hand(fleet, replaced, docker_client)
        detected = {
            agent.api.host: await events.wait_for(
                convergence(agent.api.host, ConvergenceAction.DRIFT_DETECTED), timeout=60
            )
            for agent in (removed, replaced)
        }
        repaired = [
            await events.wait_for(convergence(host, ConvergenceAction.DRIFT_REPAIRED), timeout=90)
            for host in sorted(drifted)
        ]
        # The exporter counts what the controller said, as the events show it.
        for action in (ConvergenceAction.DRIFT_DETECTED, ConvergenceAction.DRIFT_REPAIRED):
            await exporter_agrees(port, events, action)
    assert {host: getattr(m, "reason", None) for host, m in detected.items()} == {
        removed.api.host: "container removed by hand",
        replaced.api.host: "container replaced by hand",
    }
    assert [getattr(m, "revision", None) for m in repaired] == [1, 1]
    assert await fleet.versions() == {agent.api.host: "1.0.0" for agent in fleet.agents}
    labels = docker_client.containers.get(replaced.container("web")).labels
    assert labels.get(SERVICE_LABEL) == "web"  # the agent's container again, not the hand-made one
    # Several passes saw the restarted container while the others were repaired: no drift.
    assert not events.matching(
        lambda m: isinstance(m, ConvergenceEvent) and m.host == restarted.api.host
    )


def declaration_file(fleet: LocalFleet, tag: str, **declared: Any) -> str:
    """The demo's spec at ``tag`` plus the declaration's own keys, as a JSON file."""
    document = {**fleet_spec(fleet.stack.demo_image(tag)).model_dump(mode="json"), **declared}
    path = fleet.work_dir / f"declared-{tag}-{len(declared)}-{abs(hash(str(declared)))}.json"
    path.write_text(json.dumps(document))
    return str(path)


async def services(fleet: LocalFleet) -> dict[str, dict[str, Any]]:
    listed = await fleet.fleetctl("services", "-o", "json")
    assert listed.code == 0, listed
    return {row["service"]: row for row in json.loads(listed.stdout)}


def container_ids(fleet: LocalFleet, client: docker.DockerClient) -> dict[str, str]:
    return {a.api.host: str(client.containers.get(a.container("web")).id) for a in fleet.agents}


async def test_apply_rolls_a_changed_spec_configures_a_changed_policy_and_diff_changes_nothing(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    first, second = (agent.api.host for agent in fleet.agents)
    # One check at a time: the second host's goes as the first one's answer comes.
    policy = {"max_unavailable": 1, "preflight_parallelism": 1}
    newer = declaration_file(fleet, "1.1.0", update=policy, drift="report")
    # diff judges the hosts by their heartbeats: wait until they show the first deploy.
    await eventually(
        lambda: services(fleet), lambda s: s["web"]["converged"] == 2, "the deploy reported"
    )

    shown = await fleet.fleetctl("diff", "-f", newer, "-o", "json")
    assert shown.code == 0, shown
    (web,) = json.loads(shown.stdout)
    assert web["change"] == "roll"
    assert {h["host"]: h["action"] for h in web["hosts"]} == {first: "update", second: "update"}
    assert await fleet.versions() == {first: "1.0.0", second: "1.0.0"}  # diff changed nothing
    history = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
    assert len(json.loads(history.stdout)["revisions"]) == 1, history

    async with EventRecorder(fleet.agents[0].api.client, f"{subjects.PREFIX}.cmd.*") as sent:
        applied = await fleet.fleetctl("apply", "-f", newer, "-w")
    assert applied.code == 0, applied
    assert await fleet.versions() == {first: "1.1.0", second: "1.1.0"}
    # Each host checked under one command id (a resend keeps its id), never twice over.
    check_ids: dict[str, set[str]] = {}
    for check in sent.matching(lambda m: isinstance(m, PrepareCommand)):
        assert isinstance(check, PrepareCommand)
        check_ids.setdefault(check.host, set()).add(check.id)
    assert {host: len(ids) for host, ids in check_ids.items()} == {first: 1, second: 1}
    again = await fleet.fleetctl("apply", "-f", newer)
    assert again.code == 0, again
    assert again.stdout.strip() == "web: unchanged"

    before = container_ids(fleet, docker_client)
    policy_only = declaration_file(fleet, "1.1.0", update={"max_unavailable": 2}, drift="report")
    configured = await fleet.fleetctl("apply", "-f", policy_only)
    assert configured.stdout.strip() == "web: configured (nothing restarts)", configured
    assert (await services(fleet))["web"]["revision"] == 2

    async with EventRecorder(fleet.agents[0].api.client, CONVERGENCE) as events:
        docker_client.containers.get(fleet.agents[0].container("web")).remove(force=True)
        detected = await events.wait_for(convergence(first, ConvergenceAction.DRIFT_DETECTED))
        assert isinstance(detected, ConvergenceEvent)
        listed = await eventually(
            lambda: services(fleet), lambda s: s["web"]["drifted"] == 1, "drift counted"
        )
        assert listed["web"]["converged"] == 1
        # Passes go on (a late host is deployed) and the drift is still only reported.
        late = await fleet.join()
        await events.wait_for(convergence(late.api.host, ConvergenceAction.DEPLOY))
        await eventually(
            lambda: services(fleet), lambda s: s["web"]["converged"] == 2, "late host converged"
        )
    # Many passes later: the policy change restarted nothing (the first host's container
    # was removed by hand above and stays so).
    still = docker_client.containers.get(fleet.agents[1].container("web"))
    assert still.id == before[second]
    assert not events.matching(convergence(first, ConvergenceAction.DRIFT_REPAIRED))
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(fleet.agents[0].container("web"))


async def test_returning_hosts_converge_one_at_a_time_to_the_accepted_revision_and_late_ones_too(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(4)
    present, *away = fleet.agents
    for agent in away:
        await agent.process.stop()
    names = [agent.api.host for agent in away]

    async def statuses() -> list[str]:
        return [await host_status(fleet, host) for host in names]

    await eventually(statuses, lambda found: set(found) == {"stale"}, "all away hosts stale")
    accepted = await fleet.roll("1.1.0", "--max-unavailable", "1", "-w", env=FLEETCTL_HOST_TIMEOUT)
    assert accepted.code == 0, accepted
    failed = await fleet.roll(
        *("3.0.0-crash", "--allow-major", "--max-unavailable", "1"),
        *("--failure-action", "revert", "-w"),
        env=FLEETCTL_HOST_TIMEOUT,
    )
    assert failed.code == 1, failed  # reverted: revision 3 is not accepted

    async with EventRecorder(present.api.client, subjects.EVENTS_WILDCARD) as events:
        for agent in away:  # all three come back at once
            await agent.process.start()
        for agent in away:
            await wait_until_serving(agent.api, deadline_s=60)
        await until_versions(fleet, "1.1.0")
        late = await fleet.join()  # enrolled after all that: no web at all
        await until_versions(fleet, "1.1.0")
    converged = [m for _, m in events.messages if isinstance(m, ConvergenceEvent)]
    updated = sorted(m.host for m in converged if m.action is ConvergenceAction.UPDATE)
    assert updated == sorted(a.api.host for a in away)
    deployed = [m.host for m in converged if m.action is ConvergenceAction.DEPLOY]
    assert deployed == [late.api.host]
    assert {m.revision for m in converged} == {2}  # the accepted revision, 1.1.0
    assert present.api.host not in {m.host for m in converged}
    # One at a time (max_unavailable 1), as the agents themselves reported their updates.
    windows = [w for w in BudgetChecker.of(events).windows if w.host in names]
    assert sorted(w.host for w in windows) == sorted(names)
    overlapping = max(len({w.host for w in windows if w.open_at(s.start)}) for s in windows)
    assert overlapping == 1, windows


async def test_a_host_that_comes_back_during_a_rollout_is_one_more_host_of_that_rollout(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(2)
    present, away = fleet.agents
    await away.process.stop()
    await eventually(
        lambda: host_status(fleet, away.api.host), lambda s: s == "stale", "the host stale"
    )
    async with EventRecorder(present.api.client, CONVERGENCE) as events:
        # Slow enough (the new container proves healthy for 6 s) to come back during it.
        started = await fleet.roll(
            *("1.1.0", "--max-unavailable", "1", "--min-healthy-time", "6"),
            env=FLEETCTL_HOST_TIMEOUT,
        )
        assert started.code == 0, started
        await away.process.start()
        await wait_until_serving(away.api, deadline_s=60)
        joined = await events.wait_for(convergence(away.api.host, ConvergenceAction.UPDATE))
        done = await fleet.fleetctl("rollout", "status", "web", "-w")
        assert done.code == 0, done
    listed = await fleet.fleetctl("rollout", "status", "web", "-o", "json")
    rollout = json.loads(listed.stdout)
    assert isinstance(joined, ConvergenceEvent)
    assert (joined.rollout_id, joined.reason) == (
        rollout["id"],
        f"joined rollout {rollout['id']} in progress",
    )
    assert {h: e["phase"] for h, e in rollout["hosts"].items()} == {
        present.api.host: "done",
        away.api.host: "done",
    }
    assert await fleet.versions() == {present.api.host: "1.1.0", away.api.host: "1.1.0"}
    # Taken by the rollout itself: no convergence rollout of its own came after.
    assert [m.rollout_id for _, m in events.messages if isinstance(m, ConvergenceEvent)] == [
        rollout["id"]
    ]


def running_web(fleet: LocalFleet, client: docker.DockerClient) -> set[str]:
    """The hosts whose web container exists, asked of the engine."""
    found = set()
    for agent in fleet.agents:
        try:
            client.containers.get(agent.container("web"))
        except docker.errors.NotFound:
            continue
        found.add(agent.api.host)
    return found


async def test_a_host_gets_the_service_while_its_labels_match_and_delete_removes_it_everywhere(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    config = fleet.work_dir / "labelled-agent.toml"
    config.write_text('labels = { role = "db" }\n')
    labelled = await fleet.join(f"--config={config}")
    await until_versions(fleet, "1.0.0")  # no selector yet: the new host gets it too
    web_only = declaration_file(fleet, "1.0.0", selector={"role": "web"})

    async with EventRecorder(labelled.api.client, CONVERGENCE) as events:
        # Only the selector changes: every host is off it now, and loses the service.
        applied = await fleet.fleetctl("apply", "-f", web_only)
        assert applied.stdout.strip() == "web: configured (nothing restarts)", applied

        async def on_hosts() -> set[str]:
            return running_web(fleet, docker_client)

        await eventually(on_hosts, lambda found: found == set(), "web removed off the selector")
        removed = events.matching(
            lambda m: isinstance(m, ConvergenceEvent) and m.action is ConvergenceAction.REMOVE
        )
        assert {m.host for m in removed if isinstance(m, ConvergenceEvent)} == {
            agent.api.host for agent in fleet.agents
        }

        config.write_text('labels = { role = "web" }\n')
        labelled.process.send(signal.SIGHUP)
        await events.wait_for(convergence(labelled.api.host, ConvergenceAction.DEPLOY))
        await eventually(on_hosts, lambda found: found == {labelled.api.host}, "web deployed")

        config.write_text('labels = { role = "db" }\n')
        labelled.process.send(signal.SIGHUP)
        await eventually(on_hosts, lambda found: found == set(), "web removed again")

        config.write_text('labels = { role = "web" }\n')
        labelled.process.send(signal.SIGHUP)
        await eventually(
            lambda: services(fleet),
            lambda found: (found["web"]["matching"], found["web"]["converged"]) == (1, 1),
            "web back on the labelled host",
        )
        deleted = await fleet.fleetctl("delete", "service", "web")
        assert deleted.code == 0, deleted
        assert deleted.stdout.strip() == "web: deleted; the controller removes it from 1 host(s)"
        await eventually(on_hosts, lambda found: found == set(), "web deleted everywhere")
        # The agents' next heartbeats say so too (the containers go first).
        listed = await eventually(
            lambda: services(fleet),
            lambda found: found["web"]["removing"] == 0,
            "no host left to remove web from",
        )
    assert listed["web"]["deleted"] is True
    history = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
    assert len(json.loads(history.stdout)["revisions"]) == 1  # kept
