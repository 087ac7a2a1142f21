"""Version policy: refuse a downgrade or a major jump unless the command allows it."""

from __future__ import annotations

import re

from protocol.models import Reason

_SEMVER = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def parse_semver(tag: str | None) -> tuple[int, int, int, str] | None:
    match = _SEMVER.fullmatch(tag or "")
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), pre or ""


def _order_key(version: tuple[int, int, int, str]) -> tuple[int, int, int, int, str]:
    major, minor, patch, pre = version
    # A pre-release sorts before its release (1.0.0-rc1 < 1.0.0).
    return major, minor, patch, 0 if pre else 1, pre


def version_policy_reasons(
    current_tag: str | None, new_tag: str | None, *, allow_downgrade: bool, allow_major: bool
) -> list[Reason]:
    """Reasons to refuse going from ``current_tag`` to ``new_tag`` (empty: allowed).

    Tags that are not semantic versions (latest, a date, a commit) are not compared.
    """
    current, new = parse_semver(current_tag), parse_semver(new_tag)
    if current is None or new is None:
        return []
    reasons: list[Reason] = []
    if _order_key(new) < _order_key(current) and not allow_downgrade:
        reasons.append(
            Reason(
                code="version_downgrade",
                text=f"{new_tag} is older than the running {current_tag}; allow_downgrade to force",
            )
        )
    if new[0] > current[0] and not allow_major:
        reasons.append(
            Reason(
                code="version_major_jump",
                text=f"{current_tag} -> {new_tag} changes the major version; allow_major to force",
            )
        )
    return reasons
