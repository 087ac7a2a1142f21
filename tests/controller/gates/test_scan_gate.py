"""The scan gate reads Trivy's JSON report and fails closed on anything else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from controller.gates.scan import (
    MAX_NAMED,
    Finding,
    ScanFailed,
    Scanner,
    ScanReport,
    blocking_reason,
    parse_trivy_report,
)
from tests.support.paths import FIXTURES as TEST_FIXTURES
from tests.support.paths import SUPPORT

FIXTURES = TEST_FIXTURES / "trivy"
FAKE_TRIVY = SUPPORT / "fake_trivy.py"
TRIVY_ARGS = ("image", "--format", "json", "--exit-code", "1", "--severity", "HIGH,CRITICAL")


def fake_trivy() -> Scanner:
    return Scanner((sys.executable, str(FAKE_TRIVY), *TRIVY_ARGS, "{image}"), timeout=30)


def test_a_trivy_report_yields_every_vulnerability_with_its_package_and_fix() -> None:
    findings = parse_trivy_report((FIXTURES / "critical.json").read_bytes())
    assert {(f.id, f.severity, f.package, f.fixed) for f in findings} == {
        ("CVE-2023-5363", "HIGH", "libcrypto3", "3.1.4-r0"),
        ("CVE-2023-38545", "CRITICAL", "curl", "8.4.0-r0"),
        ("CVE-2023-46218", "MEDIUM", "curl", "8.5.0-r0"),
    }


def test_only_findings_at_or_above_the_threshold_block_and_the_reason_names_them() -> None:
    report = ScanReport(parse_trivy_report((FIXTURES / "critical.json").read_bytes()), 1)
    assert {f.id for f in report.at_or_above("CRITICAL")} == {"CVE-2023-38545"}
    blocking = report.at_or_above("HIGH")
    reason = blocking_reason("web:1.1.0", blocking, "HIGH")
    assert "2 vulnerabilities at or above HIGH" in reason
    # Worst first, each with its package and fixed version.
    assert reason.index("CVE-2023-38545 (CRITICAL, curl 8.2.1-r0, fixed in 8.4.0-r0)") < (
        reason.index("CVE-2023-5363 (HIGH")
    )
    assert "CVE-2023-46218" not in reason


def test_a_long_list_of_findings_is_cut_and_counted() -> None:
    many = tuple(
        Finding(f"CVE-2024-{n:04}", "CRITICAL", "pkg", "1", "", "t") for n in range(MAX_NAMED + 5)
    )
    reason = blocking_reason("img", many, "HIGH")
    assert reason.count("CVE-2024-") == MAX_NAMED
    assert reason.endswith("and 5 more")


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a Trivy JSON report"),
        (json.dumps({"Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}).encode(), "ID"),
        (json.dumps({"Results": ["x"]}).encode(), "not an object"),
    ],
)
def test_a_report_that_is_not_trivy_json_is_a_scan_failure(report: bytes, message: str) -> None:
    with pytest.raises(ScanFailed, match=message):
        parse_trivy_report(report)


async def test_the_scanner_runs_with_the_image_in_place_and_its_exit_code_confirms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRIVY_REPORT", str(FIXTURES / "critical.json"))
    monkeypatch.setenv("FAKE_TRIVY_LOG", str(tmp_path / "scanned"))
    report = await fake_trivy().scan("127.0.0.1:5000/demo/web:1.1.0@sha256:" + "a" * 64)
    assert report.exit_code == 1
    assert len(report.findings) == 3
    assert (tmp_path / "scanned").read_text() == "127.0.0.1:5000/demo/web:1.1.0@sha256:" + (
        "a" * 64 + "\n"
    )

    monkeypatch.setenv("FAKE_TRIVY_REPORT", str(FIXTURES / "low_only.json"))
    clean = await fake_trivy().scan("img:1")
    assert clean.exit_code == 0
    assert clean.at_or_above("HIGH") == ()


async def test_a_scanner_that_cannot_run_or_crashes_or_hangs_stops_the_rollout() -> None:
    with pytest.raises(ScanFailed, match="cannot run the scanner"):
        await Scanner(("/nonexistent/trivy", "{image}"), timeout=5).scan("img:1")
    crash = "import sys; sys.stderr.write('database not found'); sys.exit(2)"
    with pytest.raises(ScanFailed, match="exited with 2: database not found"):
        await Scanner((sys.executable, "-c", crash), timeout=5).scan("img:1")
    hang = Scanner((sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.5)
    with pytest.raises(ScanFailed, match=r"did not finish within 0\.5s"):
        await hang.scan("img:1")
    empty = "import sys; print('{\"Results\": []}'); sys.exit(1)"
    with pytest.raises(ScanFailed, match="names none"):
        await Scanner((sys.executable, "-c", empty), timeout=5).scan("img:1")
