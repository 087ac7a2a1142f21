"""Full garbage collections when the leader chooses, not in the middle of a wave.

CPython runs a full (oldest-generation) collection on its own whenever enough objects have
survived into that generation. At 5,000 hosts the controller replaces thousands of host
facts on every round of heartbeats, so one came every few seconds and stopped the whole
process for 50 to 170 ms on this 2-core machine: when it fell just after a pass had
decided a wave, every command of that wave waited for it (bench/rollout_scale.py showed
the p99 round trip at 200 ms and more, the first wave's commands all late).

So, while the controller serves (leading or standing by): what was loaded at start
(modules, classes, the inventory) is frozen out of every collection, the automatic full
collections are off, and the serving loop runs one itself when it has nothing to send
and no answer to fold, at most every ``quiet_every`` seconds, and at the latest every
``at_most_every`` seconds whatever it is doing, so garbage in reference cycles is still
freed. Younger generations are collected automatically as before (small and quick).
CPython 3.11 and 3.12 are what this is written for; a collector that ignores the
oldest generation's threshold (an incremental one) would make it a no-op, not a harm.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("fleetctl.controller")

NEVER = 2**31 - 1
"""An oldest-generation threshold never reached: no automatic full collection."""


class CollectionPacer:
    def __init__(
        self,
        quiet_every: float = 10.0,
        at_most_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet_every = quiet_every
        self._at_most_every = at_most_every
        self._clock = clock
        self._last = clock()
        self._thresholds: tuple[int, int, int] | None = None

    def take_over(self) -> None:
        """From now on full collections wait for ``collect_if_due``."""
        young, middle, old = gc.get_threshold()
        if self._thresholds is not None or old == NEVER:  # held already (here or another)
            return
        self._thresholds = (young, middle, old)
        gc.collect()  # garbage of the start-up first: frozen, it would never be freed
        gc.freeze()  # what was loaded so far lives as long as the process: never scanned
        gc.set_threshold(young, middle, NEVER)
        self._last = self._clock()

    def hand_back(self) -> None:
        """CPython collects on its own again (the controller stops, or a test ends)."""
        if self._thresholds is None:
            return
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()
        self._thresholds = None

    def collect_if_due(self, quiet: bool) -> bool:
        """Collect now if it is time: ``quiet`` (nothing to send, nothing to fold) and
        ``quiet_every`` seconds since the last, or ``at_most_every`` seconds in any case.
        True if it collected."""
        if self._thresholds is None:
            return False
        since = self._clock() - self._last
        if since < self._at_most_every and not (quiet and since >= self._quiet_every):
            return False
        started = time.perf_counter()
        freed = gc.collect()
        self._last = self._clock()
        took = (time.perf_counter() - started) * 1000
        log.debug("full collection: %d objects freed in %.0f ms", freed, took)
        return True
