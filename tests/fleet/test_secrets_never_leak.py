"""Registry passwords and private keys never appear in anything the fleet writes or says.

A fleet pulls from the password-protected registry (one host with a wrong password, so
the failure paths speak too), the controller pins and scans with its own login, bad
settings are given on purpose; then every captured stream is searched: process logs,
fleetctl's output, every message of every stream and bucket on the bus, the agents'
state directories and the text of the errors themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import nats.js.errors
import pytest
from pydantic import ValidationError

from fleet_lab.agent_client import wait_until_serving
from fleet_registry.credentials import RegistryCredential
from node_agent.settings import AgentSettings
from protocol.errors import summarise_invalid
from protocol.signing import CommandSigner
from tests.conftest import FleetFactory, LocalFleet
from tests.support.fleet import fleetctl_executable
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.integration

ROOT = REPO_ROOT
WRONG_PASSWORD = "wrong-Pa55-7f3c9e1d"


def credentials(registry: str, user: str, password: str) -> str:
    return json.dumps({registry: {"username": user, "password": password}})


def secrets_of(fleet: LocalFleet) -> dict[str, str]:
    user, password = fleet.stack.auth_user, fleet.stack.auth_password
    return {
        "registry password": password,
        "wrong registry password": WRONG_PASSWORD,
        "basic auth header": base64.b64encode(f"{user}:{password}".encode()).decode(),
        "wrong basic auth header": base64.b64encode(f"{user}:{WRONG_PASSWORD}".encode()).decode(),
        "signing key": fleet.signing_key_file.read_text().strip(),
    }


def run_agent_with(credentials_json: str) -> subprocess.CompletedProcess[str]:
    """`fleet-agent run` with these FLEET_REGISTRY_CREDENTIALS (it exits on bad ones)."""
    return subprocess.run(
        [
            str(Path(fleetctl_executable()).parent / "fleet-agent"),
            "run",
            "--nats=nats://127.0.0.1:1",
        ],
        env={"FLEET_REGISTRY_CREDENTIALS": credentials_json, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def agent_state_files(tmp_path: Path) -> dict[str, str]:
    """Every file in the agents' state directories (journal, outcomes, config, seen)."""
    return {
        f"agent state {path.relative_to(tmp_path)}": path.read_text(errors="replace")
        for path in tmp_path.rglob("*")
        if path.is_file() and "process-agent" in str(path)
    }


async def bus_contents(fleet: LocalFleet) -> list[bytes]:
    """Every stored message of every stream on the bus (events, logs, metrics, KV)."""
    client = fleet.agents[0].api.client
    js = client.jetstream(timeout=10)
    found: list[bytes] = []
    for stream in await js.streams_info():
        name = stream.config.name
        assert name is not None
        if stream.state.messages == 0:
            continue
        for sequence in range(stream.state.first_seq, stream.state.last_seq + 1):
            try:
                message = await js.get_msg(name, sequence)
            except nats.js.errors.NotFoundError:
                continue  # deleted or superseded
            assert message.subject is not None
            found.append(message.subject.encode() + b" " + (message.data or b""))
    return found


async def test_no_registry_password_or_private_key_appears_in_any_output(
    fleet_factory: FleetFactory, tmp_path: Path
) -> None:
    fleet = await fleet_factory(2)
    secrets = secrets_of(fleet)
    registry, user = fleet.stack.auth_registry, fleet.stack.auth_user
    # Restart both agents with real logins: one right, one wrong.
    logins = (fleet.stack.auth_password, WRONG_PASSWORD)
    for agent, password in zip(fleet.agents, logins, strict=True):
        await agent.process.stop()
        await agent.process.start(FLEET_REGISTRY_CREDENTIALS=credentials(registry, user, password))
        await wait_until_serving(agent.api, deadline_s=60)
    scanner = [sys.executable, str(ROOT / "tests/support/fake_trivy.py"), "image", "{image}"]
    controller_env = {
        "FLEET_REGISTRY_CREDENTIALS": credentials(registry, user, fleet.stack.auth_password),
        "FLEET_SCAN_COMMAND": json.dumps(scanner),
        "FAKE_TRIVY_REPORT": str(ROOT / "tests/fixtures/trivy/low_only.json"),
    }
    said: list[str] = []

    async def run(*args: str, env: dict[str, str] | None = None) -> None:
        result = await fleet.fleetctl(*args, env=controller_env | (env or {}))
        said.extend([result.stdout, result.stderr])

    image = fleet.stack.demo_image("1.1.0", registry=registry)
    await run("rollout", "start", "web", "--image", image, "--min-ready", "1", "-w")
    await run("rollout", "status", "web", "-o", "json")
    await run("rollout", "history", "web", "-o", "json")
    await run("rollout", "history", "web")
    await run("events", "--since", "1h", "-o", "json")
    await run("hosts", "-o", "json")
    await run("logs", "web", "--since", "1h")
    # Bad settings on purpose: pydantic would quote the entry, password and all.
    broken = json.dumps({registry: {"password": fleet.stack.auth_password}})
    await run(
        "rollout", "start", "web", "--image", image, env={"FLEET_REGISTRY_CREDENTIALS": broken}
    )
    agent_run = await asyncio.to_thread(run_agent_with, broken)
    assert agent_run.returncode == 2, agent_run
    assert "registry_credentials" in agent_run.stderr
    said.extend([agent_run.stdout, agent_run.stderr])

    # The error objects themselves, as a traceback would show them.
    with pytest.raises(ValidationError) as invalid:
        AgentSettings(registry_credentials=json.loads(broken))
    credential = RegistryCredential(username=user, password=fleet.stack.auth_password)
    signer = CommandSigner(secrets["signing key"])
    settings = AgentSettings(registry_credentials={registry: credential})
    said.extend([repr(credential), str(credential), repr(signer), repr(settings), str(settings)])
    said.append(summarise_invalid(invalid.value))

    texts = {f"fleetctl/agent output #{i}": text for i, text in enumerate(said)}
    texts["controller log"] = fleet.controller.log_text()
    for index, agent in enumerate(fleet.agents):
        texts[f"agent {index} log"] = agent.process.log_text()
    texts |= await asyncio.to_thread(agent_state_files, tmp_path)
    stored = await bus_contents(fleet)
    texts |= {f"bus message {i}": raw.decode(errors="replace") for i, raw in enumerate(stored)}

    # The searches can fail: the wrong password did reach a host, whose pull was refused.
    assert any("registry_auth" in text for text in texts.values())
    assert len(stored) > 20
    for what, secret in secrets.items():
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"the {what} appears in: {leaks[:5]}"
