from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protocol import SCHEMA_VERSION

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("program", ["fleetctl", "fleet-agent"])
def test_each_console_script_runs_and_reports_its_version(program: str) -> None:
    result = subprocess.run(
        [str(BIN / program), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{program} ")
    assert f"protocol schema {SCHEMA_VERSION}" in result.stdout


@pytest.mark.parametrize("program", ["fleetctl", "fleet-agent"])
def test_each_console_script_prints_usage_for_help(program: str) -> None:
    result = subprocess.run(
        [str(BIN / program), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: {program}" in result.stdout
