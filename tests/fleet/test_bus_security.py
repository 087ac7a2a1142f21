"""The default-deny bus: a real nats-server run from deploy/nats/single.conf, with TLS,
client certificates (fleetctl pki init / hosts enroll) and per-user permissions.

The server's own permission errors are what the tests read: nothing is simulated.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from controller.broker import NatsServer, find_nats_server_binary, reserve_loopback_port
from fleet_lab.agent_process import AgentProcess, agent_args
from fleet_lab.stack import LocalStack
from protocol import subjects
from protocol.signing import generate_key
from protocol.streams import StreamRetention, fleet_buckets, fleet_streams
from tests.conftest import remove_test_containers
from tests.support.fleet import ControllerProcess, fleet_spec, fleetctl, fleetctl_executable
from tests.support.paths import REPO_ROOT
from tests.support.polling import eventually
from tests.support.secure_bus import SecureBus, run_fleetctl, started_secure_bus

pytestmark = pytest.mark.integration

ROOT = REPO_ROOT


@pytest.fixture
async def secure_bus(tmp_path: Path, test_id: str) -> AsyncIterator[SecureBus]:
    def enrol(pki: Path, url: str) -> None:
        for name in (f"a-{test_id}", f"b-{test_id}"):
            run_fleetctl("hosts", "enroll", name, "--pki", str(pki))
        run_fleetctl("hosts", "enroll", f"reader-{test_id}", "--pki", str(pki), "--role", "reader")

    async with started_secure_bus(tmp_path, enrol) as bus:
        yield bus


async def test_plaintext_and_connections_without_a_certificate_are_refused(
    secure_bus: SecureBus,
) -> None:
    with pytest.raises((nats.errors.Error, OSError, TimeoutError)):
        await nats.connect(
            secure_bus.server.url,
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError, TimeoutError)):
        await nats.connect(
            secure_bus.server.url,
            tls=secure_bus.context(None),  # TLS, but no client certificate
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )


def test_an_agent_refuses_plaintext_to_another_machine_unless_told_insecure(
    tmp_path: Path,
) -> None:
    agent = subprocess.run(
        [
            str(Path(fleetctl_executable()).parent / "fleet-agent"),
            "run",
            "--nats=nats://10.255.255.1:4222",
            "--host-id=edge-1",
            f"--state-dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert agent.returncode == 1, agent
    assert "refusing a plaintext NATS connection to nats://10.255.255.1:4222" in agent.stderr


async def test_a_hosts_certificate_cannot_read_another_hosts_commands_nor_send_any_command(
    secure_bus: SecureBus, test_id: str
) -> None:
    a, b = f"a-{test_id}", f"b-{test_id}"
    host_a = await secure_bus.connect(a)
    host_b = await secure_bus.connect(b)
    controller = await secure_bus.connect("controller")
    reader = await secure_bus.connect(f"reader-{test_id}")
    try:
        received_by_b: list[bytes] = []

        async def on_b(msg: Msg) -> None:
            received_by_b.append(msg.data)

        await host_b.subscribe(subjects.command_subject(b), cb=on_b)
        await host_b.flush(timeout=5)

        # A reads B's commands: the server refuses the subscription.
        await host_a.subscribe(subjects.command_subject(b))
        await host_a.flush(timeout=5)
        await secure_bus.denied(a, f'Subscription to "{subjects.command_subject(b)}"')
        # A sends a command to B, or to itself, or speaks as B: all refused.
        for subject in (
            subjects.command_subject(b),
            subjects.command_subject(a),
            subjects.host_event_subject(b, "heartbeat"),
        ):
            await host_a.publish(subject, b"forged")
            await host_a.flush(timeout=5)
            await secure_bus.denied(a, f'Publish to "{subject}"')
        # A reader may watch but never command.
        await reader.publish(subjects.command_subject(b), b"forged")
        await reader.flush(timeout=5)
        await secure_bus.denied(f"reader-{test_id}", f'Publish to "{subjects.command_subject(b)}"')

        # The controller's command reaches B, and it is the only thing B ever got.
        await controller.publish(subjects.command_subject(b), b"from the controller")
        await controller.flush(timeout=5)
        for _ in range(100):
            if received_by_b:
                break
            await asyncio.sleep(0.05)
        assert received_by_b == [b"from the controller"]
        # A's own event is allowed: no error for it.
        await host_a.publish(subjects.host_event_subject(a, "heartbeat"), b"{}")
        await host_a.flush(timeout=5)
        own = subjects.host_event_subject(a, "heartbeat")
        assert not any(own in error for error in secure_bus.errors[a])
    finally:
        for client in (host_a, host_b, controller, reader):
            await client.close()


async def streams_made_by(controller: ControllerProcess, bus: SecureBus) -> None:
    """Wait until the controller has made the fleet's streams (seen with its own
    credentials): an agent started before would be refused making them."""
    client = await bus.connect("controller")
    try:
        js = client.jetstream(timeout=5)

        retention = StreamRetention()
        names = [stream.name for stream in fleet_streams(retention)]
        names += [f"KV_{bucket.bucket}" for bucket in fleet_buckets(retention).values()]

        async def made() -> bool:
            try:
                for name in names:
                    await js.stream_info(name)
            except (nats.errors.Error, TimeoutError):
                return False
            return True

        await eventually(made, bool, f"the streams, made by {controller.controller_id}", 60)
    finally:
        await client.close()


async def test_an_enrolled_agent_is_driven_over_mtls_until_it_is_revoked(
    secure_bus: SecureBus,
    local_stack: LocalStack,
    docker_client: docker.DockerClient,
    test_id: str,
) -> None:
    host = f"a-{test_id}"
    private, public = generate_key()
    key_file = secure_bus.work / "controller.key"
    key_file.write_text(private)
    controller_env = secure_bus.tls_env("controller") | {"FLEET_SIGNING_KEY_FILE": str(key_file)}
    # The controller creates the streams and buckets: a host may not.
    controller = ControllerProcess(
        secure_bus.server.url, secure_bus.work / "controller.log", "c0", env=controller_env
    )
    await controller.start()
    agent = AgentProcess(
        args=agent_args(
            secure_bus.server.url,
            host,
            local_stack.docker_host,
            secure_bus.work / "agent",
            f"t{test_id}-tls-",
            "--heartbeat-interval=1",
        ),
        log_path=secure_bus.work / "agent.log",
        env=secure_bus.tls_env(host) | {"FLEET_TRUSTED_COMMAND_KEYS": json.dumps([public])},
    )
    other: AgentProcess | None = None
    try:
        await streams_made_by(controller, secure_bus)  # a host may not make them
        await agent.start()
        url = secure_bus.server.url
        for _ in range(150):
            listed = await fleetctl(url, "hosts", "-o", "json", env=controller_env)
            if listed.code == 0 and host in listed.stdout:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"{host} never reported:\n{agent.log_text()}")

        spec = secure_bus.work / "web.json"
        spec.write_text(fleet_spec(local_stack.demo_image("1.0.0")).model_dump_json())
        rolled = await fleetctl(
            url,
            "rollout",
            "start",
            "web",
            "--spec",
            str(spec),
            "--strategy",
            "recreate",
            "-w",
            env=controller_env,
        )
        assert rolled.code == 0, (rolled, controller.log_text(), agent.log_text())
        running = docker_client.containers.get(f"t{test_id}-tls-web")
        assert running.status == "running"
        # Everything either side did was within its permissions (each logs a refusal).
        assert "permissions violation" not in agent.log_text().lower()
        assert "permissions violation" not in controller.log_text().lower()

        # After a lost connection the agent sends its latest replies again (in case the
        # dead link swallowed them). The bus lets one reply through per request, so it
        # refuses these copies: expected, and not reported as a drifted permission.
        config = secure_bus.work / "nats.conf"
        port = secure_bus.server.port  # the restarted server listens where clients expect it
        config.write_text(config.read_text().replace("127.0.0.1:-1", f"127.0.0.1:{port}"))
        await secure_bus.server.stop()
        await secure_bus.server.start()
        await agent.wait_logged("a re-sent reply was not needed")
        assert "reconnected to NATS" in agent.log_text()
        assert "NATS refused" not in agent.log_text()

        # Revoked: after the server reloads, the host's certificate opens nothing.
        for suffix in ("crt", "key"):
            kept = (secure_bus.pki / "clients" / f"{host}.{suffix}").read_bytes()
            (secure_bus.work / f"{host}.{suffix}").write_bytes(kept)
        run_fleetctl("hosts", "revoke", host, "--pki", str(secure_bus.pki))
        assert not (secure_bus.pki / "clients" / f"{host}.key").exists()
        secure_bus.server.reload()
        await asyncio.sleep(1)
        still_enrolled = await secure_bus.connect(f"b-{test_id}")
        await still_enrolled.close()
        with pytest.raises((nats.errors.Error, OSError, TimeoutError)):
            await nats.connect(
                url,
                tls=_revoked_context(secure_bus, host),
                connect_timeout=2,
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
        # Cut off from the bus, the agent still stops cleanly when told.
        assert await agent.stop() == 0, agent.log_text()

        # So does one whose server went away while it kept trying to reconnect over TLS,
        # after an earlier reconnect (asyncio's torn-down TLS transport used to fail the
        # final flush with an AttributeError and a traceback).
        other_host = f"b-{test_id}"
        other = AgentProcess(
            args=agent_args(
                url,
                other_host,
                local_stack.docker_host,
                secure_bus.work / "other-agent",
                f"t{test_id}-tls-b-",
                "--heartbeat-interval=1",  # so it has writes pending when told to stop
            ),
            log_path=secure_bus.work / "other-agent.log",
            env=secure_bus.tls_env(other_host),
        )
        await other.start()
        await other.wait_logged("serving fleet.cmd")
        await secure_bus.server.stop()  # the server goes, comes back, and goes for good
        await asyncio.sleep(1)
        await secure_bus.server.start()
        await other.wait_logged("reconnected to NATS")
        await secure_bus.server.stop()
        await asyncio.sleep(3)
        assert await other.stop() == 0, other.log_text()
        assert "Traceback" not in other.log_text()
    finally:
        if other is not None:
            await other.stop()
        await agent.stop()
        await controller.stop()
        remove_test_containers(docker_client, test_id)


def _revoked_context(bus: SecureBus, host: str) -> ssl.SSLContext:
    """The revoked host's certificate: the test kept a copy before revoking deleted it."""
    context = ssl.create_default_context(cafile=str(bus.pki / "ca.crt"))
    context.load_cert_chain(str(bus.work / f"{host}.crt"), str(bus.work / f"{host}.key"))
    return context


async def test_the_three_node_cluster_configs_form_a_tls_cluster_that_replicates(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    run_fleetctl("pki", "init", "--dir", str(pki))
    routes = {n: reserve_loopback_port() for n in (1, 2, 3)}
    servers: list[NatsServer] = []
    for n in (1, 2, 3):
        config = (ROOT / "deploy" / "nats" / "cluster" / f"node-{n}.conf").read_text()
        config = config.replace("/etc/fleetwave/pki", str(pki))
        config = config.replace("/var/lib/fleetwave/nats", str(tmp_path / f"js-{n}"))
        config = config.replace("0.0.0.0:4222", "127.0.0.1:-1")
        config = config.replace("0.0.0.0:6222", f"127.0.0.1:{routes[n]}")
        for peer, port in routes.items():
            config = config.replace(f"nats-{peer}.internal:6222", f"127.0.0.1:{port}")
        (tmp_path / f"node-{n}.conf").write_text(config)
        servers.append(
            NatsServer(
                find_nats_server_binary(),
                tmp_path / f"nats-{n}",
                name=f"fleet-nats-{n}",
                config_file=tmp_path / f"node-{n}.conf",
            )
        )
    bus = SecureBus(servers[0], pki, tmp_path)
    try:
        await asyncio.gather(*(server.start() for server in servers))
        client = await bus.connect("controller")
        try:
            js = client.jetstream(timeout=10)
            # Replicas 3 needs all three nodes, joined over the mutual-TLS routes.
            for _ in range(60):
                try:
                    await js.add_stream(
                        name="PROBE", subjects=["fleet.evt.probe.>"], num_replicas=3
                    )
                    break
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.5)
            info = await js.stream_info("PROBE")
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2  # the leader and two peers
        finally:
            await client.close()
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
