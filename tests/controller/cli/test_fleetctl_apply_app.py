"""`fleetctl apply --app` refuses what it cannot read before it talks to the bus: exit 2
(the README's code for invalid input) and one line naming the fault.

The bus URL points at a loopback port nothing listens on: a command that got past its
input would fail there instead (exit 5, "cannot reach NATS"), so these checks cannot
pass by a dead server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.broker import reserve_loopback_port
from tests.node_agent.apps.app_files import APP_FILE
from tests.support.terminal import Ran, run_piped

INVALID = 2
NO_NATS = 5


def fleetctl(*args: str) -> Ran:
    nowhere = f"nats://127.0.0.1:{reserve_loopback_port()}"
    return run_piped(*args, FLEET_NATS_URL=nowhere, REGISTRY="registry.local")


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "compose.yaml"
    path.write_text(APP_FILE)
    return path


def test_a_good_app_file_gets_as_far_as_the_bus(compose_file: Path) -> None:
    ran = fleetctl("apply", "-f", str(compose_file), "--app", "shop", "--selector", "role=edge")
    assert ran.code == NO_NATS, ran


def test_selector_without_app_is_refused(compose_file: Path) -> None:
    ran = fleetctl("apply", "-f", str(compose_file), "--selector", "role=edge")
    assert ran.code == INVALID, ran
    assert ran.stderr.strip() == (
        "fleetctl: --selector goes with --app (a service's file has its [selector])"
    )


def test_app_takes_one_compose_file(compose_file: Path) -> None:
    ran = fleetctl("diff", "-f", str(compose_file), "-f", str(compose_file), "--app", "shop")
    assert ran.code == INVALID, ran
    assert ran.stderr.strip() == "fleetctl: --app takes one Compose file (-f FILE)"


def test_a_key_the_x_fleetwave_block_does_not_take_is_named(compose_file: Path) -> None:
    compose_file.write_text(APP_FILE + "x-fleetwave:\n  strategy: canary\n")
    ran = fleetctl("apply", "-f", str(compose_file), "--app", "shop")
    assert ran.code == INVALID, ran
    assert ran.stderr.strip() == (
        f"fleetctl: {compose_file}: x-fleetwave.strategy: not a key of Fleetwave's "
        "(it takes selector, update, drift)"
    )


def test_a_bad_update_policy_names_its_field(compose_file: Path) -> None:
    compose_file.write_text(APP_FILE + "x-fleetwave:\n  update:\n    max_unavailable: -1\n")
    ran = fleetctl("apply", "-f", str(compose_file), "--app", "shop")
    assert ran.code == INVALID, ran
    assert ran.stderr.strip() == (
        f"fleetctl: {compose_file}: x-fleetwave: update[max_unavailable]: -1 is neither a "
        "count nor a percentage like 25%"
    )


def test_a_compose_file_fleetwave_refuses_names_the_key_and_the_service(
    compose_file: Path,
) -> None:
    compose_file.write_text(APP_FILE.replace("    network_mode: none\n", "    build: .\n", 1))
    ran = fleetctl("apply", "-f", str(compose_file), "--app", "shop")
    assert ran.code == INVALID, ran
    assert "services.migrate.build" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) <= 2, ran.stderr


def test_rollout_start_reads_an_apps_compose_file_before_the_bus(compose_file: Path) -> None:
    ran = fleetctl("rollout", "start", "shop", "--compose", str(compose_file))
    assert ran.code == NO_NATS, ran
    assert "warning" not in ran.stderr, ran.stderr


def test_rollout_start_says_it_takes_the_flags_policy_over_the_files(compose_file: Path) -> None:
    compose_file.write_text(APP_FILE + "x-fleetwave:\n  selector: {role: edge}\n")
    ran = fleetctl("rollout", "start", "shop", "--compose", str(compose_file))
    assert ran.code == NO_NATS, ran
    assert ran.stderr.splitlines()[0] == (
        f"fleetctl: warning: {compose_file}: its selector and update policy are for "
        "fleetctl apply; this rollout takes the flags'"
    ), ran.stderr


@pytest.mark.parametrize(
    ("declared", "warned"),
    [
        ('"selector": {"role": "edge"}', True),
        ('"update": {"max_unavailable": 2}', True),
        ('"drift": "report"', False),  # not a rollout's policy: nothing to warn of
    ],
)
def test_rollout_start_spec_warns_of_a_declarations_policy(
    tmp_path: Path, declared: str, warned: bool
) -> None:
    spec = tmp_path / "web.json"
    spec.write_text(f'{{"name": "web", "image": "registry.local/demo/web:1.0.0", {declared}}}')
    ran = fleetctl("rollout", "start", "web", "--spec", str(spec))
    assert ran.code == NO_NATS, ran
    warning = (
        f"fleetctl: warning: {spec}: its selector and update policy are for fleetctl "
        "apply; this rollout takes the flags'"
    )
    assert (warning in ran.stderr.splitlines()) is warned, ran.stderr


def test_rollout_start_takes_a_spec_or_a_compose_file_not_both(compose_file: Path) -> None:
    ran = fleetctl(
        "rollout", "start", "shop", "--compose", str(compose_file), "--spec", str(compose_file)
    )
    assert ran.code == INVALID, ran
    assert ran.stderr.strip() == (
        "fleetctl: give --spec (a service) or --compose (an app), not both"
    )


def test_rollout_start_names_what_the_compose_file_gets_wrong(compose_file: Path) -> None:
    compose_file.write_text(APP_FILE.replace("network_mode: none", "network_mode: bridge", 1))
    ran = fleetctl("rollout", "start", "shop", "--compose", str(compose_file))
    assert ran.code == INVALID, ran
    assert ran.stderr.strip().startswith(
        f"fleetctl: {compose_file}: services.migrate.network_mode: 'bridge': host or none"
    ), ran
