"""The leader lease: one controller drives rollouts; another takes over when it lapses.

The lease is one KV entry (holder, expiry) changed only by compare-and-set, so two
controllers that try at once cannot both win. A holder renews it every tick; a
controller that finds it expired takes it over. Being leader is an optimisation, not
the safety net: every rollout write is itself compare-and-set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import AwareDatetime

from protocol.base import FrozenModel

LEASE_KEY = "leader"
KV_TIMEOUT = 5.0


class Lease(FrozenModel):
    holder: str
    expires_at: AwareDatetime


class LeaderLease:
    def __init__(self, kv: KeyValue, holder: str, ttl: float) -> None:
        self._kv = kv
        self.holder = holder
        self._ttl = timedelta(seconds=ttl)

    async def hold(self, now: datetime) -> bool:
        """Acquire or renew; True while this controller is the leader."""
        mine = Lease(holder=self.holder, expires_at=now + self._ttl).model_dump_json().encode()
        try:
            entry = await asyncio.wait_for(self._kv.get(LEASE_KEY), KV_TIMEOUT)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return await self._cas(lambda: self._kv.create(LEASE_KEY, mine))
        except (nats.errors.Error, TimeoutError):
            return False
        current = Lease.model_validate_json(entry.value or b"{}") if entry.value else None
        if current is None or current.holder == self.holder or current.expires_at <= now:
            revision = entry.revision or 0
            return await self._cas(lambda: self._kv.update(LEASE_KEY, mine, last=revision))
        return False

    async def release(self) -> None:
        """Give the lease up at a clean shutdown, so a standby takes over at once."""
        try:
            entry = await asyncio.wait_for(self._kv.get(LEASE_KEY), KV_TIMEOUT)
            if entry.value and Lease.model_validate_json(entry.value).holder == self.holder:
                await asyncio.wait_for(self._kv.purge(LEASE_KEY), KV_TIMEOUT)
        except (nats.errors.Error, TimeoutError):
            return

    @staticmethod
    async def _cas(write: Callable[[], Awaitable[int]]) -> bool:
        try:
            await asyncio.wait_for(write(), KV_TIMEOUT)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.errors.Error, TimeoutError):
            return False
        return True
