from __future__ import annotations

import pytest

from edge_rules.rules import Schedule
from edge_rules.schedule import format_duration_en, format_duration_zh, parse_duration
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
