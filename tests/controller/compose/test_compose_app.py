"""A Compose file as an app: every supported key lands in the member's settings as the
Compose documentation defines it (the expected values are written from the docs, key by
key), what Fleetwave does not do is refused naming the key and the service, and schema
violations name the path of the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.compose.project import compose_app
from controller.errors import ComposeError
from protocol.app import AppSpec, Condition, Dependency, NamedNetwork, NamedVolume
from protocol.spec import (
    ContainerHealthcheck,
    ContainerSettings,
    DockerHealthProbe,
    HealthCheck,
    HttpProbe,
    LogSettings,
    NetworkAttachment,
    PortMapping,
    Resources,
    RestartPolicy,
    Ulimit,
    VolumeMount,
)

FILES = Path(__file__).parent / "files"
ENVIRON = {"WEB_TAG": "1.2.3", "FROM_SHELL": "shell-value"}
MIB = 1 << 20


def test_every_supported_key_becomes_the_members_settings() -> None:
    found = compose_app(FILES / "every-key.yaml", "shop", ENVIRON)
    app = found.app
    assert [m.name for m in app.members] == ["web", "cache", "migrate"]
    web = app.member("web")
    assert web.spec.name == "shop-web"
    assert web.spec.image == "127.0.0.1:5000/demo/web:1.2.3"
    assert web.spec.stop_grace_period == 90.0
    # README: the engine's own verdict, given the time it takes to give one: start
    # period 60 s, then 3 retries + 1 tries of interval 5 s and timeout 2 s, and 10 s.
    assert web.spec.health == HealthCheck(probe=DockerHealthProbe(), healthy_deadline=98.0)
    assert web.depends_on == (
        Dependency(member="cache", condition=Condition.HEALTHY, restart=True),
        Dependency(member="migrate", condition=Condition.COMPLETED),
    )
    assert web.spec.container == ContainerSettings(
        # env_file first, environment over it; a bare name takes the shell's value
        env={
            "FROM_FILE": "web.env",
            "MODE": "production",
            "DEBUG": "false",
            "FROM_SHELL": "shell-value",
            "TIMEOUT": "30",
        },
        volumes=(
            VolumeMount(kind="volume", source="shop_data", target="/data"),
            VolumeMount(kind="bind", source="/srv/shop/static", target="/static", read_only=True),
        ),
        tmpfs={"/cache": f"ro,size={64 * MIB},mode=1777", "/run": "size=16m"},
        ports=(
            PortMapping(container_port=8080),
            PortMapping(container_port=9091, host_port=9090, protocol="udp"),
            PortMapping(container_port=8443, host_port=443),
        ),
        restart_policy=RestartPolicy(name="unless-stopped"),  # from the x-common anchor
        resources=Resources(memory_bytes=256 * MIB, cpus=0.5, pids_limit=100),
        user="1000:1000",
        entrypoint=("/bin/demo-web",),
        command=("serve", "--port", "8080"),
        labels={"team": "payments"},
        networks=(
            # the service's own name first: as with Compose, members find it by it
            NetworkAttachment(name="shop_front", aliases=("web", "shop-web")),
            NetworkAttachment(name="shop_default", aliases=("web",)),
        ),
        cap_add=("NET_BIND_SERVICE",),
        cap_drop=("ALL",),
        working_dir="/app",
        hostname="web-1",
        stop_signal="SIGQUIT",
        read_only=True,
        init=True,
        healthcheck=ContainerHealthcheck(
            test=("CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"),
            interval=5.0,
            timeout=2.0,
            retries=3,
            start_period=60.0,
        ),
        ulimits=(
            Ulimit(name="nofile", soft=1024, hard=2048),
            Ulimit(name="nproc", soft=512, hard=512),
        ),
        extra_hosts=("db.internal:10.0.0.5", "cache.internal:10.0.0.6"),
        sysctls={"net.core.somaxconn": "1024"},
        logging=LogSettings(driver="json-file", options={"max-size": "10m", "max-file": "3"}),
    )


def test_the_other_forms_of_a_key_mean_the_same() -> None:
    app = compose_app(FILES / "every-key.yaml", "shop", ENVIRON).app
    cache, migrate = app.member("cache").spec, app.member("migrate").spec
    assert cache.container.network_mode == "none"
    assert cache.container.networks == ()
    assert cache.container.healthcheck == ContainerHealthcheck(
        test=("CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/health")
    )
    assert cache.container.restart_policy == RestartPolicy(name="on-failure", max_retries=5)
    assert (cache.container.labels, cache.container.sysctls) == (
        {"tier": "cache"},
        {"kernel.shmmax": "1000"},
    )
    assert cache.container.extra_hosts == ("gateway:10.0.0.1",)
    assert migrate.container.command == ("sh", "-c", "echo migrated")
    assert migrate.container.restart_policy == RestartPolicy(name="no")
    assert migrate.container.healthcheck == ContainerHealthcheck(test=("NONE",))
    assert migrate.health is None


def test_the_apps_volumes_and_networks_are_named_for_the_engine() -> None:
    app = compose_app(FILES / "every-key.yaml", "shop", ENVIRON).app
    assert app.volumes == (  # the external one under its own name, to be checked, not made
        NamedVolume(name="shop_data"),
        NamedVolume(name="shop-shared", external=True),
    )
    assert app.networks == (
        NamedNetwork(name="shop_front", driver="bridge", labels={"team": "payments"}),
        NamedNetwork(name="shop_default"),
    )


def test_the_compose_files_of_well_known_projects_are_accepted() -> None:
    public = FILES / "public"
    wordpress = compose_app(public / "wordpress.yaml", "blog", {}).app
    assert [m.name for m in wordpress.members] == ["db", "wordpress"]
    db = wordpress.member("db").spec.container
    assert db.command == ("--default-authentication-plugin=mysql_native_password",)
    assert db.volumes == (VolumeMount(source="blog_db_data", target="/var/lib/mysql"),)
    assert db.env["MYSQL_DATABASE"] == "wordpress"
    assert wordpress.member("wordpress").spec.container.ports == (
        PortMapping(container_port=80, host_port=80),
    )

    gitea = compose_app(public / "gitea.yaml", "git", {}).app
    server = gitea.member("server")
    assert server.depends_on == (Dependency(member="db"),)
    assert server.spec.container.networks == (
        NetworkAttachment(name="git_gitea", aliases=("server",)),
    )
    assert gitea.networks == (NamedNetwork(name="git_gitea"),)
    assert server.spec.container.volumes[1] == VolumeMount(
        kind="bind", source="/etc/timezone", target="/etc/timezone", read_only=True
    )

    traefik = compose_app(public / "traefik.yaml", "edge", {}).app
    proxy, whoami = traefik.members
    assert proxy.spec.container.command == ("--api.insecure=true", "--providers.docker")
    assert whoami.spec.container.labels == {
        "traefik.http.routers.whoami.rule": "Host(`whoami.docker.localhost`)"
    }
    # Neither says how it is networked: both join the app's default network, as in Compose.
    assert traefik.networks == (NamedNetwork(name="edge_default"),)


def compose_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> AppSpec:
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    return compose_app(path, "app", environ or {}).app


def test_what_compose_defaults_to_is_what_the_member_gets(tmp_path: Path) -> None:
    # The app's name is the one given, over the file's (as Compose's -p over name:).
    app = compose_text(tmp_path, "name: other\nservices:\n  job: {image: r/job:1}\n")
    assert app.name == "app"
    job = app.member("job").spec.container
    # Compose: restart defaults to no; the service joins the project's default network
    # under its own name.
    assert job.restart_policy == RestartPolicy(name="no")
    assert job.networks == (NetworkAttachment(name="app_default", aliases=("job",)),)


def test_text_booleans_and_the_short_tmpfs_form_mean_what_they_say(tmp_path: Path) -> None:
    text = (
        "services:\n  a:\n    image: r/a:1\n    network_mode: host\n"
        "    read_only: 'false'\n    init: 'true'\n    tmpfs: /run\n"
        "    healthcheck: {disable: 'false', test: [CMD, 'true']}\n"
        "    volumes: [{type: volume, source: v, target: /v, read_only: 'false'},"
        " {type: tmpfs, target: /t, read_only: 'false'}]\n"
        "volumes:\n  v: {external: 'false'}\n"
    )
    settings = compose_text(tmp_path, text).member("a").spec.container
    assert (settings.read_only, settings.init) == (False, True)
    assert settings.tmpfs == {"/t": "", "/run": ""}
    assert settings.healthcheck is not None
    assert settings.healthcheck.test == ("CMD", "true")
    assert settings.volumes == (VolumeMount(source="app_v", target="/v"),)


def test_a_healthcheck_of_none_leaves_the_member_without_a_probe(tmp_path: Path) -> None:
    text = "services:\n  a: {image: r/a:1, network_mode: host, healthcheck: {test: [NONE]}}\n"
    member = compose_text(tmp_path, text).member("a")
    assert member.spec.container.healthcheck == ContainerHealthcheck(test=("NONE",))
    assert member.spec.health is None


def test_a_members_fleetwave_health_is_its_probe_over_the_healthcheck(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: r/web:1\n    network_mode: host\n"
        "    healthcheck: {test: [CMD, 'true']}\n"
        "    x-fleetwave:\n      health:\n"
        "        probe: {kind: http, port: 8080, path: /ready}\n"
        "        min_healthy_time: 7\n"
        "  cache: {image: r/cache:1, network_mode: host, healthcheck: {test: [CMD, 'true']}}\n"
    )
    app = compose_text(tmp_path, text)
    health = app.member("web").spec.health
    assert health is not None
    assert health.probe == HttpProbe(port=8080, path="/ready")
    assert health.min_healthy_time == 7
    # The engine's healthcheck is still the container's; the other member keeps it as
    # its probe.
    assert app.member("web").spec.container.healthcheck is not None
    cache = app.member("cache").spec.health
    assert cache is not None
    assert cache.probe == DockerHealthProbe()


@pytest.mark.parametrize(
    ("block", "start"),
    [
        ("{selector: {role: edge}}", "services.web.x-fleetwave.selector: not a member's"),
        ("{health: {probe: {kind: smoke}}}", "services.web.x-fleetwave.health: "),
        ("[health]", "services.web.x-fleetwave: a mapping"),
        ("{}", "services.web.x-fleetwave: give health"),
    ],
)
def test_a_members_fleetwave_block_takes_its_health_only(
    tmp_path: Path, block: str, start: str
) -> None:
    web = "services:\n  web:\n    image: r/web:1\n    network_mode: host\n"
    text = f"{web}    x-fleetwave: {block}\n"
    with pytest.raises(ComposeError) as raised:
        compose_text(tmp_path, text)
    assert raised.value.message.startswith(start), raised.value.message


def test_the_environment_wins_over_dot_env_and_missing_variables_are_reported(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("TAG=from-dotenv\nREG=r\n")
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  a: {image: '${REG}/a:${TAG}${NOPE}', network_mode: host}\n")
    found = compose_app(path, "app", {"TAG": "from-shell"})
    assert found.app.member("a").spec.image == "r/a:from-shell"
    assert found.missing == frozenset({"NOPE"})
