"""A FAKE scanner for tests: answers like `trivy image --format json` with a stored report.

It takes Trivy's arguments (`image --format json --exit-code N --severity A,B IMAGE`),
prints the report named by FAKE_TRIVY_REPORT (real Trivy JSON, from tests/fixtures) and
exits with --exit-code when the report has a finding of one of --severity, as Trivy does.
It appends its image argument to FAKE_TRIVY_LOG, so a test sees what was scanned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="fake-trivy")
    parser.add_argument("command", choices=["image"])
    parser.add_argument("--format", default="table")
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--severity", default="UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL")
    parser.add_argument("image")
    args = parser.parse_args()
    if log := os.environ.get("FAKE_TRIVY_LOG"):
        with Path(log).open("a") as out:
            out.write(args.image + "\n")
    text = Path(os.environ["FAKE_TRIVY_REPORT"]).read_text()
    sys.stdout.write(text)
    wanted = set(args.severity.split(","))
    found = {
        item["Severity"]
        for result in json.loads(text).get("Results") or ()
        for item in result.get("Vulnerabilities") or ()
    }
    return args.exit_code if found & wanted else 0


if __name__ == "__main__":
    sys.exit(main())
