"""Test events (a device in test mode, docs/installer.md) calm but never alarm (engine.py).

The installer's fear in issue 12: a test press is a real 二级 火警, two presses in one building
within five minutes a 一级 confirmed fire that calls out the 微型消防站."""

from __future__ import annotations

from edge_rules import Engine
from gateway.models import TEST, Kind
from tests.edge_rules.helpers import BOTH, CONTEXT, Feed, at, engine, timeline


def test_two_detectors_tested_in_one_building_raise_nothing() -> None:
    e, ev = engine(), Feed()
    out = e.feed(ev("3-2-502-smoke", Kind.SMOKE_ALARM, at("10:00"), **{TEST: True}))
    out += e.feed(ev("3-2-601-smoke", Kind.SMOKE_ALARM, at("10:02"), **{TEST: True}))
    out += e.feed(ev("3-stair-smoke", Kind.SMOKE_ALARM, at("10:03"), **{TEST: True}))  # public: 确认火警 at once
    assert out == []


def test_a_tested_detector_never_confirms_a_real_alarm_but_two_real_ones_do() -> None:
    e, ev = engine(), Feed()
    tested = ev("3-2-502-smoke", Kind.SMOKE_ALARM, at("10:00"), **{TEST: True})
    real = ev("3-2-601-smoke", Kind.SMOKE_ALARM, at("10:02"))
    assert e.feed(tested) == []
    assert timeline(e.feed(real)) == [("raise", "smoke_alarm", "smoke_alarm:3-2-601-smoke", 2, at("10:02"))]
    second = ev("3-2-501-smoke", Kind.SMOKE_ALARM, at("10:04"))
    decisions = e.feed(second)
    assert [d.rule for d in decisions] == ["smoke_alarm", "fire_confirmed"]
    assert decisions[1].evidence == (real.seq, second.seq)  # the tested one is no evidence


def test_test_presses_and_falls_raise_nothing_and_arm_nothing() -> None:
    e, ev = engine(), Feed()
    t = at("10:00")
    out = e.feed(ev("3-2-502-sos", Kind.SOS_PRESSED, t, **{TEST: True}))
    out += e.feed(ev("3-2-502-bath", Kind.FALL_DETECTED, t + 5, **{TEST: True}))
    out += e.feed(ev("3-u2-door", Kind.DOOR_OPENED, t + 10, secured=True, **{TEST: True}))  # forced? a test
    out += [d for k in range(6) for d in e.feed(ev("3-u2-reader", Kind.ACCESS_DENIED, t + 20 + k, **{TEST: True}))]
    out += e.advance(t + 3600)  # no fall escalation at +60 s, no door held open
    assert [d.rule for d in out if d.action != "resolve"] == []


def test_a_test_event_still_says_the_device_is_alive_and_clears_what_it_clears() -> None:
    e, ev = engine(), Feed()
    t = at("10:00")
    e.advance(t)
    # a real alarm, cleared by the detector while the building is in test mode: 已恢复
    e.feed(ev("3-2-502-smoke", Kind.SMOKE_ALARM, t))
    cleared = e.feed(ev("3-2-502-smoke", Kind.SMOKE_CLEAR, t + 60, **{TEST: True}))
    assert timeline(cleared) == [("resolve", "smoke_alarm", "smoke_alarm:3-2-502-smoke", 2, t + 60)]
    # the gas detector's test reports (every 50 min) keep device_silent (3 × 1 h) away
    for k in range(1, 6):
        e.feed(ev("3-2-502-gas", Kind.HEARTBEAT, t + k * 3000, **{TEST: True}))
    assert "device_silent" not in {d.rule for d in e.advance(t + 5 * 3000 + 3600)}


def test_the_shadow_engine_takes_tests_as_real() -> None:
    """What the alert path records as "would have raised"."""
    shadow, ev = Engine(BOTH, None, CONTEXT, tests_are_real=True), Feed()
    out = shadow.feed(ev("3-2-502-smoke", Kind.SMOKE_ALARM, at("10:00"), **{TEST: True}))
    out += shadow.feed(ev("3-2-601-smoke", Kind.SMOKE_ALARM, at("10:02"), **{TEST: True}))
    assert [d.rule for d in out] == ["smoke_alarm", "smoke_alarm", "fire_confirmed"]
