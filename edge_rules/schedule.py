"""Durations and local-time schedules: pure functions of epoch seconds and a timezone.

A ``Schedule`` is a daily window in local time, ``start``–``end`` ("07:00"–"21:00"), optionally
only on some weekdays. A window whose end is not after its start crosses midnight
("22:00"–"06:00"); its weekday is the day it starts on.

Two questions are asked of a schedule:

- ``contains(t)``: is the instant ``t`` inside a window? (a condition's time-of-day filter)
- ``deadline(t0, seconds)``: when will ``seconds`` of *in-schedule* time have passed since
  ``t0``? (an absence or held duration that only counts inside the schedule: four hours of no
  activity within 07:00–21:00, last seen at 20:00, fall due at 10:00 the next morning)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?\s*[dhms]\s*)+")
_UNIT = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
# Give up looking for a window after this many days (a schedule always has one per week).
_HORIZON_DAYS = 8


def parse_duration(value: object) -> float:
    """``"45m"``, ``"24h"``, ``"60s"``, ``"1d"``, ``"1h30m"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError('a duration such as "45m", "24h" or "60s"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not _DURATION_FULL.fullmatch(text):
            raise ValueError('a duration such as "45m", "24h" or "60s"')
        seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    else:
        raise ValueError('a duration such as "45m", "24h" or "60s"')
    if seconds <= 0:
        raise ValueError("a positive duration")
    return seconds


def format_duration_zh(seconds: float) -> str:
    return _format_duration(seconds, ("天", "小时", "分钟", "秒"), "")


def format_duration_en(seconds: float) -> str:
    return _format_duration(seconds, ("d", "h", "min", "s"), " ")


def _format_duration(seconds: float, units: tuple[str, str, str, str], gap: str) -> str:
    day, hour, minute, second = units
    if seconds >= 3 * 86_400 and seconds % 86_400 == 0:  # "48小时" reads better than "2天"
        return f"{int(seconds // 86_400)}{gap}{day}"
    if seconds >= 3_600 and seconds % 3_600 == 0:
        return f"{int(seconds // 3_600)}{gap}{hour}"
    if seconds >= 3_600:
        return f"{int(seconds // 3_600)}{gap}{hour}{gap}{int(seconds % 3_600 // 60)}{gap}{minute}"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}{gap}{minute}"
    return f"{round(seconds)}{gap}{second}"


def parse_clock(value: str) -> int:
    """``"07:30"`` → minutes after midnight. ``"24:00"`` is allowed as an end."""
    m = re.fullmatch(r"([01]?\d|2[0-4]):([0-5]\d)", value.strip())
    if not m or (int(m.group(1)) == 24 and m.group(2) != "00"):
        raise ValueError('a local time "HH:MM", e.g. "07:00"')
    return int(m.group(1)) * 60 + int(m.group(2))


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_hhmm(t: float, tz: str) -> str:
    return datetime.fromtimestamp(t, zone(tz)).strftime("%H:%M")


class Window:
    """A compiled schedule: minutes of day and weekday numbers (0 = Monday).

    The engine asks a window about nearly every event (a condition's time of day, an absence
    timer put off), and its events come in time order: a window keeps the local day it was
    last asked about (that day's first and last instant) and the intervals of the days it has
    worked out, so a question about the same day again costs no date arithmetic. The answers
    are the same as working the days out afresh (tests/edge_rules/test_schedule.py)."""

    __slots__ = ("_day", "_intervals", "days", "end", "start", "tz")

    def __init__(self, start: int, end: int, days: frozenset[int], tz: str) -> None:
        self.start = start
        self.end = end
        self.days = days
        self.tz = tz
        # The local day last asked about: (its first instant, the next day's, its ordinal).
        self._day = (0.0, 0.0, 0)
        # The window starting on a day (by ordinal), as epoch seconds; None: no window that day.
        self._intervals: dict[int, tuple[float, float] | None] = {}

    def _ordinal(self, t: float) -> int:
        """The ordinal of the local date of ``t``."""
        lo, hi, ordinal = self._day
        if lo <= t < hi:
            return ordinal
        tzinfo = zone(self.tz)
        today = datetime.fromtimestamp(t, tzinfo).date()
        # The first instant of a day is its midnight, or the end of a gap that swallowed it
        # (fold 0 of a missing time is the instant the clocks jumped): either way, what
        # fromtimestamp dates as that day starts there.
        lo = datetime.combine(today, time(0), tzinfo).timestamp()
        hi = datetime.combine(today + timedelta(days=1), time(0), tzinfo).timestamp()
        ordinal = today.toordinal()
        if lo <= t < hi:  # always, unless the zone's rules are stranger than that
            self._day = (lo, hi, ordinal)
        return ordinal

    def _interval(self, ordinal: int) -> tuple[float, float] | None:
        """In-schedule interval (epoch seconds) of the window starting on the day ``ordinal``."""
        intervals = self._intervals
        if ordinal in intervals:
            return intervals[ordinal]
        if len(intervals) >= 64:  # weeks of days: a window asked about for years stays small
            intervals.clear()
        day = date.fromordinal(ordinal)
        found: tuple[float, float] | None = None
        if day.weekday() in self.days:
            tzinfo = zone(self.tz)
            begin = datetime.combine(day, time(0), tzinfo) + timedelta(minutes=self.start)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            finish = datetime.combine(end_day, time(0), tzinfo) + timedelta(minutes=self.end)
            found = (begin.timestamp(), finish.timestamp())
        intervals[ordinal] = found
        return found

    def _windows(self, first: int, count: int) -> Iterator[tuple[float, float]]:
        """In-schedule intervals of windows starting on ``count`` days from the day ``first``."""
        for ordinal in range(first, first + count):
            found = self._interval(ordinal)
            if found is not None:
                yield found

    def contains(self, t: float) -> bool:
        today = self._ordinal(t)
        for ordinal in (today - 1, today):
            found = self._interval(ordinal)
            if found is not None and found[0] <= t < found[1]:
                return True
        return False

    def deadline(self, t0: float, seconds: float) -> float | None:
        """The instant when ``seconds`` of in-schedule time have passed since ``t0``."""
        day = self._ordinal(t0) - 1
        # Most often the time is found in the first window that has any left (today's, or the
        # one that began yesterday): what the walk below would return, without starting it.
        for ordinal in (day, day + 1):
            found = self._interval(ordinal)
            if found is not None:
                s = max(found[0], t0)
                if found[1] <= s:
                    continue
                if found[1] - s >= seconds:
                    return s + seconds
                break
        remaining = seconds
        # Each week has at least one window, so each _HORIZON_DAYS chunk makes progress.
        for _ in range(int(seconds // 3600) + 400):
            progressed = False
            for s, e in self._windows(day, _HORIZON_DAYS):
                s = max(s, t0)
                if e <= s:
                    continue
                progressed = True
                if e - s >= remaining:
                    return s + remaining
                remaining -= e - s
            day += _HORIZON_DAYS
            if not progressed and not self.days:
                return None
        return None
