"""The old agent that let its successor have the host and was started again by the engine
(README, "Upgrading the agent"): it waits while the successor is at it, under either
name and through the guard's renames; it waits when the engine cannot say; past the
deadline it removes the stuck successor, takes its own name back and answers
`successor_stuck`. Real containers on the real engine stand in for the two agents."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.stack import LocalStack
from node_agent.runtime import DockerRuntime
from node_agent.update.operation import OperationResult
from node_agent.upgrade.fallback import Fallback
from node_agent.upgrade.handoff_files import DONE, RELEASED, REQUEST, TAKEN, HandoffNotes
from protocol.models import OperationOutcome
from protocol.spec import ServiceSpec
from tests.conftest import TEST_LABEL

pytestmark = pytest.mark.integration
WAIT = 30.0
# The README's rule: at most the ready deadline after letting go (healthy deadline plus
# 30 s after the takeover), plus 10 s.
READY_DEADLINE, HEALTHY_DEADLINE, STOP_GRACE, SLACK = 5.0, 20.0, 30.0, 10.0


@dataclass
class OldHost:
    """One host's engine, its handoff notes, and the old agent's fallback, named ``agent``."""

    client: docker.DockerClient
    runtime: DockerRuntime
    notes: HandoffNotes
    image: str
    label: str
    agent: str
    answers: list[tuple[str, OperationResult]] = field(default_factory=list)

    def run(self, name: str) -> str:
        container = self.client.containers.run(
            self.image, name=name, detach=True, network_mode="none",
            labels={TEST_LABEL: self.label},
        )  # fmt: skip
        return str(container.id)

    def name_of(self, container_id: str) -> str | None:
        try:
            return str(self.client.containers.get(container_id).name)
        except docker.errors.NotFound:
            return None

    def let_go(
        self, released_at: float, *, taken_at: float | None = None,
        ids: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        """The notes of an upgrade in which this agent released the host's commands;
        ``ids``: the old agent's container and its successor's."""
        by_id = {} if ids is None else {"previous_id": ids[0], "successor_id": ids[1]}
        self.notes.write(
            REQUEST, operation_id="op-up", previous=self.agent, successor=f"{self.agent}.next",
            ready_deadline=READY_DEADLINE, healthy_deadline=HEALTHY_DEADLINE, **by_id,
        )  # fmt: skip
        self.notes.write(RELEASED, at=released_at)
        if taken_at is not None:
            self.notes.write(TAKEN, at=taken_at)

    def fallback(self, agent: str | None = None, made_for: str | None = None) -> Fallback:
        return Fallback(self.runtime, self.notes, agent or self.agent, made_for)

    async def finish(
        self, operation_id: str, result: OperationResult, _: ServiceSpec | None
    ) -> None:
        self.answers.append((operation_id, result))


async def still_waiting_after_ten_polls(fallback: Fallback) -> bool:
    """Whether keep_out_of_the_way was still waiting after 2 s (it polls every 0.2 s);
    it is stopped either way."""
    stop = asyncio.Event()
    waiting = asyncio.create_task(fallback.keep_out_of_the_way(stop))
    done, _ = await asyncio.wait([waiting], timeout=2.0)
    stop.set()
    await asyncio.wait_for(waiting, WAIT)
    return not done


@pytest.fixture
def old_host(
    local_stack: LocalStack, docker_client: docker.DockerClient, cleanup_containers: str,
    tmp_path: Path,
) -> Iterator[OldHost]:  # fmt: skip
    image = local_stack.demo_image("1.0.0")
    docker_client.images.pull(image)
    runtime = DockerRuntime(local_stack.docker_host, 30)
    try:
        yield OldHost(
            docker_client, runtime, HandoffNotes(tmp_path), image, cleanup_containers,
            f"t{cleanup_containers}-agent",
        )  # fmt: skip
    finally:
        runtime.close()


async def test_an_agent_that_let_go_waits_while_its_successor_runs_under_its_own_name(
    old_host: OldHost,
) -> None:
    old_host.run(old_host.agent)
    successor = old_host.run(f"{old_host.agent}.next")
    fallback = old_host.fallback()
    assert not await fallback.successor_holds()  # nothing released yet: it serves
    old_host.let_go(time.time())
    assert await fallback.successor_holds()
    # Another agent's handoff in a shared state directory is not this one's to wait for.
    assert not await old_host.fallback("some-other-agent").successor_holds()
    old_host.client.containers.get(successor).stop(timeout=1)
    assert not await fallback.successor_holds()  # it stopped before it took over

    await fallback.settle(old_host.finish)
    ((operation, result),) = old_host.answers
    assert (operation, result.outcome) == ("op-up", OperationOutcome.ROLLED_BACK)
    assert [r.code for r in result.reasons] == ["successor_stopped"]
    assert old_host.name_of(successor) is None  # removed
    assert not old_host.notes.has(REQUEST)


async def test_an_agent_set_aside_waits_through_its_guards_renames_and_then_answers(
    old_host: OldHost,
) -> None:
    agent, client = old_host.agent, old_host.client
    old = old_host.run(f"{agent}.previous")  # set aside by the successor, which took
    successor = old_host.run(agent)  # the agent's name
    old_host.let_go(time.time(), taken_at=time.time())
    fallback = old_host.fallback()
    assert await fallback.successor_holds()
    # The guard's first rename: the successor goes aside; the old one is still aside too.
    client.containers.get(successor).rename(f"{agent}.failed")
    assert await fallback.successor_holds()
    # The second: the old agent has its name back. The host is its own again.
    client.containers.get(old).rename(agent)
    assert not await fallback.successor_holds()

    await fallback.settle(old_host.finish)
    ((_, result),) = old_host.answers
    assert [r.code for r in result.reasons] == ["successor_failed"]
    assert old_host.name_of(successor) is None
    assert old_host.name_of(old) == agent


async def test_past_the_commit_point_a_container_set_aside_waits_to_be_removed(
    old_host: OldHost,
) -> None:
    agent = old_host.agent
    old = old_host.run(f"{agent}.previous")
    old_host.run(agent)
    long_ago = time.time() - 1000  # far past every deadline: none applies once done
    old_host.let_go(long_ago, taken_at=long_ago)
    old_host.notes.write(DONE, at=long_ago)
    fallback = old_host.fallback()
    assert await fallback.successor_holds()
    assert await still_waiting_after_ten_polls(fallback)
    assert old_host.name_of(old) == f"{agent}.previous"  # nothing taken back
    # The successor itself, started again before it removed the old container, serves.
    assert not await old_host.fallback(made_for="op-up").successor_holds()


@pytest.mark.parametrize(
    ("stage", "renamed"),
    [("before_takeover", False), ("before_takeover", True), ("in_probation", True)],
)
async def test_a_successor_stuck_past_the_deadline_is_removed_and_the_agent_takes_its_name_back(
    old_host: OldHost, stage: str, renamed: bool
) -> None:
    """Renamed: the successor took the agent's name, setting the agent aside; or not
    yet, still under its own name. Either way, found by id."""
    agent, client = old_host.agent, old_host.client
    old = old_host.run(f"{agent}.previous" if renamed else agent)
    successor = old_host.run(agent if renamed else f"{agent}.next")
    client.containers.get(successor).pause()  # stuck, yet running as far as the engine says
    now = time.time()
    if stage == "before_takeover":  # a second past the README's deadline
        old_host.let_go(now - (READY_DEADLINE + SLACK) - 1, ids=(old, successor))
    else:
        taken = now - (HEALTHY_DEADLINE + STOP_GRACE + SLACK) - 1
        old_host.let_go(now - 100, taken_at=taken, ids=(old, successor))
    fallback = old_host.fallback()

    await asyncio.wait_for(fallback.keep_out_of_the_way(asyncio.Event()), WAIT)
    assert old_host.name_of(successor) is None
    assert old_host.name_of(old) == agent
    await fallback.settle(old_host.finish)
    ((_, result),) = old_host.answers
    assert (result.outcome, [r.code for r in result.reasons]) == (
        OperationOutcome.ROLLED_BACK, ["successor_stuck"],
    )  # fmt: skip
    assert result.failure is not None
    assert result.failure.last_log_lines  # the successor's own output, read before it went


@pytest.mark.parametrize("stage", ["before_takeover", "in_probation"])
async def test_a_successor_within_its_deadline_is_waited_for(old_host: OldHost, stage: str) -> None:
    agent = old_host.agent
    old = old_host.run(f"{agent}.previous")
    successor = old_host.run(agent)
    now = time.time()
    # Five seconds short of the README's deadline.
    if stage == "before_takeover":
        released = now - (READY_DEADLINE + SLACK) + 5
        old_host.let_go(released, ids=(old, successor))
        expected = released + READY_DEADLINE + SLACK
    else:
        taken = now - (HEALTHY_DEADLINE + STOP_GRACE + SLACK) + 5
        old_host.let_go(taken - 60, taken_at=taken, ids=(old, successor))
        expected = taken + HEALTHY_DEADLINE + STOP_GRACE + SLACK
    fallback = old_host.fallback()
    assert fallback.deadline() == expected
    assert await still_waiting_after_ten_polls(fallback)
    assert (old_host.name_of(old), old_host.name_of(successor)) == (f"{agent}.previous", agent)


@pytest.mark.parametrize(
    ("released_ago", "logged"),
    [
        (0.0, "could not tell whether a successor holds the host"),
        (1000.0, "could not take the host back from the successor"),
    ],
)
async def test_an_engine_that_cannot_answer_keeps_the_agent_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, released_ago: float, logged: str
) -> None:
    notes = HandoffNotes(tmp_path)
    notes.write(REQUEST, operation_id="op-up", previous="agent", successor="agent.next")
    notes.write(RELEASED, at=time.time() - released_ago)
    # A loopback port nothing listens on (docker-py leaks the socket of a failed unix
    # connect; urllib3 closes a failed TCP one).
    runtime = DockerRuntime(f"tcp://127.0.0.1:{reserve_loopback_port()}", 2)
    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="node_agent.upgrade.fallback")
    try:
        waiting = asyncio.create_task(Fallback(runtime, notes, "agent").keep_out_of_the_way(stop))
        deadline = time.monotonic() + WAIT
        while sum(logged in r.getMessage() for r in caplog.records) < 3:
            assert not waiting.done(), caplog.text  # it gave up waiting: fail open
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
        assert not waiting.done()
        stop.set()
        await asyncio.wait_for(waiting, WAIT)
    finally:
        runtime.close()
