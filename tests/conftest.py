"""Fixtures shared by every test: real nats-servers, the local stack, leak checks."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import docker
import nats.errors
import pytest

from controller.broker import NatsServer, find_nats_server_binary, start_cluster
from fleet_lab.agent_client import AgentClient, AgentHandle, wait_until_serving
from fleet_lab.agent_client import connect as connect_client
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import LocalStack, load_local_stack
from node_agent.daemon import Agent
from node_agent.settings import AgentSettings
from protocol import subjects
from protocol.image_ref import parse_image_reference
from protocol.models import InspectReply
from protocol.signing import CommandSigner, generate_key
from tests.support.agent_image import build_agent_image
from tests.support.events import EventRecorder, stored_events
from tests.support.fleet import (
    HEARTBEATS,
    CommandResult,
    ControllerProcess,
    check_every_budget,
    fleet_spec,
    fleetctl,
)
from tests.support.lab import Lab, lab_is_up, lab_script, load_lab
from tests.support.netns import IsolatedHost

TEST_LABEL = "io.fleetwave.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every async test gets the leak check; sync tests have no loop to leak into.
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            # First in, last out: it must run after every other fixture has torn down.
            item.fixturenames.insert(0, "_fail_on_leaked_tasks")


@pytest.fixture
async def _fail_on_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    leaked = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {leaked!r}")


@pytest.fixture(scope="session")
def nats_server_binary() -> Path:
    return find_nats_server_binary()


@pytest.fixture
async def nats_server(nats_server_binary: Path, tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A fresh JetStream nats-server on a loopback port of its own choosing."""
    server = NatsServer(binary=nats_server_binary, work_dir=tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        server.resume()  # a test may have left it SIGSTOPped
        await server.stop()


ClusterFactory = Callable[[int], Awaitable[list[NatsServer]]]


@pytest.fixture
async def nats_cluster(nats_server_binary: Path, tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Call with a size to get that many routed JetStream servers; all stopped afterwards."""
    started: list[NatsServer] = []

    async def factory(size: int = 3) -> list[NatsServer]:
        servers = await start_cluster(
            nats_server_binary, tmp_path / f"cluster{len(started)}", size=size
        )
        started.extend(servers)
        return servers

    try:
        yield factory
    finally:
        for server in started:
            server.resume()
            await server.stop()


@pytest.fixture(scope="session")
def local_stack() -> LocalStack:
    return load_local_stack()


@pytest.fixture(scope="session")
def docker_client(local_stack: LocalStack) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=local_stack.docker_host, timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def agent_image(local_stack: LocalStack) -> str:
    """The fleet-agent image (deploy/agent), in the local registry."""
    return build_agent_image()


@pytest.fixture(scope="session")
def lab(agent_image: str) -> Iterator[Lab]:
    """The lab of real hosts (deploy/lab), up once per test run; taken down afterwards
    unless it was up before the run (someone's `make lab-up`). Every test that uses it
    is in the xdist group "lab", so that one test worker has it."""
    was_up = lab_is_up()
    try:
        lab_script("up")
        yield load_lab()
    finally:  # a failed `up` too: nothing half made is left behind
        if not was_up:
            lab_script("down")


@pytest.fixture
def test_id() -> str:
    """A short unique id, to name this test's containers, volumes and images."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def cleanup_containers(docker_client: docker.DockerClient, test_id: str) -> Iterator[str]:
    """Yields a label value; every container and volume carrying it is removed afterwards."""
    yield test_id
    selector = {"label": f"{TEST_LABEL}={test_id}"}
    for container in docker_client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters=selector):
        volume.remove(force=True)


def remove_test_containers(docker_client: docker.DockerClient, test_id: str) -> None:
    """Every container and volume a test's agents made (their names carry the test id)."""
    prefix = f"t{test_id}-"
    for container in docker_client.containers.list(all=True, filters={"name": prefix}):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": prefix}):
        volume.remove(force=True)


@pytest.fixture
async def agent_factory(
    nats_server: NatsServer,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    test_id: str,
) -> AsyncIterator[Callable[..., Awaitable[AgentHandle]]]:
    """Start in-process agents on the real stack; their containers are removed afterwards."""
    handles: list[AgentHandle] = []

    async def start(**overrides: object) -> AgentHandle:
        index = len(handles)
        settings = AgentSettings(
            **{
                "nats_urls": (nats_server.url,),
                "host_id": f"h{index}-{test_id}",
                "docker_host": local_stack.docker_host,
                "state_dir": tmp_path / f"agent{index}",
                "container_prefix": f"t{test_id}-{index}-",
                "heartbeat_interval": 1.0,
                **overrides,
            }  # type: ignore[arg-type]
        )
        agent = Agent(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        client = await connect_client(settings.nats_urls)
        handle = AgentHandle(
            client=client, host=settings.host_id, agent=agent, task=task, stop=stop
        )
        handles.append(handle)
        await wait_until_serving(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            handle.stop.set()
            await handle.task
            await handle.client.close()
        remove_test_containers(docker_client, test_id)


@dataclass
class SpawnedAgent:
    """A ``fleet-agent`` child process and a bus client that speaks to it."""

    process: AgentProcess
    api: AgentClient
    container_prefix: str

    def container(self, service: str) -> str:
        """The name of the container that serves ``service`` on this agent's host."""
        return f"{self.container_prefix}{service}"


@pytest.fixture
async def agent_process_factory(
    nats_server: NatsServer,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    test_id: str,
) -> AsyncIterator[Callable[..., Awaitable[SpawnedAgent]]]:
    """Start ``fleet-agent run`` child processes; killed and cleaned up afterwards.

    The agent is not awaited until serving: a test may start it before NATS is up.
    """
    spawned: list[SpawnedAgent] = []

    async def start(
        *extra_args: str,
        island: IsolatedHost | None = None,
        nats_urls: Sequence[str] = (),
        **env: str,
    ) -> SpawnedAgent:
        """One more agent; with ``island``, inside that host's namespace, over its link;
        with ``nats_urls``, on that bus (a cluster) instead of the session's server."""
        index = len(spawned)
        bus = tuple(nats_urls) or (nats_server.url,)
        host = f"p{index}-{test_id}"
        prefix = f"t{test_id}-p{index}-"
        if island is not None:
            extra_args = (*extra_args, "--insecure")  # its NATS is across a link, not loopback
        process = AgentProcess(
            args=agent_args(
                island.nats_url if island else bus,
                host,
                local_stack.docker_host,
                tmp_path / f"process-agent{index}",
                prefix,
                "--heartbeat-interval=1",
                *extra_args,
            ),
            log_path=tmp_path / f"process-agent{index}.log",
            env=env,
            launcher=island.launcher if island else (),
        )
        client = await connect_client(bus)
        agent = SpawnedAgent(process, AgentClient(client=client, host=host), prefix)
        spawned.append(agent)
        await process.start()
        return agent

    try:
        yield start
    finally:
        # Together: each may drain an update in flight for up to its exit wait.
        await asyncio.gather(*(agent.process.stop() for agent in spawned))
        for agent in spawned:
            await agent.api.client.close()
        remove_test_containers(docker_client, test_id)


@dataclass
class LocalFleet:
    """N real agents, a real controller and the bus between them, for one test."""

    nats_url: str
    agents: list[SpawnedAgent]
    controller: ControllerProcess
    work_dir: Path
    stack: LocalStack
    signer: CommandSigner
    """The controller's key; every agent of the fleet trusts only it."""
    signing_key_file: Path
    spawn: Callable[..., Awaitable[SpawnedAgent]] | None = None
    """Starts one more agent on this fleet's bus that trusts its key (see join)."""

    async def join(self, *args: str, **env: str) -> SpawnedAgent:
        """One more agent, serving, as a host enrolled after the fleet was deployed."""
        assert self.spawn is not None
        trust = {"FLEET_TRUSTED_COMMAND_KEYS": json.dumps([self.signer.public_key])}
        agent = await self.spawn(*args, **trust, **env)
        await wait_until_serving(agent.api, deadline_s=60)
        self.agents.append(agent)
        return agent

    def another_controller(self, controller_id: str) -> ControllerProcess:
        """A further `fleetctl controller run` with this fleet's signing key."""
        return ControllerProcess(
            self.nats_url,
            self.work_dir / f"controller-{controller_id}.log",
            controller_id,
            env={"FLEET_SIGNING_KEY_FILE": str(self.signing_key_file)},
        )

    def spec_file(self, tag: str, **options: float) -> Path:
        path = self.work_dir / f"web-{tag}.json"
        path.write_text(fleet_spec(self.stack.demo_image(tag), **options).model_dump_json())
        return path

    async def fleetctl(
        self, *args: str, timeout: float = 240.0, env: dict[str, str] | None = None
    ) -> CommandResult:
        """fleetctl with this fleet's signing key, plus ``env`` (FLEET_* settings)."""
        merged = {"FLEET_SIGNING_KEY_FILE": str(self.signing_key_file), **(env or {})}
        return await fleetctl(self.nats_url, *args, timeout=timeout, env=merged)

    async def roll(self, tag: str, *flags: str, env: dict[str, str] | None = None) -> CommandResult:
        """`fleetctl rollout start web --image demo/web:<tag> <flags>`."""
        return await self.fleetctl(
            "rollout", "start", "web", "--image", self.stack.demo_image(tag), *flags, env=env
        )

    async def versions(self) -> dict[str, str | None]:
        """Each host's running web image tag, asked of the agent itself."""
        found: dict[str, str | None] = {}
        for agent in self.agents:
            reply = await agent.api.request(self.signer.sign(agent.api.inspect("web")), timeout=10)
            assert isinstance(reply, InspectReply), reply
            image = reply.status.image
            healthy = reply.status.state.value == "running"
            found[agent.api.host] = parse_image_reference(image).tag if image and healthy else None
        return found


FleetFactory = Callable[..., Awaitable[LocalFleet]]


@pytest.fixture
async def fleet_factory(
    nats_server: NatsServer,
    agent_process_factory: Callable[..., Awaitable[SpawnedAgent]],
    local_stack: LocalStack,
    tmp_path: Path,
) -> AsyncIterator[FleetFactory]:
    """Start ``size`` agents and a controller, and deploy demo/web:1.0.0 everywhere.

    From then on every event is recorded, and at the end every rollout the test ran is
    checked against its budget: no test passes if the fleet ever had too many hosts out.
    """
    controllers: list[ControllerProcess] = []
    recorders: list[tuple[LocalFleet, EventRecorder, EventRecorder]] = []

    async def start(
        size: int = 5,
        agent_env: dict[int, dict[str, str]] | None = None,
        deploy_min_ready: str = "100%",
        islands: dict[int, IsolatedHost] | None = None,
        nats_urls: Sequence[str] = (),
        env: dict[str, str] | None = None,
        first_spec: Path | None = None,
    ) -> LocalFleet:
        """``nats_urls``: a bus of its own (a cluster); ``env``: FLEET_* settings that the
        agents, the controller and fleetctl all get; ``first_spec``: what is deployed
        first, instead of the demo's web.toml at 1.0.0."""
        # Every test fleet runs with signed commands: the controller signs, agents verify.
        private, public = generate_key()
        key_file = tmp_path / f"controller-{len(controllers)}.key"
        key_file.write_text(private)
        trust = {"FLEET_TRUSTED_COMMAND_KEYS": json.dumps([public])}
        agents = [
            await agent_process_factory(
                island=(islands or {}).get(index),
                nats_urls=nats_urls,
                **trust,
                **(env or {}),
                **(agent_env or {}).get(index, {}),
            )
            for index in range(size)
        ]
        for agent in agents:
            try:
                await wait_until_serving(agent.api, deadline_s=60)
            except nats.errors.Error as exc:
                log = agent.process.log_text()[-4000:]
                raise AssertionError(f"{agent.api.host} never served ({exc!r}):\n{log}") from exc
        bus = ",".join(nats_urls) or nats_server.url
        controller = ControllerProcess(
            bus,
            tmp_path / "controller-0.log",
            controller_id="c0",
            env={"FLEET_SIGNING_KEY_FILE": str(key_file), **(env or {})},
        )
        controllers.append(controller)
        await controller.start()
        fleet = LocalFleet(
            bus,
            agents,
            controller,
            tmp_path,
            local_stack,
            CommandSigner(private),
            key_file,
            spawn=functools.partial(agent_process_factory, nats_urls=nats_urls, **(env or {})),
        )
        await wait_for_heartbeats(fleet, size)
        first = await fleet.fleetctl(
            "rollout",
            "start",
            "web",
            "--spec",
            str(first_spec or fleet.spec_file("1.0.0")),
            "--strategy",
            "recreate",
            "--min-ready",
            deploy_min_ready,
            "-w",
        )
        assert first.code == 0, (first, controller.log_text())
        client = agents[0].api.client
        events = EventRecorder(client, subjects.EVENTS_WILDCARD)
        beats = EventRecorder(client, HEARTBEATS)  # an agent gone silent is a host out
        recorders.append(
            (
                fleet,
                await recording.enter_async_context(events),
                await recording.enter_async_context(beats),
            )
        )
        return fleet

    async with AsyncExitStack() as recording:
        try:
            yield start
            for fleet, recorder, heartbeats in recorders:
                listed = await fleet.fleetctl("rollout", "status", "-o", "json")
                assert listed.code == 0, listed
                beats: EventRecorder | None = heartbeats
                if fleet.nats_url != nats_server.url:  # a bus of its own may have lost a node
                    client = fleet.agents[0].api.client
                    recorder = await stored_events(client, subjects.EVENTS_WILDCARD)
                    beats = None  # live beats missed while the recorder's server was away
                check_every_budget(recorder, json.loads(listed.stdout), heartbeats=beats)
        finally:
            for controller in controllers:
                await controller.stop()


async def wait_for_heartbeats(fleet: LocalFleet, size: int) -> None:
    for _ in range(100):
        listed = await fleet.fleetctl("hosts", "-o", "json")
        if listed.code == 0 and len(json.loads(listed.stdout)) >= size:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{size} hosts never all reported: {listed}")
