"""Tiny blocking HTTP helpers for probing demo containers from tests."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: str


def http_get(url: str, timeout: float = 2.0) -> HttpAnswer | None:
    """The answer, or None when nothing answers (refused, reset, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return HttpAnswer(response.status, response.read().decode().strip())
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read().decode().strip())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_for_http(url: str, want_status: int, deadline_s: float = 20.0) -> HttpAnswer:
    """Poll until ``url`` answers ``want_status``; raise with the last answer if it never does."""
    deadline = time.monotonic() + deadline_s
    last: HttpAnswer | None = None
    while time.monotonic() < deadline:
        last = http_get(url)
        if last is not None and last.status == want_status:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {want_status} in {deadline_s}s; last: {last}")
