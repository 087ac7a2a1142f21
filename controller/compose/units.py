"""Compose's durations ("1m30s", "2.5s", "100ms") and byte sizes ("512m", "1gb", "1.5g")."""

from __future__ import annotations

import re

from controller.errors import ComposeError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_DURATION_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0,
}  # fmt: skip
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def duration_seconds(value: object, where: str) -> float:
    """Seconds in a Compose duration: units chained ("1h2m3s"), a unit on every part but
    a bare 0. A number is taken as seconds (what a YAML integer means in most files)."""
    if isinstance(value, bool):
        raise ComposeError(f"{where}: {value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ComposeError(f"{where}: {text!r} is not a duration (like 1m30s, 10s or 500ms)")
    return total


def size_bytes(value: object, where: str) -> int:
    """Bytes in a Compose byte size: b, k, m, g (and t, p), powers of 1024, with an
    optional "b" or "ib" after the unit; a number is bytes."""
    if isinstance(value, bool):
        raise ComposeError(f"{where}: {value!r} is not a size")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ComposeError(f"{where}: {text!r} is not a size (like 512m or 1gb)")
    return int(float(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "").lower()])
