from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_rules.rules import Schedule
from edge_rules.schedule import Window, format_duration_en, format_duration_zh, parse_duration, zone
from tests.edge_rules.helpers import at


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45m", 2700),
        ("24h", 86400),
        ("60s", 60),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        (90, 90),
        ("0.5h", 1800),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "45", "5 minutes", "-5m", "0s", "h", True, None, "1h30"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration_zh(2700) == "45分钟"
    assert format_duration_zh(86400) == "24小时"
    assert format_duration_zh(7 * 86400) == "7天"
    assert format_duration_zh(3 * 3600) == "3小时"
    assert format_duration_zh(5400) == "1小时30分钟"
    assert format_duration_en(60) == "1 min"
    assert format_duration_en(48 * 3600) == "48 h"


def test_daytime_window_contains() -> None:
    day = Schedule(start="07:00", end="21:00").window("Asia/Shanghai")
    assert day.contains(at("07:00"))
    assert day.contains(at("20:59"))
    assert not day.contains(at("21:00"))
    assert not day.contains(at("03:00"))


def test_window_crossing_midnight() -> None:
    night = Schedule(start="22:00", end="06:00").window("Asia/Shanghai")
    assert night.contains(at("23:30"))
    assert night.contains(at("03:00"))  # inside the window that started yesterday
    assert not night.contains(at("06:00"))
    assert not night.contains(at("12:00"))


def test_weekdays() -> None:
    weekend = Schedule(start="08:00", end="10:00", days=["sat", "sun"]).window("Asia/Shanghai")
    assert not weekend.contains(at("09:00"))  # Monday
    assert weekend.contains(at("09:00", day=5))  # Saturday


def test_deadline_counts_only_in_schedule() -> None:
    day = Schedule(start="07:00", end="21:00").window("Asia/Shanghai")
    # last seen 20:00, 4 h of daytime needed: 1 h tonight, 3 h tomorrow morning
    assert day.deadline(at("20:00"), 4 * 3600) == at("10:00", day=1)
    # last seen at night: the clock starts at 07:00
    assert day.deadline(at("02:00"), 3600) == at("08:00")
    assert day.deadline(at("08:00"), 3600) == at("09:00")


def test_deadline_crossing_midnight_and_weekdays() -> None:
    night = Schedule(start="22:00", end="06:00").window("Asia/Shanghai")
    assert night.deadline(at("23:00"), 3 * 3600) == at("02:00", day=1)
    assert night.deadline(at("12:00"), 9 * 3600) == at("23:00", day=1)
    weekend = Schedule(start="08:00", end="10:00", days=["sat"]).window("Asia/Shanghai")
    assert weekend.deadline(at("09:00"), 3 * 3600) == at("09:00", day=12)


# ---------------------------------------------------------------- a window's memory of its days
#
# A Window keeps the local day it was last asked about and the intervals of the days it worked
# out. The reference below works every day out afresh for each question, as windows did before;
# a window asked a run of questions in any order must answer each as the reference does, in
# zones with and without daylight saving time (London and New York change at 01:00 / 02:00,
# Santiago and Havana at midnight, Lord Howe by half an hour).


def _fresh_windows(w: Window, first: date, count: int) -> Iterator[tuple[float, float]]:
    tzinfo = zone(w.tz)
    for i in range(count):
        day = first + timedelta(days=i)
        if day.weekday() not in w.days:
            continue
        begin = datetime.combine(day, time(0), tzinfo) + timedelta(minutes=w.start)
        end_day = day if w.end > w.start else day + timedelta(days=1)
        finish = datetime.combine(end_day, time(0), tzinfo) + timedelta(minutes=w.end)
        yield begin.timestamp(), finish.timestamp()


def _fresh_contains(w: Window, t: float) -> bool:
    today = datetime.fromtimestamp(t, zone(w.tz)).date()
    return any(s <= t < e for s, e in _fresh_windows(w, today - timedelta(days=1), 2))


def _fresh_deadline(w: Window, t0: float, seconds: float) -> float | None:
    remaining = seconds
    day = datetime.fromtimestamp(t0, zone(w.tz)).date() - timedelta(days=1)
    for _ in range(int(seconds // 3600) + 400):
        progressed = False
        for s, e in _fresh_windows(w, day, 8):
            s = max(s, t0)
            if e <= s:
                continue
            progressed = True
            if e - s >= remaining:
                return s + remaining
            remaining -= e - s
        day += timedelta(days=8)
        if not progressed and not w.days:
            return None
    return None


ZONES = (
    "Asia/Shanghai",
    "Europe/London",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "Australia/Lord_Howe",
)
# Around the 2026 changes of those zones (March, April, September, October, November).
_SPANS = [datetime(2026, m, 1, tzinfo=UTC).timestamp() for m in (3, 4, 9, 10, 11)]


@settings(max_examples=150, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    start=st.integers(0, 1440),
    end=st.integers(0, 1440),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    base=st.sampled_from(_SPANS),
    steps=st.lists(
        st.tuples(
            st.floats(-3 * 86_400, 40 * 86_400), st.sampled_from([60.0, 3600.0, 4 * 3600.0, 86_400.0, 30 * 3600.0])
        ),
        min_size=1,
        max_size=40,
    ),
    in_order=st.booleans(),
)
def test_window_answers_as_worked_out_afresh(
    zone_name: str,
    start: int,
    end: int,
    days: frozenset[int],
    base: float,
    steps: list[tuple[float, float]],
    in_order: bool,
) -> None:
    window = Window(start, end, days, zone_name)  # one window for the whole run: its memory warm
    if in_order:
        steps = sorted(steps)
    for offset, seconds in steps:
        t = round(base + offset, 3)
        assert window.contains(t) == _fresh_contains(window, t), (t, "contains")
        assert window.deadline(t, seconds) == _fresh_deadline(window, t, seconds), (t, seconds, "deadline")


def test_window_at_each_change_of_clocks() -> None:
    """Every minute around the 2026 changes of a zone whose clocks jump at midnight."""
    for zone_name in ("America/Santiago", "America/Havana", "Europe/London"):
        window = Window(0, 120, frozenset(range(7)), zone_name)
        for month_start in _SPANS:
            for minute in range(0, 40 * 24 * 60, 7):
                t = month_start + minute * 60.0
                assert window.contains(t) == _fresh_contains(window, t), (zone_name, t)
                assert window.deadline(t, 5400.0) == _fresh_deadline(window, t, 5400.0), (zone_name, t)
