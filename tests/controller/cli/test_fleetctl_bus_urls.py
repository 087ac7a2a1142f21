"""fleetctl and `fleetctl controller run` given several bus URLs: they fail over, quietly.

The dead servers are real sockets: a port where nothing listens (refused), and a
listener that accepts and hangs up before NATS's INFO (it counts the attempts, which
shows the client really tried it before moving on).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controller.broker import NatsServer, cluster_servers, reserve_loopback_port
from tests.support.fleet import ControllerProcess
from tests.support.terminal import Ran, run_piped_with

pytestmark = pytest.mark.integration
ClusterFactory = Callable[[int], Awaitable[list[NatsServer]]]
LIBRARY_TRACES = ("Traceback", "nats: encountered error")


class HangUp:
    """A TCP listener that closes every connection at once, and counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@asynccontextmanager
async def hanging_up(port: int = 0) -> AsyncIterator[HangUp]:
    listener = HangUp()
    server = await asyncio.start_server(listener._accept, "127.0.0.1", port)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


async def fleetctl(*args: str, **settings: str) -> Ran:
    return await asyncio.to_thread(run_piped_with, args, settings)


async def wait_for_line(controller: ControllerProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in controller.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{controller.log_text()}"
        assert controller.running, f"exited before {text!r}:\n{controller.log_text()}"
        await asyncio.sleep(0.1)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def forms(refused: str, hang_up: str, live: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Every way to give the servers: flags and settings, dead ones first."""
    urls = [refused, hang_up, live]
    return {
        "repeated --nats": ([arg for url in urls for arg in ("--nats", url)], {}),
        "comma list --nats": (["--nats", ",".join(urls)], {}),
        "FLEET_NATS_URLS comma list": ([], {"FLEET_NATS_URLS": ",".join(urls)}),
        "FLEET_NATS_URLS JSON list": ([], {"FLEET_NATS_URLS": json.dumps(urls)}),
        "FLEET_NATS_URL comma list": ([], {"FLEET_NATS_URL": ",".join(urls)}),
    }


@pytest.mark.parametrize("form", list(forms("refused", "hang-up", "live")))
async def test_fleetctl_given_dead_servers_first_reads_the_fleet_from_the_live_one(
    form: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    content = tmp_path / "app.conf"
    content.write_text("message=hello\n")
    stored = await fleetctl(
        "config", "set", "web", "app.conf", "--file", str(content), FLEET_NATS_URL=nats_server.url
    )
    assert stored.code == 0, stored

    async with hanging_up() as hang_up:
        refused = f"nats://127.0.0.1:{reserve_loopback_port()}"
        flags, settings = forms(refused, hang_up.url, nats_server.url)[form]
        listed = await fleetctl("config", "list", "-o", "json", *flags, **settings)

    assert listed.code == 0, listed
    assert [item["name"] for item in json.loads(listed.stdout)] == ["app.conf"]
    assert hang_up.connections >= 1  # it was tried, in its turn, and given up
    assert listed.stderr == ""


async def test_controller_given_a_dead_server_first_connects_to_the_live_one_and_leads(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with hanging_up() as hang_up:
        controller = ControllerProcess(
            f"{hang_up.url},{nats_server.url}", tmp_path / "controller.log", "c-urls"
        )
        await controller.start()
        try:
            await wait_for_line(controller, "controller c-urls is the leader")
        finally:
            await controller.stop()
    log = controller.log_text()
    assert f"connected to NATS at 127.0.0.1:{nats_server.port}" in log
    assert hang_up.connections >= 1
    assert not [trace for trace in LIBRARY_TRACES if trace in log], log


async def test_controller_logs_one_line_per_change_while_its_only_server_is_away(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    controller = ControllerProcess(nats_server.url, tmp_path / "controller.log", "c-away")
    await controller.start()
    try:
        await wait_for_line(controller, "controller c-away is the leader")
        await nats_server.kill()
        # The port answers and hangs up: each reconnect attempt is seen, and fails.
        async with hanging_up(nats_server.port) as hang_up:
            await wait_until(lambda: hang_up.connections >= 4, "the controller never retried")
        await nats_server.start()
        await wait_for_line(controller, "reconnected to NATS")
    finally:
        await controller.stop()
    log = controller.log_text()
    assert log.count("disconnected from NATS; reconnecting") == 1, log
    assert log.count(f"reconnected to NATS at 127.0.0.1:{nats_server.port}") == 1, log
    assert not [trace for trace in LIBRARY_TRACES if trace in log], log


async def test_controller_given_every_node_fails_over_when_its_node_is_killed(
    nats_cluster: ClusterFactory, tmp_path: Path
) -> None:
    nodes = await nats_cluster(3)
    # Three replicas, as a cluster runs: the fleet's state outlives the node.
    replicated = {"FLEET_STREAMS": json.dumps({"replicas": 3})}
    urls = ",".join(node.url for node in nodes)
    controller = ControllerProcess(urls, tmp_path / "controller.log", "c-cluster", replicated)
    await controller.start()
    try:
        await wait_for_line(controller, "controller c-cluster is the leader")
        assert f"connected to NATS at 127.0.0.1:{nodes[0].port}" in controller.log_text()
        await nodes[0].kill()
        await wait_for_line(controller, "reconnected to NATS at")
        # JetStream elects new leaders for what the node led (seconds); then the other two
        # nodes serve the fleet, and the controller is still running.
        deadline = time.monotonic() + 60
        while (listed := await fleetctl("rollout", "status", "--nats", urls, **replicated)).code:
            assert listed.code == 5, listed  # NATS did not answer yet, nothing else
            assert time.monotonic() < deadline, listed
        assert controller.process is not None
        assert controller.process.returncode is None, controller.log_text()
    finally:
        await controller.stop()
    log = controller.log_text()
    others = {f"reconnected to NATS at 127.0.0.1:{node.port}" for node in nodes[1:]}
    assert any(line in log for line in others), log
    assert log.count("disconnected from NATS; reconnecting") == 1, log
    assert not [trace for trace in LIBRARY_TRACES if trace in log], log


async def test_controller_started_before_its_cluster_has_a_leader_waits_and_then_leads(
    nats_server_binary: Path, tmp_path: Path
) -> None:
    """All nodes booting at once: one node alone cannot elect a JetStream leader, so
    every JetStream request times out; two elect one but cannot place three replicas.
    The controller waits (one line per reason), not exits; once the peers are up, it
    creates the fleet's state and leads."""
    nodes = cluster_servers(nats_server_binary, tmp_path / "cluster")
    replicated = {"FLEET_STREAMS": json.dumps({"replicas": 3})}
    urls = ",".join(node.url for node in nodes)
    controller = ControllerProcess(urls, tmp_path / "controller.log", "c-early", replicated)
    try:
        await nodes[0].start()
        await controller.start()
        await wait_for_line(controller, "JetStream is not ready (no answer")
        await nodes[1].start()
        await wait_for_line(controller, "(no suitable peers for placement)")
        assert controller.process is not None
        assert controller.process.returncode is None, controller.log_text()
        await nodes[2].start()
        await wait_for_line(controller, "controller c-early is the leader", timeout=120)
    finally:
        await controller.stop()
        for node in nodes:
            await node.stop()
    log = controller.log_text()
    waits = [line.split(": ", 1)[1] for line in log.splitlines() if "is not ready" in line]
    assert len(waits) == len(set(waits)), log  # told once per reason, not once per retry
    assert not [trace for trace in LIBRARY_TRACES if trace in log], log


async def test_controller_waiting_for_jetstream_stops_at_once_on_sigterm(
    nats_server_binary: Path, tmp_path: Path
) -> None:
    nodes = cluster_servers(nats_server_binary, tmp_path / "cluster")
    urls = ",".join(node.url for node in nodes)
    controller = ControllerProcess(urls, tmp_path / "controller.log", "c-stopped")
    try:
        await nodes[0].start()  # alone: no JetStream leader can be elected
        await controller.start()
        await wait_for_line(controller, "JetStream is not ready")
        # Stopped within stop()'s 20 s (else SIGKILL, -9), long before the 120 s wait ends.
        assert await controller.stop() == 0, controller.log_text()
    finally:
        await controller.stop()
        await nodes[0].stop()
    assert "Traceback" not in controller.log_text()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("hosts",), "fleetctl: NATS did not answer: "),
        (("controller", "run"), "fleetctl: NATS stopped answering: "),
    ],
    ids=["fleetctl hosts", "controller run"],
)
async def test_a_server_that_connects_but_never_answers_is_one_line_and_exit_5(
    args: tuple[str, ...], said: str, nats_server_binary: Path
) -> None:
    """A nats-server without JetStream: the connection works, no bucket request is answered."""
    port = reserve_loopback_port()
    url = f"nats://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        str(nats_server_binary), "-a", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "cannot reach NATS" in (ran := await fleetctl(*args, "--nats", url)).stderr:
            assert ran.code == 5, ran  # the server is still starting
            assert time.monotonic() < deadline, ran
    finally:
        server.terminate()
        await server.wait()
    assert ran.code == 5, ran
    failures = [line for line in ran.error_lines if line.startswith("fleetctl: ")]
    assert len(failures) == 1, ran
    assert failures[0].startswith(said), ran
    assert "Traceback" not in ran.stderr
