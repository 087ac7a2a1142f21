"""Maintenance windows against the README's rule, over many time zones and calendars,
clock changes included: a window is open whenever the zone's clock shows one of its days
and a time in [start, end) (an overnight window from its start on a listed day to its
end the next day).

The oracle below is that rule, read off the clock (datetime's own zone arithmetic) one
instant at a time. Every boundary is on the 15-minute grid in UTC (windows are drawn on
it, and every zone's offset since 2000 is a multiple of 15 minutes), so walking that
grid finds every opening and every close: ``next_open`` must be the first open instant
of the walk, and the instant just before it shut; ``closes_at`` likewise.
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from controller.rollouts.windows import DAYS, Window, WindowError

GRID = timedelta(minutes=15)
SECOND = timedelta(seconds=1)
WEEK = timedelta(days=8)
# Zones whose clocks change, and some that do not; the legacy aliases are left out.
ZONES = sorted(
    z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
)
CHANGING = [
    "Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
    "America/Santiago", "Pacific/Auckland", "Asia/Tehran", "America/Havana",
    "Europe/London", "Africa/Casablanca", "Pacific/Chatham", "America/St_Johns",
]  # fmt: skip


def shows_open(days: set[int], start: time, end: time | None, zone: ZoneInfo, at: datetime) -> bool:
    """The README's rule, read off the zone's clock at ``at``."""
    local = at.astimezone(zone)
    clock = time(local.hour, local.minute, local.second)
    today, yesterday = local.weekday(), (local.weekday() - 1) % 7
    if end is None:  # 24:00
        return today in days and clock >= start
    if end > start:
        return today in days and start <= clock < end
    return (today in days and clock >= start) or (yesterday in days and clock < end)


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> tuple[Window, set[int], time, time | None, ZoneInfo]:
    days = draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))
    start = draw(st.integers(0, 95)) * 15
    end = draw(st.integers(1, 96).filter(lambda e: e * 15 != start)) * 15
    zone = draw(st.sampled_from(CHANGING) | st.sampled_from(ZONES))
    day_text = ",".join(DAYS[d].capitalize() for d in sorted(days))
    window = Window.parse(f"{day_text} {clock_text(start)}-{clock_text(end)} {zone}")
    end_time = None if end == 24 * 60 else time(end // 60, end % 60)
    return window, days, time(start // 60, start % 60), end_time, ZoneInfo(zone)


# Instants on the minute, many of them in the weeks when clocks change somewhere.
instants = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2037, 12, 31)),
    st.builds(
        lambda year, month, day, minute: datetime(year, month, day) + timedelta(minutes=minute),
        st.integers(2000, 2037),
        st.sampled_from([3, 4, 9, 10, 11]),
        st.integers(1, 28),
        st.integers(0, 7 * 24 * 60),
    ),
).map(lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC))


Drawn = tuple[Window, set[int], time, time | None, ZoneInfo]


@functools.cache
def clock_changes(zone_name: str, year: int) -> list[datetime]:
    """The hours of ``year`` in which the zone's offset changes (the test's own scan)."""
    zone, hour = ZoneInfo(zone_name), timedelta(hours=1)
    t, found = datetime(year, 1, 1, tzinfo=UTC), []
    while t.year == year:
        if t.astimezone(zone).utcoffset() != (t + hour).astimezone(zone).utcoffset():
            found.append(t)
        t += hour
    return found


@st.composite
def near_a_clock_change(draw: st.DrawFn) -> tuple[Drawn, datetime]:
    """A daily window whose start is shown a few hours either side of a clock change,
    and an instant a few hours before the change."""
    zone_name = draw(st.sampled_from(CHANGING))
    changes = clock_changes(zone_name, draw(st.integers(2000, 2037)))
    assume(changes)
    change, zone = draw(st.sampled_from(changes)), ZoneInfo(zone_name)
    opens = (change + draw(st.integers(-12, 12)) * GRID).astimezone(zone)
    start = (opens.hour * 60 + opens.minute) // 15 * 15
    end = start + draw(st.integers(1, 24)) * 15
    end_text = "24:00" if end == 24 * 60 else clock_text(end % (24 * 60))
    window = Window.parse(f"daily {clock_text(start)}-{end_text} {zone_name}")
    end_time = None if end == 24 * 60 else time(end % (24 * 60) // 60, end % 60)
    drawn = (window, set(range(7)), time(start // 60, start % 60), end_time, zone)
    return drawn, change - draw(st.integers(0, 12)) * GRID


@functools.cache
def exact_clock_changes(zone_name: str, year: int) -> list[datetime]:
    """The instants, to the second, at which the zone's offset changes in ``year``:
    walked minute by minute, then second by second, inside each hour found above."""
    zone, found = ZoneInfo(zone_name), []
    for hour in clock_changes(zone_name, year):
        before = hour.astimezone(zone).utcoffset()
        minute = next(
            hour + timedelta(minutes=m) for m in range(1, 61)
            if (hour + timedelta(minutes=m)).astimezone(zone).utcoffset() != before
        )  # fmt: skip
        found.append(
            next(
                minute - timedelta(seconds=59 - s)
                for s in range(60)
                if (minute - timedelta(seconds=59 - s)).astimezone(zone).utcoffset() != before
            )
        )
    return found


def walk(at: datetime, zone: ZoneInfo) -> list[datetime]:
    """``at``, then every grid instant after it for a week and a day, and every instant
    the zone's clock jumps in that time (some zones changed off the grid, at 00:01)."""
    first = at + (-(at - datetime(2000, 1, 1, tzinfo=UTC)) % GRID or GRID)
    grid = [first + n * GRID for n in range(int(WEEK / GRID))]
    jumps = [
        t for year in {at.year, (at + WEEK).year}
        for t in exact_clock_changes(str(zone.key), year) if at < t <= at + WEEK
    ]  # fmt: skip
    return [at, *sorted({*grid, *jumps})]


def clock_changes_between(zone: ZoneInfo, a: datetime, b: datetime) -> bool:
    return a.astimezone(zone).utcoffset() != b.astimezone(zone).utcoffset()


def test_next_open_is_the_first_instant_the_clock_shows_the_window() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None)
    @given(case=st.tuples(windows(), instants) | near_a_clock_change())
    def check(case: tuple[Drawn, datetime]) -> None:
        (window, days, start, end, zone), at = case
        opens = window.next_open(at)
        expected = next(t for t in walk(at, zone) if shows_open(days, start, end, zone, t))
        assert opens == expected, (window.text, at, opens, expected)
        if opens > at:
            assert not shows_open(days, start, end, zone, opens - SECOND)
            seen["waited"] += 1
            if clock_changes_between(zone, at, opens):
                event("a clock change before it opened")
                seen["clock changed"] += 1
        else:
            seen["open already"] += 1

    check()
    assert seen["waited"] > 50, seen
    assert seen["open already"] > 10, seen
    assert seen["clock changed"] > 10, seen


def test_closes_at_is_the_first_instant_the_clock_shows_outside_the_window() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(case=st.tuples(windows(), instants) | near_a_clock_change())
    def check(case: tuple[Drawn, datetime]) -> None:
        (window, days, start, end, zone), at = case
        inside = window.next_open(at)
        closes = window.closes_at(inside)
        expected = next(
            (t for t in walk(inside, zone) if not shows_open(days, start, end, zone, t)), None
        )
        assert closes == expected, (window.text, inside, closes, expected)
        if closes is None:
            seen["never shuts"] += 1
            return
        assert shows_open(days, start, end, zone, closes - SECOND)
        seen["shuts"] += 1
        if clock_changes_between(zone, inside, closes):
            event("a clock change while it was open")
            seen["clock changed"] += 1

    check()
    assert seen["shuts"] > 100, seen
    assert seen["clock changed"] > 10, seen


def test_a_window_shut_at_an_instant_says_so() -> None:
    window = Window.parse("Mon-Fri 02:00-05:00 Europe/Berlin")
    saturday = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    assert not window.is_open(saturday)
    assert window.closes_at(saturday) == saturday
    assert window.next_open(saturday) == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "before", "opens_local"),
    [
        # Spring forward in Berlin (02:00 -> 03:00 on 29 March 2026): a window from 02:30
        # opens as the clock jumps, at 03:00 local.
        ("Sun 02:30-04:00", "2026-03-28T12:00:00+00:00", "2026-03-29T03:00:00+02:00"),
        # Fall back (03:00 -> 02:00 on 25 October 2026): 02:15 is first shown in summer time.
        ("Sun 02:15-02:45", "2026-10-24T12:00:00+00:00", "2026-10-25T02:15:00+02:00"),
    ],
)
def test_windows_on_the_days_the_clocks_change(when: str, before: str, opens_local: str) -> None:
    window = Window.parse(f"{when} Europe/Berlin")
    assert window.next_open(datetime.fromisoformat(before)) == datetime.fromisoformat(opens_local)


def test_the_repeated_hour_is_inside_the_window_both_times() -> None:
    window = Window.parse("Sun 02:15-02:45 Europe/Berlin")
    first = datetime.fromisoformat("2026-10-25T02:15:00+02:00")
    shuts = window.closes_at(first)
    assert shuts == datetime.fromisoformat("2026-10-25T02:45:00+02:00")
    assert window.next_open(shuts) == datetime.fromisoformat("2026-10-25T02:15:00+01:00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Mon-Fri 02:00-05:00", "window 'Mon-Fri 02:00-05:00': write DAYS HH:MM-HH:MM ZONE"),
        ("Mon-Fry 02:00-05:00 UTC", "window 'Mon-Fry 02:00-05:00 UTC': 'mon-fry' is not a day"),
        ("Mon 2:00-05:00 UTC", "window 'Mon 2:00-05:00 UTC': '2:00' is not a time HH:MM"),
        ("Mon 02:00-24:30 UTC", "window 'Mon 02:00-24:30 UTC': '24:30' is not a time HH:MM"),
        ("Mon 24:00-05:00 UTC", "window 'Mon 24:00-05:00 UTC': a window starts by 23:59"),
        ("Mon 05:00-05:00 UTC", "window 'Mon 05:00-05:00 UTC': it starts and ends at the same"),
        ("Mon 02:00 UTC", "window 'Mon 02:00 UTC': '02:00' is not HH:MM-HH:MM"),
        ("Mon 02:00-05:00 Mars/Olympus", "window 'Mon 02:00-05:00 Mars/Olympus': 'Mars/Olym"),
        ("Mon 02:00-05:00 ../etc", "window 'Mon 02:00-05:00 ../etc': '../etc' is not a time"),
    ],
)
def test_a_window_fleetwave_cannot_read_is_refused_with_the_part_at_fault(
    text: str, message: str
) -> None:
    with pytest.raises(WindowError) as raised:
        Window.parse(text)
    assert str(raised.value).startswith(message), str(raised.value)


def test_days_may_be_listed_ranged_and_wrapped() -> None:
    assert Window.parse("Fri-Mon 22:00-02:00 UTC").days == {4, 5, 6, 0}
    assert Window.parse("mon,wed-thu 01:00-02:00 UTC").days == {0, 2, 3}
    assert Window.parse("daily 01:00-02:00 UTC").days == set(range(7))
