"""A config reload the engine cannot carry out: the previous file goes back, config_failed.

README, "Config files": a fault of the reload itself (the engine refuses the signal or the
restart, the probes cannot run, the agent stops before verifying) puts the previous file
back and reports `config_failed` with the fault; every `config_reloading` ends with
exactly one of `config_applied`, `config_rolled_back`, `config_failed`; the revision is
not marked handled, so a restarted agent applies it then.

The engine is taken away under a running agent by closing the unix-socket forwarder the
agent reaches Docker through.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from controller.broker import reserve_loopback_port
from fleet_lab.agent_client import apply_ok, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.models import AnyMessage, ConfigPhase, ConfigProgress
from protocol.spec import ConfigMount, ServiceSpec
from tests.conftest import SpawnedAgent
from tests.node_agent.update.test_agent_config import config_store, phase_of, set_file, wait_served
from tests.support.events import EventRecorder
from tests.support.tcp_forward import UnixSocketForwarder

pytestmark = pytest.mark.integration
SpawnAgent = Callable[..., Awaitable[SpawnedAgent]]
VERIFYING = 5.0
"""min_healthy_time: how long a reload is verified, the window a test acts in."""


@pytest.fixture
async def engine(local_stack: LocalStack, tmp_path: Path) -> AsyncIterator[UnixSocketForwarder]:
    """The Docker engine behind a socket the test can close (set up before the agent, so
    it is still there while the agent stops)."""
    target = Path(local_stack.docker_host.removeprefix("unix://"))
    forwarder = await UnixSocketForwarder(tmp_path / "engine.sock", target).start()
    try:
        yield forwarder
    finally:
        await forwarder.close()


def slow_to_verify(local_stack: LocalStack, port: int) -> ServiceSpec:
    spec = demo_spec(local_stack.demo_image("1.0.0"), port, min_healthy=VERIFYING)
    return spec.model_copy(update={"config": ConfigMount()})


def of_version(version: int) -> Callable[[AnyMessage], bool]:
    return lambda m: isinstance(m, ConfigProgress) and m.service == "web" and m.version == version


def phases(events: EventRecorder, version: int) -> list[ConfigPhase]:
    return [m.phase for m in events.matching(of_version(version)) if isinstance(m, ConfigProgress)]


@pytest.mark.parametrize("engine_lost", ["before the signal", "while verifying"])
async def test_a_reload_the_engine_cannot_finish_puts_the_previous_file_back_and_fails(
    engine: UnixSocketForwarder,
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    tmp_path: Path,
    engine_lost: str,
) -> None:
    # A process of its own: the Docker client's sockets that the test cuts are not ours.
    agent = await agent_process_factory(f"--docker-host=unix://{engine.listen}")
    await wait_until_serving(agent.api, deadline_s=60)
    store = await config_store(agent.api.client)
    port = reserve_loopback_port()
    await set_file(store, "message=good\n")
    await apply_ok(agent.api, slow_to_verify(local_stack, port))
    on_disk = tmp_path / "process-agent0" / "config" / agent.container("web")
    async with EventRecorder(agent.api.client, subjects.EVENTS_WILDCARD) as events:
        if engine_lost == "before the signal":
            await engine.close()
        version = await set_file(store, "message=never verified\n")
        if engine_lost == "while verifying":
            await events.wait_for(phase_of("web", ConfigPhase.RELOADING, version))
            await engine.close()
        failed = await events.wait_for(phase_of("web", ConfigPhase.FAILED, version), timeout=60)
        assert (on_disk / "app.conf").read_text() == "message=good\n"

        await engine.start()
        later = await set_file(store, "message=later\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, later), timeout=60)
        # The later change's end came after anything else about the failed one could.
        assert phases(events, version) == [ConfigPhase.RELOADING, ConfigPhase.FAILED]
    assert isinstance(failed, ConfigProgress)
    assert "engine unreachable" in failed.detail, failed.detail
    assert "previous app.conf restored" in failed.detail, failed.detail
    assert (on_disk / "app.conf").read_text() == "message=later\n"
    await wait_served(port, "later")


async def test_an_agent_stopped_while_verifying_puts_the_previous_file_back_and_applies_it_later(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    tmp_path: Path,
) -> None:
    agent = await agent_process_factory()
    await wait_until_serving(agent.api, deadline_s=60)
    store = await config_store(agent.api.client)
    port = reserve_loopback_port()
    await set_file(store, "message=before\n")
    await apply_ok(agent.api, slow_to_verify(local_stack, port))
    on_disk = tmp_path / "process-agent0" / "config" / agent.container("web") / "app.conf"
    async with EventRecorder(agent.api.client, subjects.EVENTS_WILDCARD) as events:
        version = await set_file(store, "message=after\n")
        await events.wait_for(phase_of("web", ConfigPhase.RELOADING, version))
        assert await agent.process.stop() == 0
        failed = await events.wait_for(phase_of("web", ConfigPhase.FAILED, version))
        assert on_disk.read_text() == "message=before\n"

        # Not marked handled: the restarted agent applies that revision, once.
        await agent.process.start()
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, version), timeout=60)
        later = await set_file(store, "message=later\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, later), timeout=60)
        assert phases(events, version) == [
            ConfigPhase.RELOADING,
            ConfigPhase.FAILED,
            ConfigPhase.RELOADING,
            ConfigPhase.APPLIED,
        ]
    assert isinstance(failed, ConfigProgress)
    assert "stopped" in failed.detail, failed.detail
    assert "previous app.conf restored" in failed.detail, failed.detail
    assert on_disk.read_text() == "message=later\n"
    await wait_served(port, "later")


@pytest.mark.parametrize(
    ("text", "ending", "served_after"),
    [
        ("message=after\n", ConfigPhase.APPLIED, "after"),  # verified after the restart
        ("message=after\nhealthy=false\n", ConfigPhase.ROLLED_BACK, "before"),  # proved bad
    ],
)
async def test_an_agent_killed_after_writing_a_file_verifies_it_or_puts_the_old_one_back(
    agent_process_factory: SpawnAgent,
    local_stack: LocalStack,
    tmp_path: Path,
    text: str,
    ending: ConfigPhase,
    served_after: str,
) -> None:
    agent = await agent_process_factory(FLEET_FAILPOINT="config_written")
    await wait_until_serving(agent.api, deadline_s=60)
    store = await config_store(agent.api.client)
    port = reserve_loopback_port()
    await set_file(store, "message=before\n")
    await apply_ok(agent.api, slow_to_verify(local_stack, port))  # written at start: no kill
    on_disk = tmp_path / "process-agent0" / "config" / agent.container("web") / "app.conf"
    async with EventRecorder(agent.api.client, subjects.EVENTS_WILDCARD) as events:
        version = await set_file(store, text)
        assert await agent.process.wait(timeout=60) == -signal.SIGKILL
        assert on_disk.read_text() == text  # written, never reloaded nor verified

        await agent.process.start(FLEET_FAILPOINT="never")
        await events.wait_for(phase_of("web", ending, version), timeout=90)
        # The change that the kill cut short gets its end: reloaded and verified now. (Its
        # first config_reloading may have died in the killed agent's outbox.)
        seen = phases(events, version)
        assert seen[-2:] == [ConfigPhase.RELOADING, ending], seen
        assert set(seen) == {ConfigPhase.RELOADING, ending}, seen
    await wait_served(port, served_after)
    expected_on_disk = text if ending is ConfigPhase.APPLIED else "message=before\n"
    assert on_disk.read_text() == expected_on_disk
