"""What Fleetwave does not do is refused, never silently ignored: the message names the
key and the service. Schema violations name the path of the bad value. Nothing echoes a
value that may be a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.compose.keys import SERVICE
from controller.compose.project import compose_app
from controller.errors import ComposeError

ONE_SERVICE = "services:\n  web:\n    image: r/web:1\n    network_mode: host\n"


def refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    with pytest.raises(ComposeError) as raised:
        compose_app(path, "app", environ or {})
    message = raised.value.message
    assert "\n" not in message, message  # one short line
    assert len(message) < 300, message
    return message


# Keys of the Compose Specification's service definition that Fleetwave does not take
# (written out from the specification's list, not from the code's table).
UNSUPPORTED_SERVICE_KEYS = {
    "annotations": "{}", "attach": "true", "blkio_config": "{}", "cgroup": "host",
    "cgroup_parent": "x", "container_name": "x", "cpu_shares": "2", "cpuset": "0",
    "device_cgroup_rules": "[]", "devices": "[]", "dns": "1.1.1.1", "dns_search": "x",
    "domainname": "x", "expose": "['80']", "external_links": "[]", "group_add": "[]",
    "ipc": "host", "isolation": "x", "links": "[]", "mac_address": "x",
    "mem_reservation": "1m", "mem_swappiness": "1", "memswap_limit": "1m",
    "oom_kill_disable": "true", "oom_score_adj": "1", "pid": "host", "pids_limit": "1",
    "platform": "linux/amd64", "privileged": "true", "profiles": "[x]",
    "pull_policy": "always", "runtime": "x", "scale": "1", "security_opt": "[]",
    "shm_size": "1m", "stdin_open": "true", "storage_opt": "{}", "tty": "true",
    "userns_mode": "host", "uts": "host", "volumes_from": "[]", "secrets": "[]",
    "configs": "[]", "extends": "{service: x}", "post_start": "[]", "develop": "{}",
    "cpu_count": "1", "cpu_percent": "1", "cpu_period": "1", "cpu_quota": "1",
    "cpu_rt_period": "1", "cpu_rt_runtime": "1", "credential_spec": "{}", "dns_opt": "[]",
    "gpus": "all", "label_file": "x", "models": "[]", "pre_stop": "[]", "provider": "{}",
    "pull_refresh_after": "1h", "use_api_socket": "true",
}  # fmt: skip


@pytest.mark.parametrize(("key", "value"), sorted(UNSUPPORTED_SERVICE_KEYS.items()))
def test_an_unsupported_service_key_is_refused_by_name(
    tmp_path: Path, key: str, value: str
) -> None:
    assert key not in SERVICE
    message = refusal(tmp_path, f"{ONE_SERVICE}    {key}: {value}\n")
    assert message.startswith(f"services.web.{key}: "), message


def test_build_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    message = refusal(tmp_path, f"{ONE_SERVICE}    build: .\n")
    assert message.startswith("services.web.build: Fleetwave deploys images"), message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (
            "    healthcheck: {test: [CMD, x], disable_it: true}\n",
            "services.web.healthcheck.disable_it",
        ),
        ("    deploy: {replicas: 2}\n", "services.web.deploy.replicas"),
        (
            "    deploy: {resources: {reservations: {memory: 1m}}}\n",
            "services.web.deploy.resources.reservations",
        ),
        ("    logging: {driver: local, opts: {}}\n", "services.web.logging.opts"),
        ("    ports: [{target: 80, host_ip: 127.0.0.1}]\n", "services.web.ports[0].host_ip"),
        (
            "    volumes: [{type: volume, source: d, target: /d, volume: {nocopy: true}}]\n",
            "services.web.volumes[0].volume",
        ),
    ],
)
def test_an_unsupported_key_deeper_down_is_refused_with_its_path(
    tmp_path: Path, text: str, path: str
) -> None:
    assert refusal(tmp_path, ONE_SERVICE + text).startswith(f"{path}: ")


@pytest.mark.parametrize("key", ["secrets", "configs", "include", "models"])
def test_an_unsupported_top_level_key_is_refused(tmp_path: Path, key: str) -> None:
    value = "[]" if key == "include" else "{}"
    assert refusal(tmp_path, f"{ONE_SERVICE}{key}: {value}\n").startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("    restart_policy: always\n", "services.web.restart_policy"),  # no Compose key
        (
            "    depends_on: {db: {condition: service_bogus}}\n",
            "services.web.depends_on.db.condition",
        ),
        ("    ports: [{target: 80, published: [1]}]\n", "services.web.ports.0.published"),
        ("    cap_add: NET_ADMIN\n", "services.web.cap_add"),
        ("    healthcheck: {retries: many, test: [CMD, x]}\n", "services.web.healthcheck.retries"),
    ],
)
def test_a_schema_violation_names_the_path_of_the_bad_value(
    tmp_path: Path, text: str, path: str
) -> None:
    assert refusal(tmp_path, ONE_SERVICE + text).startswith(f"{path}: ")


def test_a_schema_violation_in_the_environment_does_not_quote_the_value(tmp_path: Path) -> None:
    message = refusal(tmp_path, ONE_SERVICE + "    environment: {PASSWORD: {s3cr3t: 1}}\n")
    assert message.startswith("services.web.environment")
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("    volumes: [/data]\n", "services.web.volumes[0]: an anonymous volume"),
        (
            "    volumes: [./data:/data]\n",
            "services.web.volumes[0]: bind path './data' is relative",
        ),
        (
            "    volumes: [~/data:/data]\n",
            "services.web.volumes[0]: bind path '~/data' is relative",
        ),
        (
            "    volumes: [undeclared:/data]\n",
            "services.web.volumes[0]: volume 'undeclared' is not declared",
        ),
        ("    ports: ['8000-8010:80']\n", "services.web.ports[0]: '8000-8010' is not a port"),
        (
            "    ports: ['127.0.0.1:80:80']\n",
            "services.web.ports[0]: '127.0.0.1:80:80': a host address",
        ),
        ("    restart: sometimes\n", "services.web.restart: 'sometimes'"),
        (
            "    stop_grace_period: soon\n",
            "services.web.stop_grace_period: 'soon' is not a duration",
        ),
        (
            "    mem_limit: 1m\n    deploy: {resources: {limits: {memory: 2m}}}\n",
            "services.web: mem_limit and deploy.resources.limits.memory differ",
        ),
        ("    depends_on: [db]\n", "services.web.depends_on: 'db' is not a service of this file"),
    ],
)
def test_settings_fleetwave_cannot_honour_are_refused_with_the_reason(
    tmp_path: Path, text: str, start: str
) -> None:
    message = refusal(tmp_path, ONE_SERVICE + text)
    assert message.startswith(start), message


BRIDGED = "services:\n  web:\n    image: r/web:1\n"
"""A member on the app's own network, where ports may be published."""


@pytest.mark.parametrize(
    ("text", "start"),
    [
        # Modes the short syntax has and Fleetwave does not honour: refused, not dropped.
        ("    volumes: ['/srv:/data:z']\n", "services.web.volumes[0]: mount option 'z'"),
        ("    volumes: ['/srv:/data:Z']\n", "services.web.volumes[0]: mount option 'Z'"),
        ("    volumes: ['/srv:/data:ro,nocopy']\n", "services.web.volumes[0]: mount option 'noc"),
        ("    volumes: ['/srv:/data:ro,rw']\n", "services.web.volumes[0]: ro and rw"),
        (
            "    volumes: [{type: bind, source: /srv, target: /data, tmpfs: {size: 1m}}]\n",
            "services.web.volumes[0].tmpfs: only for a mount of type tmpfs",
        ),
        (
            "    volumes: [{type: tmpfs, source: x, target: /data}]\n",
            "services.web.volumes[0].source: not supported for a tmpfs mount",
        ),
        (
            "    volumes: ['/srv:/data', '/opt:/data']\n",
            "services.web.volumes[1]: '/data' is mounted twice",
        ),
        (
            "    volumes: ['/srv:/data', {type: tmpfs, target: /data}]\n",
            "services.web.volumes[1]: '/data' is mounted twice",
        ),
        (
            "    volumes: ['/srv:/data']\n    tmpfs: [/data]\n",
            "services.web.tmpfs: '/data' is mounted twice",
        ),
        ("    tmpfs: [/run, '/run:size=1m']\n", "services.web.tmpfs: '/run' is mounted twice"),
        ("    ports: ['8080:80']\n", "services.web.ports: not with network_mode host"),
    ],
)
def test_a_mount_or_port_the_engine_would_drop_or_merge_is_refused(
    tmp_path: Path, text: str, start: str
) -> None:
    message = refusal(tmp_path, ONE_SERVICE + text)
    assert message.startswith(start), message


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("    ports: ['8080:80', '8080:81']\n", "services.web.ports[1]: host port 8080/tcp"),
        ("    ports: ['8080:80', {target: 81, published: 8080}]\n", "services.web.ports[1]: host"),
        ("    network_mode: none\n    ports: ['80']\n", "services.web.ports: not with network_m"),
    ],
)
def test_a_port_published_twice_or_without_a_network_is_refused(
    tmp_path: Path, text: str, start: str
) -> None:
    message = refusal(tmp_path, BRIDGED + text)
    assert message.startswith(start), message


def test_one_container_port_may_be_published_on_several_host_ports(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(BRIDGED + "    ports: ['80:80', '8080:80', '80']\n")
    (web,) = compose_app(path, "app", {}).app.members
    assert [(p.container_port, p.host_port) for p in web.spec.container.ports] == [
        (80, 80),
        (80, 8080),
        (80, None),
    ]


def test_one_port_for_tcp_and_udp_is_two_mappings(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(BRIDGED + "    ports: ['53:53/tcp', '53:53/udp']\n")
    (web,) = compose_app(path, "app", {}).app.members
    assert [(p.container_port, p.host_port, p.protocol) for p in web.spec.container.ports] == [
        (53, 53, "tcp"),
        (53, 53, "udp"),
    ]


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("services:\n  web:\n    network_mode: host\n", "services.web: needs an image"),
        ("services: {}\n", "compose.yaml: no services"),
        (
            "services:\n  a: {image: r/a:1, network_mode: bridge}\n",
            "services.a.network_mode: 'bridge': host or none",
        ),
        (
            "services:\n  a: {image: r/a:1, network_mode: host, networks: [n]}\n"
            "networks: {n: {}}\n",
            "services.a: network_mode and networks",
        ),
        (
            "services:\n  a: {image: r/a:1, networks: [n]}\n",
            "services.a.networks: 'n' is not declared",
        ),
        (
            "services:\n  a: {image: r/a:1, network_mode: host, depends_on: [b]}\n"
            "  b: {image: r/b:1, network_mode: host, depends_on: [a]}\n",
            "services: members depend on each other in a cycle: a, b",
        ),
        (
            "services:\n  a: {image: r/a:1}\n  a: {image: r/b:1}\n",
            "compose.yaml: not valid YAML (line",
        ),
        ("services:\n  a: {image: 'NOT A REFERENCE'}\n", "services.a: image:"),
        (
            "services:\n  a: {image: '${TAG:?the tag}'}\n",
            "services.a.image: required variable TAG is missing a value: the tag",
        ),
        ("- a list\n", "compose.yaml: a Compose file is a mapping"),
    ],
)
def test_a_file_that_is_no_app_is_refused_with_the_reason(
    tmp_path: Path, text: str, start: str
) -> None:
    message = refusal(tmp_path, text)
    assert start in message, message
    assert message.index(start) in (0, len(str(tmp_path)) + 1), message  # or after the dir


SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize(
    "text",
    [
        # a key given twice: the YAML library's own text quotes both values
        f"services:\n  web:\n    image: r/web:1\n    environment:\n"
        f"      PASSWORD: {SECRET}\n      PASSWORD: other\n",
        # services as a list: the schema's own text quotes the whole value
        f"services:\n  - image: r/web:1\n    environment: {{PASSWORD: {SECRET}}}\n",
        # an unclosed variable in a value
        f"services:\n  web:\n    image: r/web:1\n    environment: {{P: 'ab${{{SECRET}'}}\n",
        # a list entry without a name
        f"services:\n  web:\n    image: r/web:1\n    network_mode: host\n"
        f"    environment: ['={SECRET}']\n",
    ],
)
def test_no_refusal_quotes_a_value_that_may_be_a_secret(tmp_path: Path, text: str) -> None:
    message = refusal(tmp_path, text)
    assert SECRET not in message, message


def test_an_empty_healthcheck_test_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, ONE_SERVICE + "    healthcheck: {test: []}\n")
    assert message.startswith("services.web.healthcheck"), message
