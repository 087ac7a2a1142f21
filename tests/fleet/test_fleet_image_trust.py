"""Image trust at `fleetctl rollout start`: allowlist, digest pinning, scan gate, policies.

The scanner is tests/support/fake_trivy.py (a FAKE, named so) printing real Trivy JSON
reports from tests/fixtures/trivy; the registry, the agents and the policies are real.
"""

from __future__ import annotations

import json
import sys

import docker
import pytest

from protocol import subjects
from protocol.models import RolloutEvent
from tests.conftest import FleetFactory, LocalFleet
from tests.support.events import EventRecorder
from tests.support.fleet import fleet_spec
from tests.support.paths import REPO_ROOT
from tests.support.registry_digest import registry_digest

pytestmark = pytest.mark.integration

ROOT = REPO_ROOT
FIXTURES = ROOT / "tests" / "fixtures" / "trivy"
FAKE_TRIVY = ROOT / "tests" / "support" / "fake_trivy.py"


def vetting_env(fleet: LocalFleet, report: str) -> dict[str, str]:
    """Every gate on: allowlist, pinning, the scanner with ``report``, shipped policies."""
    scanner = [sys.executable, str(FAKE_TRIVY), "image", "--format", "json"]
    scanner += ["--exit-code", "1", "--severity", "HIGH,CRITICAL", "{image}"]
    return {
        "FLEET_ALLOWED_REGISTRIES": json.dumps([fleet.stack.registry]),
        "FLEET_SCAN_COMMAND": json.dumps(scanner),
        "FLEET_POLICY_DIRS": json.dumps([str(ROOT / "deploy" / "policies")]),
        "FAKE_TRIVY_REPORT": str(FIXTURES / report),
        "FAKE_TRIVY_LOG": str(fleet.work_dir / "scanned.log"),
    }


async def history(fleet: LocalFleet) -> dict[str, object]:
    result = await fleet.fleetctl("rollout", "history", "web", "-o", "json")
    assert result.code == 0, result
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def test_a_vetted_rollout_pins_the_digest_every_host_runs_and_records_its_vetting(
    fleet_factory: FleetFactory, docker_client: docker.DockerClient
) -> None:
    fleet = await fleet_factory(2)
    image = fleet.stack.demo_image("1.1.0")
    digest = await registry_digest(image)
    rolled = await fleet.roll("1.1.0", "-w", env=vetting_env(fleet, "low_only.json"))
    assert rolled.code == 0, (rolled, fleet.controller.log_text())

    # Scanned and run exactly as pinned, on every host.
    assert (fleet.work_dir / "scanned.log").read_text() == f"{image}@{digest}\n"
    for agent in fleet.agents:
        labels = docker_client.containers.get(agent.container("web")).labels
        assert labels["io.fleetwave.image"] == f"{image}@{digest}"
        repo_digests = docker_client.images.get(f"{image}@{digest}").attrs["RepoDigests"]
        assert f"{fleet.stack.demo_image('1.1.0').rsplit(':', 1)[0]}@{digest}" in repo_digests
    parsed = await history(fleet)
    revisions = parsed["revisions"]
    assert isinstance(revisions, list)
    latest = revisions[-1]
    assert latest["spec"]["image"] == f"{image}@{digest}"
    rollouts = parsed["rollouts"]
    assert isinstance(rollouts, dict)
    vetting = rollouts[latest["rollout_id"]]["vetting"]
    assert vetting["requested"] == image
    assert vetting["digest"] == digest
    assert (vetting["scan"], vetting["scan_findings"]) == ("passed", 1)  # one LOW finding
    assert len(vetting["policies"]) == len(list((ROOT / "deploy" / "policies").glob("*.rego")))


async def test_the_scan_gate_stops_a_rollout_naming_each_cve_until_skip_scan_is_explicit(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(2)
    env = vetting_env(fleet, "critical.json")
    before = await history(fleet)
    async with EventRecorder(
        fleet.agents[0].api.client, subjects.controller_event_subject("rollout")
    ) as events:
        refused = await fleet.roll("1.1.0", env=env)
        assert refused.code == 3, refused
        assert "scan_findings" in refused.stderr
        assert "CVE-2023-38545 (CRITICAL, curl 8.2.1-r0, fixed in 8.4.0-r0)" in refused.stderr
        assert "CVE-2023-5363 (HIGH" in refused.stderr
        assert "CVE-2023-46218" not in refused.stderr  # MEDIUM: below the threshold
        event = await events.wait_for(
            lambda m: isinstance(m, RolloutEvent) and m.status == "refused"
        )
        assert isinstance(event, RolloutEvent)
        assert "CVE-2023-38545" in event.reason
    # Nothing was started: no revision, no rollout, every host still on 1.0.0.
    assert (await history(fleet))["revisions"] == before["revisions"]
    assert set((await fleet.versions()).values()) == {"1.0.0"}

    skipped = await fleet.roll("1.1.0", "--skip-scan", "-w", env=env)
    assert skipped.code == 0, (skipped, fleet.controller.log_text())
    parsed = await history(fleet)
    rollouts = parsed["rollouts"]
    assert isinstance(rollouts, dict)
    # The fixture's first deployment ran with no scanner configured ("off").
    assert [rollouts[r]["vetting"]["scan"] for r in sorted(rollouts)] == ["off", "skipped"]
    table = await fleet.fleetctl("rollout", "history", "web")
    assert "SCAN SKIPPED" in table.stdout


async def test_policies_and_the_allowlist_refuse_a_rollout_with_every_reason_listed(
    fleet_factory: FleetFactory,
) -> None:
    fleet = await fleet_factory(2)
    env = vetting_env(fleet, "low_only.json")
    spec = fleet_spec(fleet.stack.demo_image("1.1.0"))
    bad = spec.model_copy(
        update={
            "container": spec.container.model_copy(
                update={"user": "root", "privileged": True, "cap_add": ("SYS_ADMIN",)}
            )
        }
    )
    bad_file = fleet.work_dir / "web-root.json"
    bad_file.write_text(bad.model_dump_json())
    denied = await fleet.fleetctl("rollout", "start", "web", "--spec", str(bad_file), env=env)
    assert denied.code == 3, denied
    for message in (
        "policy_denied: web runs as root (user root)",
        "policy_denied: web is privileged",
        "policy_denied: web adds capability SYS_ADMIN",
    ):
        assert message in denied.stderr

    elsewhere = env | {"FLEET_ALLOWED_REGISTRIES": json.dumps([fleet.stack.auth_registry])}
    off_list = await fleet.roll("1.1.0", env=elsewhere)
    assert off_list.code == 3, off_list
    assert "registry_not_allowed" in off_list.stderr
    assert set((await fleet.versions()).values()) == {"1.0.0"}
