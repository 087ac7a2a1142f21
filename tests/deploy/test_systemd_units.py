"""The systemd units in deploy/systemd/ pass `systemd-analyze verify`, as installed: their
ExecStart pointed at this checkout's executables, where an install points them at its own
(verify refuses a unit whose program is missing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.settings import AgentSettings

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
NAMES = ("fleet-agent.service", "fleet-controller.service")
INSTALLED_BIN = "/opt/fleetwave/bin/"


def installed(directory: Path, name: str, text: str | None = None) -> Path:
    unit = text if text is not None else (UNITS / name).read_text()
    path = directory / name
    path.write_text(unit.replace(INSTALLED_BIN, f"{Path(sys.executable).parent}/"))
    return path


def verify(directory: Path, *units: Path) -> str:
    """What verify says about ``units`` (nothing: they are sound); its exit status too."""
    result = subprocess.run(
        ["systemd-analyze", "verify", *(f"./{u.name}" for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )
    return f"{result.returncode} {result.stdout}{result.stderr}".strip()


def test_the_agent_and_controller_units_pass_verify_without_a_word(tmp_path: Path) -> None:
    units = [installed(tmp_path, name) for name in NAMES]
    assert verify(tmp_path, *units) == "0"


def test_verify_names_a_mistake_in_a_unit(tmp_path: Path) -> None:
    # The check above can fail: the same verify on a unit with one wrong value.
    text = (UNITS / "fleet-agent.service").read_text().replace("Restart=always", "Restart=often")
    said = verify(tmp_path, installed(tmp_path, "fleet-agent.service", text))
    assert "restart specifier" in said


def test_the_agent_unit_keeps_its_state_where_the_agent_looks_for_it() -> None:
    unit = (UNITS / "fleet-agent.service").read_text()
    assert "StateDirectory=fleetwave/agent\n" in unit
    assert AgentSettings.model_fields["state_dir"].default == Path("/var/lib/fleetwave/agent")
    assert f"ExecStart={INSTALLED_BIN}fleet-agent run --config /etc/fleetwave/agent.toml" in unit
