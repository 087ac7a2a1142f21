"""Every container setting a Compose file can give reaches the real engine as the Engine
API documents it: the member of tests/controller/compose/files/every-key.yaml is created
(not started) and read back with inspect. Its bridge networks are the lab's to test (no
bridge networks on the shared engine): here it has none."""

from __future__ import annotations

import contextlib
from pathlib import Path

import docker
import pytest

from controller.compose.project import compose_app
from fleet_lab.stack import LocalStack
from node_agent.runtime import DockerRuntime
from node_agent.update.container_config import config_from_spec
from protocol.spec import ServiceSpec, VolumeMount
from tests.conftest import TEST_LABEL

pytestmark = pytest.mark.integration
FILES = Path(__file__).parents[2] / "controller" / "compose" / "files"
SECOND = 1_000_000_000
MIB = 1 << 20


@pytest.fixture
def web_member(tmp_path: Path, local_stack: LocalStack, test_id: str) -> ServiceSpec:
    environ = {"WEB_TAG": "1.0.0", "REGISTRY": local_stack.registry, "FROM_SHELL": "s"}
    app = compose_app(FILES / "every-key.yaml", f"t{test_id}", environ).app
    spec = app.member("web").spec
    volumes = (
        spec.container.volumes[0],
        VolumeMount(kind="bind", source=str(tmp_path), target="/static", read_only=True),
    )
    labels = {**spec.container.labels, TEST_LABEL: test_id}
    settings = spec.container.model_copy(
        update={"networks": (), "network_mode": "none", "volumes": volumes, "labels": labels}
    )
    return spec.model_copy(update={"container": settings})


async def test_every_compose_setting_reaches_the_engine_as_its_api_documents_it(
    web_member: ServiceSpec, local_stack: LocalStack, docker_client: docker.DockerClient,
    cleanup_containers: str, tmp_path: Path,
) -> None:  # fmt: skip
    runtime = DockerRuntime(local_stack.docker_host, 30)
    volume = web_member.container.volumes[0].source
    try:
        config, host_config = config_from_spec(web_member, web_member.image, "agent-t")
        found = await runtime.inspect_container(
            await runtime.create_container(web_member.name, config, host_config)
        )
    finally:
        runtime.close()
        for container in docker_client.containers.list(all=True, filters={"name": web_member.name}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(volume).remove(force=True)
    assert found is not None
    made, host = found["Config"], found["HostConfig"]
    assert (made["Cmd"], made["Entrypoint"]) == (["serve", "--port", "8080"], ["/bin/demo-web"])
    assert (made["User"], made["WorkingDir"], made["Hostname"], made["StopSignal"]) == (
        "1000:1000", "/app", "web-1", "SIGQUIT",
    )  # fmt: skip
    assert {
        "MODE=production",
        "DEBUG=false",
        "FROM_SHELL=s",
        "TIMEOUT=30",
        "FROM_FILE=web.env",
    } <= set(made["Env"])
    assert made["Labels"]["team"] == "payments"
    assert made["Healthcheck"] == {
        "Test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"],
        "Interval": 5 * SECOND, "Timeout": 2 * SECOND, "Retries": 3, "StartPeriod": 60 * SECOND,
    }  # fmt: skip
    assert host["NetworkMode"] == "none"
    assert (host["ReadonlyRootfs"], host["Init"]) == (True, True)
    assert host["Tmpfs"] == {"/cache": f"ro,size={64 * MIB},mode=1777", "/run": "size=16m"}
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 512, "Hard": 512},
    ]  # fmt: skip
    assert host["ExtraHosts"] == ["db.internal:10.0.0.5", "cache.internal:10.0.0.6"]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (256 * MIB, SECOND // 2, 100)
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_BIND_SERVICE"], ["ALL"])
    assert host["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert host["Mounts"] == [
        {"Type": "volume", "Source": volume, "Target": "/data"},
        {"Type": "bind", "Source": str(tmp_path), "Target": "/static", "ReadOnly": True},
    ]
