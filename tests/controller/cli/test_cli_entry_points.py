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


@pytest.mark.parametrize(
    "module", ["controller.cli.app", "node_agent.cli"], ids=["fleetctl", "fleet-agent"]
)
def test_a_command_does_not_import_the_compose_schema_it_does_not_use(module: str) -> None:
    # The Compose schema's validator (jsonschema with its format checks) takes about a
    # second to import: only `apply --app` and `diff --app` may pay it.
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'jsonschema'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
