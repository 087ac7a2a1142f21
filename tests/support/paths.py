"""Where the repository is, for tests at any depth of tests/."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SUPPORT = REPO_ROOT / "tests" / "support"
