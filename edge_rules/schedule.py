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
    """A compiled schedule: minutes of day and weekday numbers (0 = Monday)."""

    __slots__ = ("days", "end", "start", "tz")

    def __init__(self, start: int, end: int, days: frozenset[int], tz: str) -> None:
        self.start = start
        self.end = end
        self.days = days
        self.tz = tz

    def _windows(self, first: date, count: int) -> Iterator[tuple[float, float]]:
        """In-schedule intervals (epoch seconds) of windows starting on ``count`` days from ``first``."""
        tzinfo = zone(self.tz)
        for i in range(count):
            day = first + timedelta(days=i)
            if day.weekday() not in self.days:
                continue
            begin = datetime.combine(day, time(0), tzinfo) + timedelta(minutes=self.start)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            finish = datetime.combine(end_day, time(0), tzinfo) + timedelta(minutes=self.end)
            yield begin.timestamp(), finish.timestamp()

    def contains(self, t: float) -> bool:
        today = datetime.fromtimestamp(t, zone(self.tz)).date()
        return any(s <= t < e for s, e in self._windows(today - timedelta(days=1), 2))

    def deadline(self, t0: float, seconds: float) -> float | None:
        """The instant when ``seconds`` of in-schedule time have passed since ``t0``."""
        remaining = seconds
        day = datetime.fromtimestamp(t0, zone(self.tz)).date() - timedelta(days=1)
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
            day += timedelta(days=_HORIZON_DAYS)
            if not progressed and not self.days:
                return None
        return None
