"""The vulnerability scan gate: run a Trivy-compatible scanner, read its JSON report.

The scanner is a configured command, ``{image}`` standing for the pinned reference, such
as ``trivy image --format json --exit-code 1 --severity HIGH,CRITICAL {image}``. Its JSON
report (Trivy's: ``Results[].Vulnerabilities[]`` with ``VulnerabilityID`` and
``Severity``) decides; the exit code only confirms. The gate fails closed: a scanner
that cannot be run, times out, or prints no report stops the rollout too.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from protocol.errors import FleetError

Severity = Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
SEVERITIES: tuple[Severity, ...] = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
IMAGE_PLACEHOLDER = "{image}"
MAX_NAMED = 20
"""Findings named one by one in a refusal; the rest are counted."""


class ScanFailed(FleetError):
    """The scanner could not give a verdict (not found, crashed, timed out, no report)."""

    code = "scan_failed"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    package: str
    installed: str
    fixed: str
    target: str

    def describe(self) -> str:
        fix = f", fixed in {self.fixed}" if self.fixed else ""
        return f"{self.id} ({self.severity}, {self.package} {self.installed}{fix})"


@dataclass(frozen=True)
class ScanReport:
    findings: tuple[Finding, ...]
    exit_code: int

    def at_or_above(self, threshold: Severity) -> tuple[Finding, ...]:
        floor = SEVERITIES.index(threshold)
        return tuple(f for f in self.findings if SEVERITIES.index(f.severity) >= floor)


def blocking_reason(image: str, blocking: tuple[Finding, ...], threshold: Severity) -> str:
    """The refusal text: every blocking CVE id (up to MAX_NAMED), worst first."""
    ordered = sorted(blocking, key=lambda f: (-SEVERITIES.index(f.severity), f.id))
    named = "; ".join(f.describe() for f in ordered[:MAX_NAMED])
    more = f"; and {len(ordered) - MAX_NAMED} more" if len(ordered) > MAX_NAMED else ""
    return (
        f"the scan of {image} found {len(ordered)} vulnerabilit"
        f"{'y' if len(ordered) == 1 else 'ies'} at or above {threshold}: {named}{more}"
    )


def parse_trivy_report(data: bytes) -> tuple[Finding, ...]:
    """The vulnerabilities of a Trivy JSON report (SchemaVersion 2), unique by id and target."""
    try:
        report = json.loads(data)
    except ValueError as exc:
        raise ScanFailed(f"the scanner's report is not JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("Results", []), list | None):
        raise ScanFailed("the scanner's report is not a Trivy JSON report (no Results list)")
    found: dict[tuple[str, str, str], Finding] = {}
    for result in report.get("Results") or ():
        if not isinstance(result, dict):
            raise ScanFailed("the scanner's report has a Result that is not an object")
        for item in result.get("Vulnerabilities") or ():
            finding = _finding(item, str(result.get("Target", "")))
            found[(finding.id, finding.package, finding.target)] = finding
    return tuple(found.values())


def _finding(item: Any, target: str) -> Finding:
    if not isinstance(item, dict) or not isinstance(item.get("VulnerabilityID"), str):
        raise ScanFailed("the scanner's report has a vulnerability without a VulnerabilityID")
    severity = str(item.get("Severity", "UNKNOWN")).upper()
    return Finding(
        id=item["VulnerabilityID"],
        severity=severity if severity in SEVERITIES else "UNKNOWN",
        package=str(item.get("PkgName", "")),
        installed=str(item.get("InstalledVersion", "")),
        fixed=str(item.get("FixedVersion", "")),
        target=target,
    )


@dataclass(frozen=True)
class Scanner:
    command: tuple[str, ...]
    timeout: float

    async def scan(self, image: str, env: Mapping[str, str] | None = None) -> ScanReport:
        """Run the scanner on ``image``; its extra ``env`` (registry login) is never logged."""
        argv = [part.replace(IMAGE_PLACEHOLDER, image) for part in self.command]
        if IMAGE_PLACEHOLDER not in " ".join(self.command):
            argv.append(image)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            raise ScanFailed(f"cannot run the scanner {argv[0]}: {exc.strerror}") from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ScanFailed(f"the scanner did not finish within {self.timeout:g}s") from None
        code = process.returncode or 0
        if code not in (0, 1):
            tail = stderr.decode(errors="replace").strip()[-500:]
            raise ScanFailed(f"the scanner exited with {code}: {tail or 'no output'}")
        findings = parse_trivy_report(stdout)
        if code == 1 and not findings:
            raise ScanFailed("the scanner exited with 1 (findings) but its report names none")
        return ScanReport(findings, code)
