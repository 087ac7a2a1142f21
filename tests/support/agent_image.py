"""The fleet-agent image, built once per test run by deploy/agent/build.sh (make agent-image).

The script is idempotent: when nothing the image is made of changed, it only checks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 900.0
"""The first build makes the Debian base (about 20 s here) and the wheels."""


def build_agent_image(version: str | None = None) -> str:
    """The image's reference in the local registry, built and pushed if it is not."""
    args = ["bash", str(REPO_ROOT / "deploy" / "agent" / "build.sh")]
    if version is not None:
        args.append(version)
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"make agent-image failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]
