"""The agent SIGKILLed at each phase of an app's update (``FLEET_FAILPOINT``): after a
restart the group is entirely old or entirely new, healthy, with one right answer per
phase, and the controller's retry of the same command gets that answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from fleet_lab.agent_client import wait_until_serving
from fleet_lab.stack import LocalStack
from protocol.models import OperationOutcome, OperationReply
from tests.conftest import SpawnedAgent
from tests.node_agent.apps.app_files import demo_app
from tests.node_agent.apps.test_app_updates import containers
from tests.support.crash import killed_at

pytestmark = pytest.mark.integration
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]
PHASES = {
    # failpoint: the one right end, for an update of the cache and web together
    "app_member_stopped": "old",  # the cache's old container stopped, nothing new yet
    "app_member_started": "old",  # the cache's new container started, not yet checked
    "app_member_stopped:web": "old",  # the new cache healthy, web's old one stopped
    "app_member_started:web": "old",  # the new cache healthy, the new web not checked
    "app_done": "new",  # every member healthy, the commit point written
    "app_concluded": "new",  # the answer stored, the journal not yet closed
}


async def deployed(
    spawn: SpawnAgent, local_stack: LocalStack, docker_client: docker.DockerClient,
    tmp_path: Path,
) -> tuple[SpawnedAgent, dict[str, Any]]:  # fmt: skip
    """A spawned agent that deployed the test app, and its containers then."""
    agent = await spawn(FLEET_FAILPOINT="never")
    await wait_until_serving(agent.api)
    first = await agent.api.request(agent.api.apply_app(demo_app(tmp_path, local_stack, "a")), 180)
    assert isinstance(first, OperationReply)
    assert first.outcome is OperationOutcome.DONE, first
    return agent, containers(docker_client, agent.container_prefix, "a")


@pytest.mark.parametrize(("failpoint", "end"), sorted(PHASES.items()))
async def test_an_agent_killed_in_an_app_update_leaves_the_group_entirely_old_or_new(
    agent_process_factory: SpawnAgent, local_stack: LocalStack,
    docker_client: docker.DockerClient, tmp_path: Path, failpoint: str, end: str,
) -> None:  # fmt: skip
    agent, before = await deployed(agent_process_factory, local_stack, docker_client, tmp_path)
    prefix = agent.container_prefix
    update = agent.api.apply_app(
        demo_app(tmp_path, local_stack, "a", CACHE_TAG="1.1.0", WEB_TAG="1.1.0")
    )

    await killed_at(agent, failpoint, update)

    retried = await agent.api.request(update, 180)  # the controller's retry: the same id
    assert isinstance(retried, OperationReply), retried
    after = containers(docker_client, prefix, "a")
    assert after["migrate"] == before["migrate"]
    if end == "old":
        assert retried.outcome is OperationOutcome.ROLLED_BACK, retried
        assert retried.failure is not None
        assert retried.failure.reason.code == "agent_restarted"
        assert after == before
    else:
        assert retried.outcome is OperationOutcome.DONE, retried
        for member in ("cache", "web"):
            assert after[member]["id"] != before[member]["id"], member
            assert after[member]["image"].endswith("demo/web:1.1.0"), member
            assert after[member]["running"], member
    names = [c.name for c in docker_client.containers.list(all=True, filters={"name": prefix})]
    assert sorted(n.removeprefix(prefix) for n in names) == ["a-cache", "a-migrate", "a-web"]


@pytest.mark.parametrize(
    "failpoint",
    [
        "app_restoring",  # the failure journaled, nothing put back yet
        "app_put_back:web",  # web (replaced last) put back, the cache not yet
        "app_rolled_back",  # every member put back, the answer not yet stored
    ],
)
async def test_an_agent_killed_while_restoring_finishes_it_and_answers_with_the_members_failure(
    agent_process_factory: SpawnAgent, local_stack: LocalStack,
    docker_client: docker.DockerClient, tmp_path: Path, failpoint: str,
) -> None:  # fmt: skip
    agent, before = await deployed(agent_process_factory, local_stack, docker_client, tmp_path)
    # The cache is replaced, web crashes, and the agent dies while it puts them back.
    bad = demo_app(tmp_path, local_stack, "a", CACHE_TAG="1.1.0", WEB_TAG="3.0.0-crash")
    update = agent.api.apply_app(bad)

    await killed_at(agent, failpoint, update)

    retried = await agent.api.request(update, 180)
    assert isinstance(retried, OperationReply), retried
    assert retried.outcome is OperationOutcome.ROLLED_BACK, retried
    assert retried.failure is not None
    # The answer is the one the update had: web's failure, not "the agent restarted".
    assert retried.failure.reason.code == "member_failed", retried.failure
    assert retried.failure.reason.text.startswith("web: "), retried.failure
    # And each member's bundle as the update had them (journaled before the kill): the
    # agent that came back does not know which member failed, yet names web.
    assert list(retried.member_failures) == ["cache", "web"], retried.member_failures
    assert retried.member_failures["web"] == retried.failure
    cache = retried.member_failures["cache"]
    assert cache.reason.text == "cache: put back, as web failed", cache
    assert any("demo/web 1.1.0 " in line for line in cache.last_log_lines), cache
    assert containers(docker_client, agent.container_prefix, "a") == before
