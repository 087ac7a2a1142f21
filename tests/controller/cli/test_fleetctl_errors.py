"""Bad input to fleetctl: one or two plain lines naming what is wrong, the README's exit code.

Every case points fleetctl at a loopback port where nothing listens, so input that were
not checked before connecting would end in exit 5 ("cannot reach NATS"), not in the
expected code and message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.broker import reserve_loopback_port
from tests.support.terminal import Ran, run_piped, run_piped_with

# The README's exit codes.
INVALID = 2
NO_NATS = 5

SECRET = "s3cret-Pa55-9d1e"
"""Put in variables and URLs; it must never be printed."""
NEVER = ("Traceback", "pydantic", "errors.pydantic.dev", "validation error", SECRET)


@dataclass
class Case:
    name: str
    args: tuple[str, ...]
    names: str
    """The flag, argument or variable the message must name."""
    env: dict[str, str] = field(default_factory=dict)


CREDENTIALS_WITHOUT_USER = json.dumps({"127.0.0.1:5000": {"password": SECRET}})
SPEC = "{spec}"
"""Replaced by a spec file whose image is a number."""
CASES = [
    Case("empty image", ("rollout", "start", "web", "--image", ""), "--image"),
    Case("image with a space", ("rollout", "start", "web", "--image", "a b"), "--image"),
    Case(
        "budget word",
        ("rollout", "start", "web", "--image", "x", "--max-unavailable", "lots"),
        "--max-unavailable",
    ),
    Case(
        "ratio above one",
        ("rollout", "start", "web", "--image", "x", "--max-failure-ratio", "5"),
        "--max-failure-ratio",
    ),
    Case(
        "ratio not a number",
        ("rollout", "start", "web", "--image", "x", "--max-failure-ratio", "many"),
        "--max-failure-ratio",
    ),
    Case(
        "unknown strategy",
        ("rollout", "start", "web", "--image", "x", "--strategy", "yolo"),
        "--strategy",
    ),
    Case(
        "canary word",
        ("rollout", "start", "web", "--image", "x", "--strategy", "canary", "--canary", "some"),
        "--canary",
    ),
    Case(
        "check unparsable",
        ("rollout", "start", "web", "--image", "x", "--check", "fast"),
        "--check",
    ),
    Case("spec field wrong", ("rollout", "start", "web", "--spec", SPEC), "image"),
    Case(
        "undo budget word",
        ("rollout", "undo", "web", "--max-unavailable", "lots"),
        "--max-unavailable",
    ),
    Case("output format", ("hosts", "-o", "yaml"), "--output"),
    Case("selector", ("hosts", "--selector", "role"), "--selector"),
    Case("since", ("events", "--since", "yesterday"), "--since"),
    Case("missing argument", ("rollout", "start"), "service"),
    Case("unknown option", ("hosts", "--colour"), "--colour"),
    Case("nats url port", ("hosts", "--nats", "nats://127.0.0.1:port"), "--nats"),
    Case("controller tick", ("controller", "run", "--tick", "-1"), "--tick"),
    Case("controller log level", ("controller", "run", "--log-level", "LOUD"), "--log-level"),
    Case("streams not json", ("hosts",), "FLEET_STREAMS", {"FLEET_STREAMS": "{bad"}),
    Case(
        "interval not a number",
        ("hosts",),
        "FLEET_NATS_PING_INTERVAL",
        {"FLEET_NATS_PING_INTERVAL": "often"},
    ),
    Case(
        "controller interval",
        ("controller", "run"),
        "FLEET_LEASE_TTL",
        {"FLEET_LEASE_TTL": "long"},
    ),
    Case(
        "credentials without user",
        ("hosts",),
        "FLEET_REGISTRY_CREDENTIALS",
        {"FLEET_REGISTRY_CREDENTIALS": CREDENTIALS_WITHOUT_USER},
    ),
    Case(
        "credentials cut short",
        ("hosts",),
        "FLEET_REGISTRY_CREDENTIALS",
        {"FLEET_REGISTRY_CREDENTIALS": CREDENTIALS_WITHOUT_USER[:-2]},
    ),
    Case("severity", ("hosts",), "FLEET_SCAN_SEVERITY", {"FLEET_SCAN_SEVERITY": SECRET}),
    Case(
        "bus url with password",
        ("hosts",),
        "FLEET_NATS_URLS",
        {"FLEET_NATS_URLS": f"nats://u:{SECRET}@127.0.0.1:port"},
    ),
    Case(
        "one bus url with password",
        ("hosts",),
        "FLEET_NATS_URL",
        {"FLEET_NATS_URL": f"nats://u:{SECRET}@:4222"},
    ),
]


@pytest.fixture(scope="module")
def bad_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "web.json"
    path.write_text(json.dumps({"name": "web", "image": 5}))
    return path


def assert_short_and_plain(ran: Ran, names: str) -> None:
    output = ran.stdout + ran.stderr
    assert 1 <= len(output.strip().splitlines()) <= 2, output
    assert names in ran.stderr, output
    for word in NEVER:
        assert word not in output, output


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_an_invalid_input_is_at_most_two_plain_lines_naming_it_with_exit_2(
    case: Case, bad_spec: Path
) -> None:
    dead = f"nats://127.0.0.1:{reserve_loopback_port()}"
    args = [str(bad_spec) if arg == SPEC else arg for arg in case.args]
    ran = run_piped_with(args, {"FLEET_NATS_URL": dead, **case.env})
    assert ran.code == INVALID, ran
    assert_short_and_plain(ran, case.names)


@pytest.mark.parametrize(
    "args",
    [
        ("hosts",),
        ("rollout", "status"),
        ("rollout", "start", "web", "--image", "127.0.0.1:5000/demo/web:1.0.0"),
        ("config", "list"),
        ("events",),
    ],
    ids=" ".join,
)
def test_unreachable_nats_is_one_line_and_exit_5(args: tuple[str, ...]) -> None:
    port = reserve_loopback_port()
    ran = run_piped(*args, "--nats", f"nats://user:{SECRET}@127.0.0.1:{port}")
    assert ran.code == NO_NATS, ran
    assert ran.error_lines == [
        f"fleetctl: cannot reach NATS at nats://127.0.0.1:{port}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port})"
    ]
    assert ran.stdout == ""
