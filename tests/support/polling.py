"""Waiting for a condition read from the outside (a CLI, the engine), never sleeping blind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, deadline: float = 60
) -> T:
    """``read()`` again until ``ok`` holds for what it returns; AssertionError if never."""
    last: T | None = None

    async def poll() -> T:
        nonlocal last
        while True:
            last = await read()
            if ok(last):
                return last
            await asyncio.sleep(0.2)

    try:
        async with asyncio.timeout(deadline):
            return await poll()
    except TimeoutError:
        raise AssertionError(f"never {what} within {deadline}s; last: {last!r}") from None
