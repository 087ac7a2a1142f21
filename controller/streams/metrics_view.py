"""Reading FLEET_METRICS into a FleetMetrics view (controller.rollouts.fleet_metrics:
one sample per host, and whether it is fresh).

:class:`MetricsReader` keeps a view current for the controller's canary analysis. Any
error ends one reading (the stream deleted or its consumer lost, the server away, a bug);
the next starts after a pause that doubles from FIRST_RETRY up to MAX_RETRY, and starts
over from FIRST_RETRY once the feed is up again (a sample came, or SETTLE seconds passed
without an error). While it is down the view says why (``feed_problem``), so analysis can
report that it has no data instead of passing. One log line per change of state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client

from controller.rollouts.fleet_metrics import FleetMetrics
from controller.streams.feed import Delivered, FleetFeed
from protocol.errors import FleetError, describe
from protocol.models import MetricsSample

log = logging.getLogger("fleetctl.metrics")
FIRST_RETRY = 0.5
"""Seconds before the first new reading after an error; doubled on each failure."""
MAX_RETRY = 10.0
SETTLE = 5.0
"""Seconds a new reading must last without an error to count as up before any sample."""


class MetricsReader:
    """Follows FLEET_METRICS into ``view`` until cancelled, starting over after any error."""

    def __init__(
        self,
        nc: Client,
        view: FleetMetrics,
        *,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
        settle: float = SETTLE,
    ) -> None:
        self._nc = nc
        self.view = view
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._settle = settle
        self._delay = first_retry
        self.readings = 0
        """Readings started so far (the first one included)."""

    async def run(self) -> None:
        while True:
            self.readings += 1
            try:
                await self._read()
            except Exception as exc:  # noqa: BLE001 - whatever it was, read again later
                self._down(describe(exc))
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, self._max_retry)

    async def _read(self) -> None:
        """One reading, from each host's newest sample on, until it fails."""
        feed = FleetFeed(self._nc).metrics(latest=True, follow=True)
        try:
            while True:
                delivered = await self._next(feed)
                if isinstance(delivered.message, MetricsSample):
                    self.view.add(delivered.message)
                self._up()
        finally:
            await feed.aclose()

    async def _next(self, feed: AsyncIterator[Delivered]) -> Delivered:
        """The next delivery. A reading that went ``settle`` seconds without failing is
        up again even before a sample comes (the stream may be new and empty)."""
        waiting: asyncio.Future[Delivered] = asyncio.ensure_future(anext(feed))
        try:
            done, _ = await asyncio.wait({waiting}, timeout=self._settle)
            if not done:
                self._up()
            return await waiting
        except StopAsyncIteration:
            raise FleetError("the metrics feed ended") from None
        finally:
            if not waiting.done():  # cancelled: the feed's own cleanup runs first
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)

    def _down(self, why: str) -> None:
        if self.view.feed_problem is None:
            log.warning("metrics feed down, reading it again shortly: %s", why)
            self.view.feed_problem = why

    def _up(self) -> None:
        self._delay = self._first_retry
        if self.view.feed_problem is not None:
            log.info("metrics feed read again (it was down: %s)", self.view.feed_problem)
            self.view.feed_problem = None
