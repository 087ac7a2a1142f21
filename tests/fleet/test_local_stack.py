"""The local stack is real: engine, both registries, and each demo/web behaviour."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from controller.broker import reserve_loopback_port
from fleet_lab.stack import LocalStack
from tests.conftest import TEST_LABEL
from tests.support.http import HttpAnswer, http_get, wait_for_http

pytestmark = pytest.mark.integration

RunDemo = Callable[..., tuple[Container, int]]


def wait_for_exit(container: Container, deadline_s: float = 20.0) -> int:
    result = container.wait(timeout=deadline_s)
    return int(result["StatusCode"])


@pytest.fixture
def run_demo(
    docker_client: docker.DockerClient, local_stack: LocalStack, cleanup_containers: str
) -> RunDemo:
    """Start demo/web:<tag> with host networking on a free port; removed after the test."""

    def run(tag: str, **kwargs: object) -> tuple[Container, int]:
        port = reserve_loopback_port()
        environment = {"PORT": str(port), **kwargs.pop("environment", {})}  # type: ignore[dict-item]
        container = docker_client.containers.run(
            local_stack.demo_image(tag),
            detach=True,
            network_mode="host",
            environment=environment,
            labels={TEST_LABEL: cleanup_containers},
            **kwargs,
        )
        return container, port

    return run


def test_the_engine_answers_and_has_no_bridge_network(docker_client: docker.DockerClient) -> None:
    assert docker_client.ping() is True
    drivers = {network.attrs["Driver"] for network in docker_client.networks.list()}
    assert "bridge" not in drivers


def test_an_image_pushed_to_the_open_registry_pulls_back_by_digest(
    docker_client: docker.DockerClient, local_stack: LocalStack, test_id: str
) -> None:
    source = docker_client.images.get(local_stack.demo_image("1.0.0"))
    repository = f"{local_stack.registry}/smoke/{test_id}"
    assert source.tag(repository, tag="v1")
    try:
        docker_client.images.push(repository, tag="v1")
        registry_data = docker_client.images.get_registry_data(f"{repository}:v1")
        digest = registry_data.id
        docker_client.images.remove(f"{repository}:v1")
        pulled = docker_client.images.pull(f"{repository}@{digest}")
        assert pulled.id == source.id
        assert f"{repository}@{digest}" in pulled.attrs["RepoDigests"]
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{repository}:v1")


def test_the_auth_registry_refuses_anonymous_clients(local_stack: LocalStack) -> None:
    answer = http_get(f"http://{local_stack.auth_registry}/v2/")
    assert answer is not None
    assert answer.status == 401


def test_the_auth_registry_refuses_an_anonymous_pull_and_accepts_the_credentials(
    docker_client: docker.DockerClient, local_stack: LocalStack
) -> None:
    image = local_stack.demo_image("1.1.0", registry=local_stack.auth_registry)
    with pytest.raises(docker.errors.APIError, match=r"(?i)auth|unauthorized"):
        docker_client.images.pull(image)
    credentials = {"username": local_stack.auth_user, "password": local_stack.auth_password}
    with pytest.raises(docker.errors.APIError, match=r"(?i)auth|unauthorized"):
        docker_client.images.pull(image, auth_config={**credentials, "password": "wrong"})
    pulled = docker_client.images.pull(image, auth_config=credentials)
    assert image in pulled.tags


def test_a_healthy_demo_container_on_host_networking_answers_health_and_version(
    run_demo: RunDemo,
) -> None:
    container, port = run_demo("1.0.0")
    assert wait_for_http(f"http://127.0.0.1:{port}/health", 200).body == "ok"
    assert wait_for_http(f"http://127.0.0.1:{port}/version", 200).body == "1.0.0"
    container.reload()
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"


def test_each_healthy_tag_reports_its_own_version(run_demo: RunDemo) -> None:
    for tag in ("1.1.0", "2.0.0"):
        _, port = run_demo(tag)
        assert wait_for_http(f"http://127.0.0.1:{port}/version", 200).body == tag


def test_the_crash_build_exits_non_zero_right_after_start(run_demo: RunDemo) -> None:
    container, _ = run_demo("3.0.0-crash")
    assert wait_for_exit(container) == 3
    assert b"crashes on start" in container.logs()


def test_the_unhealthy_build_runs_but_answers_500_on_health(run_demo: RunDemo) -> None:
    container, port = run_demo("3.0.1-unhealthy")
    assert wait_for_http(f"http://127.0.0.1:{port}/health", 500).body.startswith("unhealthy")
    container.reload()
    assert container.status == "running"


def test_the_slow_build_becomes_healthy_only_after_warming_up(run_demo: RunDemo) -> None:
    _, port = run_demo("3.0.2-slow", environment={"SLOW_SECONDS": "3"})
    assert "warming up" in wait_for_http(f"http://127.0.0.1:{port}/health", 503).body
    assert wait_for_http(f"http://127.0.0.1:{port}/health", 200, deadline_s=15).body == "ok"


def test_the_slow_build_waits_eight_seconds_by_default(run_demo: RunDemo) -> None:
    _, port = run_demo("3.0.2-slow")
    answer = wait_for_http(f"http://127.0.0.1:{port}/health", 503)
    assert "of 8s" in answer.body


def test_a_healthy_build_stops_cleanly_on_sigterm(run_demo: RunDemo) -> None:
    container, port = run_demo("1.0.0")
    wait_for_http(f"http://127.0.0.1:{port}/health", 200)
    container.stop(timeout=10)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0


def test_the_stubborn_build_ignores_sigterm_and_is_killed_after_the_grace_period(
    run_demo: RunDemo,
) -> None:
    container, port = run_demo("3.0.3-stubborn")
    wait_for_http(f"http://127.0.0.1:{port}/health", 200)
    container.stop(timeout=1)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 137
    assert b"SIGTERM ignored" in container.logs()


def test_sighup_makes_the_demo_reread_its_config_without_a_restart(
    run_demo: RunDemo, tmp_path: Path
) -> None:
    config = tmp_path / "app.conf"
    config.write_text("message=first\n")
    tmp_path.chmod(0o755)  # the demo runs as nobody (65534), pytest's tmp dirs are 0700
    container, port = run_demo("1.0.0", volumes={str(tmp_path): {"bind": "/config", "mode": "ro"}})
    base = f"http://127.0.0.1:{port}"
    assert wait_for_http(f"{base}/config", 200).body == "first"
    container.reload()
    started_at = container.attrs["State"]["StartedAt"]

    config.write_text("message=second\nhealthy=false\n")
    container.kill(signal="SIGHUP")
    deadline = time.monotonic() + 10
    while (answer := http_get(f"{base}/config")) is None or answer.body != "second":
        assert time.monotonic() < deadline, f"config never reloaded, last answer {answer}"
        time.sleep(0.1)
    assert wait_for_http(f"{base}/health", 500).body == "config says healthy=false"
    assert http_get(f"{base}/reloads") == HttpAnswer(200, "1")
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started_at


def test_the_marker_in_the_data_volume_survives_a_container_replacement(
    run_demo: RunDemo, docker_client: docker.DockerClient, cleanup_containers: str
) -> None:
    volume = docker_client.volumes.create(
        name=f"fleetwave-test-{cleanup_containers}", labels={TEST_LABEL: cleanup_containers}
    )
    mounts = {volume.name: {"bind": "/data", "mode": "rw"}}
    first, port = run_demo("1.0.0", volumes=mounts)
    wait_for_http(f"http://127.0.0.1:{port}/health", 200)
    first.stop(timeout=10)
    first.remove()

    second, port = run_demo("1.1.0", volumes=mounts)
    wait_for_http(f"http://127.0.0.1:{port}/health", 200)
    marker = second.exec_run(["cat", "/data/marker"]).output.decode()
    starts = second.exec_run(["cat", "/data/starts.log"]).output.decode().split()
    assert marker.startswith("created by 1.0.0")
    assert starts[1::2] == ["1.0.0", "1.1.0"]
