"""Maintenance windows: when automatic updates may start, and run on.

A window is days and a span of wall-clock time in a time zone: ``Mon-Fri 02:00-05:00
Europe/Berlin``, ``Sat,Sun 22:00-02:00 UTC`` (overnight: it belongs to the day it starts
on), ``daily 03:00-04:00 America/New_York``, ``Mon 00:00-24:00 UTC``. It is open whenever
the zone's clock shows one of its days and a time in [start, end). So on the day the
clocks spring forward, a window that starts inside the skipped hour opens at the first
instant after it; on the day they fall back, the repeated hour is inside the window (or
outside it) both times it is shown.

Pure: instants in, instants out; the zone database is the standard library's zoneinfo
(with the tzdata package where the system has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as Clock  # a time of day (not a clock read: this module reads none)
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.errors import ControllerError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_SEARCH_DAYS = 9
"""Every window opens within a week; a day either side for overnight windows and zones."""


class WindowError(ControllerError):
    """A maintenance window Fleetwave cannot read: the message says which part."""

    code = "window_invalid"


@dataclass(frozen=True)
class Window:
    days: frozenset[int]
    """Monday is 0, as datetime.weekday() says."""
    start: Clock
    end: Clock | None
    """None: midnight at the end of the day (written 24:00)."""
    zone: ZoneInfo
    text: str

    @classmethod
    def parse(cls, text: str) -> Window:
        parts = text.split()
        if len(parts) != 3:
            raise WindowError(f"window {text!r}: write DAYS HH:MM-HH:MM ZONE")
        days, span, zone_name = parts
        start_text, dash, end_text = span.partition("-")
        if not dash:
            raise WindowError(f"window {text!r}: {span!r} is not HH:MM-HH:MM")
        start, end = _clock(start_text, text), _clock(end_text, text)
        if start is None:
            raise WindowError(f"window {text!r}: a window starts by 23:59")
        if start == end:
            raise WindowError(f"window {text!r}: it starts and ends at the same time")
        return cls(_days(days, text), start, end, _zone(zone_name, text), text)

    @property
    def overnight(self) -> bool:
        return self.end is not None and self.end < self.start

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        wall = Clock(local.hour, local.minute, local.second, local.microsecond)
        day = local.weekday()
        if self.overnight:
            assert self.end is not None
            return (day in self.days and wall >= self.start) or (
                (day - 1) % 7 in self.days and wall < self.end
            )
        before_end = self.end is None or wall < self.end
        return day in self.days and self.start <= wall and before_end

    def next_open(self, at: datetime) -> datetime:
        """``at`` if the window is open then; else the first instant after it that is."""
        if self.is_open(at):
            return at
        found = next((t for t in self._changes(at) if self.is_open(t)), None)
        if found is None:  # only a zone that skips whole days could do this
            raise WindowError(f"window {self.text!r} does not open within a week")
        return found

    def closes_at(self, at: datetime) -> datetime | None:
        """``at`` if the window is shut then; else the first instant after it that is
        shut; None if the window never shuts (``daily 00:00-24:00``)."""
        if not self.is_open(at):
            return at
        return next((t for t in self._changes(at) if not self.is_open(t)), None)

    def _changes(self, at: datetime) -> list[datetime]:
        """Every instant after ``at``, within the search's reach, at which the window may
        open or shut: where the clock shows its start or its end, and where the clock
        jumps. Between two of them it stays as it is."""
        first = at.astimezone(self.zone).date() - timedelta(days=1)
        found = set(self._jumps(at, at + timedelta(days=_SEARCH_DAYS)))
        for n in range(_SEARCH_DAYS + 1):
            day = first + timedelta(days=n)
            found.update(self._shown(day, self.start))
            found.update(self._shown(day, self.end or Clock(0)))
        return sorted(t for t in found if t > at)

    def _shown(self, day: date, clock: Clock) -> list[datetime]:
        """The instants the zone's clock shows ``clock`` on ``day`` (none in a gap, two in
        a repeated hour)."""
        instants = []
        for fold in (0, 1):
            local = datetime.combine(day, clock, tzinfo=self.zone).replace(fold=fold)
            instant = local.astimezone(UTC)
            if instant.astimezone(self.zone).replace(tzinfo=None) == local.replace(tzinfo=None):
                instants.append(instant)
        return instants

    def _jumps(self, since: datetime, until: datetime) -> list[datetime]:
        """The instants in (since, until] at which the zone's offset changes, to the
        second (a zone changes its offset at most once in any hour)."""
        jumps = []
        step = timedelta(hours=1)
        before = since.astimezone(UTC)
        while before < until:
            after = before + step
            if before.astimezone(self.zone).utcoffset() != after.astimezone(self.zone).utcoffset():
                jumps.append(self._bisect(before, after))
            before = after
        return jumps

    def _bisect(self, low: datetime, high: datetime) -> datetime:
        """The first second in (low, high] with ``high``'s offset."""
        offset = high.astimezone(self.zone).utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            middle = middle.replace(microsecond=0) if middle.microsecond else middle
            if middle.astimezone(self.zone).utcoffset() == offset:
                high = middle
            else:
                low = middle
        return high


def _clock(text: str, window: str) -> Clock | None:
    """HH:MM; 24:00 (only as an end) is None: the end of the day."""
    found = _CLOCK.match(text)
    if found is None or (found[1] == "24" and found[2] != "00"):
        raise WindowError(f"window {window!r}: {text!r} is not a time HH:MM (00:00 to 24:00)")
    return None if found[1] == "24" else Clock(int(found[1]), int(found[2]))


def _days(text: str, window: str) -> frozenset[int]:
    if text.lower() in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for item in text.lower().split(","):
        first, dash, last = item.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise WindowError(
                f"window {window!r}: {item!r} is not a day or range of days (Mon-Fri, Sat,Sun)"
            )
        a, b = DAYS.index(first), DAYS.index(last) if dash else DAYS.index(first)
        days.update((a + n) % 7 for n in range((b - a) % 7 + 1))  # Fri-Mon wraps the week
    return frozenset(days)


def _zone(name: str, window: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"window {window!r}: {name!r} is not a time zone") from None
