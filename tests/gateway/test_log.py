"""LogOnce (gateway/log.py): logged once, then counted — and bounded, whatever arrives: the keys
it remembers, the first occurrences it logs per minute, and a summary of the rest once a minute."""

from __future__ import annotations

import logging

import pytest

from gateway.clock import VirtualClock
from gateway.log import MAX_KEYS, MAX_NEW_PER_INTERVAL, LogOnce, summarise_all

LOGGER = "sensegate.test.logonce"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_flood_of_distinct_keys_is_logged_up_to_the_budget_not_once_each(caplog: pytest.LogCaptureFixture) -> None:
    # Issue 13: a flood of unique unknown topics gave one line each (12,005 lines).
    caplog.set_level(logging.WARNING, LOGGER)
    once = LogOnce(logging.getLogger(LOGGER))
    for i in range(12_005):
        once.warning(("unknown_device", f"zigbee2mqtt/random/{i}"), "skipped payload: topic=%s", i)
    assert len(lines(caplog)) <= MAX_NEW_PER_INTERVAL + 1


def test_what_was_not_logged_is_summarised_once_a_minute_on_the_injected_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    clock = VirtualClock()
    once = LogOnce(logging.getLogger(LOGGER), clock)
    for i in range(12_005):
        once.warning(("unknown_device", i), "skipped payload %d", i)
    assert len(lines(caplog)) == MAX_NEW_PER_INTERVAL
    clock.set(clock.now() + 59)
    once.summarise()
    assert len(lines(caplog)) == MAX_NEW_PER_INTERVAL  # the minute is not over
    clock.set(clock.now() + 1)
    once.summarise()
    once.summarise()  # nothing new since: no second summary
    *_, summary = lines(caplog)
    assert len(lines(caplog)) == MAX_NEW_PER_INTERVAL + 1
    assert summary.startswith("suppressed 11905 more messages for 11905 keys in the last 60 s")


def test_a_repeated_key_is_logged_once_then_counted_in_the_minutes_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    clock = VirtualClock()
    once = LogOnce(logging.getLogger(LOGGER), clock)
    for _ in range(30):
        once.warning(("bad_json", "sensegate/in/dev-1"), "skipped payload from %s", "dev-1")
        clock.set(clock.now() + 1)
    once.warning(("bad_json", "sensegate/in/dev-2"), "skipped payload from %s", "dev-2")
    clock.set(clock.now() + 30)
    # The next warning after the minute brings the summary of the minute before it.
    once.warning(("bad_json", "sensegate/in/dev-1"), "skipped payload from %s", "dev-1")
    assert lines(caplog) == [
        "skipped payload from dev-1 (further occurrences are counted, not logged)",
        "skipped payload from dev-2 (further occurrences are counted, not logged)",
        "suppressed 29 more messages for 1 keys in the last 60 s (counted, not logged)",
    ]


def test_keys_are_remembered_least_recently_used_first_and_reset_rearms_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    once = LogOnce(logging.getLogger(LOGGER), VirtualClock(), max_keys=3, max_new_per_interval=1000)
    for key in ("a", "b", "c", "a", "d"):  # "a" used again: "b" is the least recent when "d" comes
        once.warning(key, "key %s", key)
    once.warning("b", "key %s", "b")  # forgotten: logged again
    once.warning("a", "key %s", "a")  # "a" was remembered, but "b" coming back pushed "c" out, not "a"
    once.warning(("down", "x"), "key %s", "down")
    once.reset(("down",))
    once.warning(("down", "x"), "key %s", "down")
    logged = [m.split(" (")[0] for m in lines(caplog)]
    assert logged == ["key a", "key b", "key c", "key d", "key b", "key down", "key down"]


def test_memory_is_bounded_by_the_keys_it_keeps() -> None:
    once = LogOnce(logging.getLogger(LOGGER), VirtualClock())
    for i in range(5 * MAX_KEYS):
        once.warning(i, "key %d", i)
    assert len(once._seen) == MAX_KEYS


def test_the_runtime_housekeeping_summary_reports_a_flood_that_stopped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    clock = VirtualClock()
    once = LogOnce(logging.getLogger(LOGGER), clock, max_new_per_interval=2)
    for i in range(5):
        once.warning(i, "key %d", i)
    clock.set(clock.now() + 61)
    summarise_all()
    assert lines(caplog)[-1].startswith("suppressed 3 more messages for 3 keys in the last 61 s")
