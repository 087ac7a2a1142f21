"""Config files on one host: written before the start, reloaded in place, undone when bad.

The demo service serves its config file's ``message=`` on /config, counts SIGHUPs on
/reloads, and fails /health while the file says ``healthy=false``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import pytest
from nats.aio.client import Client

from controller.broker import NatsServer, reserve_loopback_port
from controller.state.config_store import ConfigStore, open_config_store
from fleet_lab.agent_client import AgentHandle, apply_ok, demo_spec, wait_until_serving
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.config_files import ConfigContent, config_key
from protocol.models import (
    AnyMessage,
    ConfigPhase,
    ConfigProgress,
    ErrorReply,
    OperationOutcome,
    OperationReply,
    PrepareReply,
    utc_now,
)
from protocol.spec import ConfigMount, Hook, HookPlace, Hooks, ReloadPolicy, ServiceSpec
from tests.conftest import SpawnedAgent
from tests.support.events import EventRecorder
from tests.support.fleet import fleetctl
from tests.support.http import http_get

pytestmark = pytest.mark.integration
AgentFactory = Callable[..., Awaitable[AgentHandle]]


def config_spec(image: str, port: int, **mount: object) -> ServiceSpec:
    spec = demo_spec(image, port)
    return spec.model_copy(update={"config": ConfigMount(**mount)})


async def served(port: int, path: str = "/config") -> str | None:
    answer = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}{path}")
    return answer.body if answer is not None and answer.status == 200 else None


async def wait_served(port: int, want: str, deadline_s: float = 30.0) -> None:
    last = None
    for _ in range(int(deadline_s * 5)):
        last = await served(port)
        if last == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"/config never served {want!r}; last {last!r}")


def phase_of(service: str, phase: ConfigPhase, version: int) -> Callable[[AnyMessage], bool]:
    return lambda m: (
        isinstance(m, ConfigProgress)
        and m.service == service
        and m.phase is phase
        and m.version == version
    )


async def config_store(client: Client) -> ConfigStore:
    return await open_config_store(client.jetstream(timeout=5))


async def set_file(
    store: ConfigStore,
    text: str,
    name: str = "app.conf",
    *,
    host: str | None = None,
    selector: dict[str, str] | None = None,
) -> int:
    content = ConfigContent.of(text.encode())
    stored = await store.set("web", name, content, utc_now(), host=host, selector=selector)
    return stored.document.version


def container_identity(client: docker.DockerClient, name: str) -> tuple[str, str, int]:
    info = client.api.inspect_container(name)
    return info["Id"], info["State"]["StartedAt"], info["State"]["Pid"]


async def test_a_changed_file_reaches_the_running_service_by_sighup_without_a_restart(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    port = reserve_loopback_port()
    await set_file(store, "message=first\n")
    async with EventRecorder(agent.client, subjects.EVENTS_WILDCARD) as events:
        # First start: the file is in place before the container exists.
        await apply_ok(agent, config_spec(local_stack.demo_image("1.0.0"), port))
        assert await served(port) == "first"
        container = agent.agent.settings.container_name("web")
        before = container_identity(docker_client, container)

        version = await set_file(store, "message=second\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, version))
        await wait_served(port, "second")

    assert container_identity(docker_client, container) == before, "the container was restarted"
    assert await served(port, "/reloads") == "1"
    on_disk = tmp_path / "agent0" / "config" / container / "app.conf"
    assert on_disk.read_text() == "message=second\n"
    mounts = docker_client.api.inspect_container(container)["Mounts"]
    config_mount = next(m for m in mounts if m["Destination"] == "/config")
    assert config_mount["RW"] is False


async def test_a_file_that_breaks_the_service_is_put_back_and_reported_with_the_probe_output(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    port = reserve_loopback_port()
    await set_file(store, "message=good\n")
    await apply_ok(agent, config_spec(local_stack.demo_image("1.0.0"), port))
    async with EventRecorder(agent.client, subjects.EVENTS_WILDCARD) as events:
        version = await set_file(store, "message=broken\nhealthy=false\n")
        rolled_back = await events.wait_for(phase_of("web", ConfigPhase.ROLLED_BACK, version))

    assert isinstance(rolled_back, ConfigProgress)
    assert rolled_back.failure is not None
    outputs = [result.output for result in rolled_back.failure.probe_results]
    assert any("500" in output for output in outputs), outputs
    assert "restored" in rolled_back.detail
    assert await served(port) == "good"
    health = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/health")
    assert health is not None
    assert health.status == 200


async def test_two_changes_in_quick_succession_end_on_the_last_one(
    agent_factory: AgentFactory, local_stack: LocalStack, tmp_path: Path
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    port = reserve_loopback_port()
    await set_file(store, "message=one\n")
    await apply_ok(agent, config_spec(local_stack.demo_image("1.0.0"), port))
    async with EventRecorder(agent.client, subjects.EVENTS_WILDCARD) as events:
        await set_file(store, "message=two\n")
        last = await set_file(store, "message=three\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, last))
    await wait_served(port, "three")
    applied = json.loads((tmp_path / "agent0" / "config-applied" / "web.json").read_text())
    assert applied["app.conf"]["version"] == last
    assert not applied["app.conf"]["rejected"]


async def test_an_override_for_one_host_changes_that_host_only(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    first, second = await agent_factory(), await agent_factory()
    store = await config_store(first.client)
    ports = reserve_loopback_port(), reserve_loopback_port()
    await set_file(store, "message=base\n")
    for agent, port in zip((first, second), ports, strict=True):
        await apply_ok(agent, config_spec(local_stack.demo_image("1.0.0"), port))
    async with EventRecorder(first.client, subjects.EVENTS_WILDCARD) as events:
        version = await set_file(store, "message=special\n", host=second.host)
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, version))
        await wait_served(ports[1], "special")
        applied_hosts = {
            m.host
            for m in events.matching(phase_of("web", ConfigPhase.APPLIED, version))
            if isinstance(m, ConfigProgress)
        }
    assert await served(ports[0]) == "base"
    assert applied_hosts == {second.host}, "the host without the override reloaded"


async def test_prepare_is_not_ready_while_a_required_file_is_missing(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    spec = config_spec(
        local_stack.demo_image("1.0.0"), reserve_loopback_port(), files=("app.conf",)
    )
    missing = await agent.request(agent.prepare(spec))
    assert isinstance(missing, PrepareReply)
    assert not missing.ready
    assert [r.code for r in missing.reasons] == ["config_missing"]
    assert "app.conf" in missing.reasons[0].text

    await set_file(store, "message=present\n")
    present = await agent.request(agent.prepare(spec))
    assert isinstance(present, PrepareReply)
    assert present.ready, present.reasons


async def test_an_unreadable_revision_is_reported_and_the_file_left_alone(
    agent_factory: AgentFactory, local_stack: LocalStack
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    port = reserve_loopback_port()
    await set_file(store, "message=fine\n")
    await apply_ok(agent, config_spec(local_stack.demo_image("1.0.0"), port))
    kv = await agent.client.jetstream(timeout=5).key_value(subjects.CONFIG_BUCKET)
    async with EventRecorder(agent.client, subjects.EVENTS_WILDCARD) as events:
        await kv.put(config_key("web", "app.conf"), b"\x00\xffnot a document")
        failed = await events.wait_for(
            lambda m: isinstance(m, ConfigProgress) and m.phase is ConfigPhase.FAILED
        )
    assert isinstance(failed, ConfigProgress)
    assert "not JSON" in failed.detail
    assert await served(port) == "fine"
    # The agent keeps serving commands.
    reply = await agent.request(agent.inspect("web"))
    assert reply.kind == "inspect_reply"


async def test_a_restart_policy_restarts_the_container_and_verifies_it(
    agent_factory: AgentFactory, local_stack: LocalStack, docker_client: docker.DockerClient
) -> None:
    agent = await agent_factory()
    store = await config_store(agent.client)
    port = reserve_loopback_port()
    await set_file(store, "message=before\n")
    spec = config_spec(local_stack.demo_image("1.0.0"), port, reload=ReloadPolicy.RESTART)
    await apply_ok(agent, spec)
    container = agent.agent.settings.container_name("web")
    started = container_identity(docker_client, container)[1]
    async with EventRecorder(agent.client, subjects.EVENTS_WILDCARD) as events:
        version = await set_file(store, "message=after\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, version))
    await wait_served(port, "after")
    _, restarted, _ = container_identity(docker_client, container)
    assert restarted != started
    assert await served(port, "/reloads") == "0"


async def test_an_agent_stopped_during_a_change_catches_up_once_on_restart(
    agent_process_factory: Callable[..., Awaitable[SpawnedAgent]], local_stack: LocalStack
) -> None:
    agent = await agent_process_factory()
    await wait_until_serving(agent.api, deadline_s=60)
    store = await config_store(agent.api.client)
    port = reserve_loopback_port()
    await set_file(store, "message=before\n")
    await apply_ok(agent.api, config_spec(local_stack.demo_image("1.0.0"), port))
    async with EventRecorder(agent.api.client, subjects.EVENTS_WILDCARD) as events:
        assert await agent.process.stop() == 0
        away = await set_file(store, "message=while away\n")
        await agent.process.start()
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, away), timeout=60)
        await wait_served(port, "while away")

        # A second restart finds nothing new; the next change is applied as usual.
        assert await agent.process.stop() == 0
        await agent.process.start()
        await wait_until_serving(agent.api, deadline_s=60)
        after = await set_file(store, "message=after\n")
        await events.wait_for(phase_of("web", ConfigPhase.APPLIED, after), timeout=60)
        applied_away = events.matching(phase_of("web", ConfigPhase.APPLIED, away))
    await wait_served(port, "after")
    assert len(applied_away) == 1
    assert await served(port, "/reloads") == "2"


async def test_sighup_reloads_the_agents_labels_without_reconnecting(
    nats_server: NatsServer,
    agent_process_factory: Callable[..., Awaitable[SpawnedAgent]],
    tmp_path: Path,
) -> None:
    settings = tmp_path / "agent-settings.toml"
    settings.write_text('labels = { role = "edge" }\n')
    agent = await agent_process_factory(f"--config={settings}")
    await wait_until_serving(agent.api, deadline_s=60)
    await wait_for_labels(nats_server.url, agent.api.host, {"role": "edge"})

    settings.write_text('labels = { role = "core", zone = "b" }\nlog_level = "DEBUG"\n')
    agent.process.send(signal.SIGHUP)
    await wait_for_labels(nats_server.url, agent.api.host, {"role": "core", "zone": "b"})

    assert agent.process.running
    log = agent.process.log_text()
    assert "log level DEBUG" in log
    assert log.count("connected to NATS") == 1, log
    assert "disconnected" not in log


async def test_a_label_change_by_sighup_moves_the_host_onto_and_off_a_selector_override(
    agent_process_factory: Callable[..., Awaitable[SpawnedAgent]],
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    settings = tmp_path / "agent-settings.toml"
    settings.write_text('labels = { tier = "main" }\n')
    agent = await agent_process_factory(f"--config={settings}")
    await wait_until_serving(agent.api, deadline_s=60)
    store = await config_store(agent.api.client)
    port = reserve_loopback_port()
    await set_file(store, "message=base\n")
    await set_file(store, "message=canary\n", selector={"tier": "canary"})
    await apply_ok(agent.api, config_spec(local_stack.demo_image("1.0.0"), port))
    await wait_served(port, "base")
    before = container_identity(docker_client, agent.container("web"))

    settings.write_text('labels = { tier = "canary" }\n')
    agent.process.send(signal.SIGHUP)
    await wait_served(port, "canary")
    settings.write_text('labels = { tier = "main" }\n')
    agent.process.send(signal.SIGHUP)
    await wait_served(port, "base")

    assert container_identity(docker_client, agent.container("web")) == before
    assert await served(port, "/reloads") == "2"
    assert agent.process.running


async def wait_for_labels(nats_url: str, host: str, labels: dict[str, str]) -> None:
    """Until `fleetctl hosts` shows ``host`` with exactly ``labels``."""
    seen = None
    for _ in range(100):
        listed = await fleetctl(nats_url, "hosts", "-o", "json")
        assert listed.code == 0, listed
        seen = {h["host"]: h["labels"] for h in json.loads(listed.stdout)}.get(host)
        if seen == labels:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{host} never showed labels {labels}; last {seen}")


async def test_an_update_whose_config_bucket_cannot_be_read_is_refused_and_runs_when_sent_again(
    agent_factory: AgentFactory,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    agent = await agent_factory(allow_host_hooks=True)
    port = reserve_loopback_port()
    await apply_ok(agent, demo_spec(local_stack.demo_image("1.0.0"), port))
    container = agent.agent.settings.container_name("web")
    before = container_identity(docker_client, container)
    ran = tmp_path / "pre-update-ran"
    hook = Hook(command=("touch", str(ran)), run_in=HookPlace.HOST)
    newer = config_spec(local_stack.demo_image("1.1.0"), port)
    command = agent.apply(newer.model_copy(update={"hooks": Hooks(pre_update=hook)}))
    js = agent.client.jetstream(timeout=5)
    store = await config_store(agent.client)
    await set_file(store, "message=hello\n")

    await js.delete_stream(f"KV_{subjects.CONFIG_BUCKET}")  # gone: reads fail at once
    try:
        refused = await agent.request(command)
    finally:
        store = await config_store(agent.client)  # the bucket again, for every test after
    # README: refused before anything is touched (the pre_update hook included), and not
    # recorded as the command's answer.
    assert isinstance(refused, ErrorReply), refused
    assert refused.code == "config_unavailable", refused
    assert container_identity(docker_client, container) == before
    assert not ran.exists()

    await set_file(store, "message=hello\n")
    again = await agent.request(command)  # the same command id, as the controller resends

    assert isinstance(again, OperationReply), again
    assert again.outcome is OperationOutcome.DONE, again
    assert ran.exists()
    assert await served(port) == "hello"
