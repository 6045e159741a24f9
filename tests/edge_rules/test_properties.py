"""Properties of the engine over random event streams (hypothesis):

- determinism: the same events and advances give the same decisions, in the same order;
- batching: extra ``advance`` calls between events change nothing;
- crash consistency: restoring from the saved state after any operation and replaying the
  rest gives exactly the decisions of the run that never crashed;
- one open alert per dedup key: never two raises without a resolve (or close) between.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_rules import Decision, Engine
from gateway.models import TEST, Event, Kind
from tests.edge_rules.helpers import BOTH, CONTEXT, at

DEVICES = [
    "3-2-502-door",
    "3-2-502-bath",
    "3-2-502-bed",
    "3-2-502-smoke",
    "3-2-601-door",
    "3-2-601-bath",
    "3-2-601-smoke",
    "3-2-501-sos",
    "3-stair-smoke",
    "3-u2-reader",
    "3-u2-door",
]
KINDS = [
    Kind.DOOR_OPENED,
    Kind.DOOR_CLOSED,
    Kind.ACCESS_GRANTED,
    Kind.ACCESS_DENIED,
    Kind.FALL_DETECTED,
    Kind.FALL_CLEARED,
    Kind.RESIDENCE,
    Kind.MOTION,
    Kind.PRESENCE,
    Kind.SMOKE_ALARM,
    Kind.SMOKE_CLEAR,
    Kind.SOS_PRESSED,
    Kind.BATTERY,
    Kind.BATTERY_LOW,
    Kind.TAMPER,
    Kind.TAMPER_CLEAR,
    Kind.OFFLINE,
    Kind.HEARTBEAT,
]
STEPS = [0.0, 1.0, 10.0, 30.0, 59.0, 61.0, 300.0, 1800.0, 3 * 3600.0, 10 * 3600.0, 26 * 3600.0]

Op = tuple[str, Any]


@st.composite
def streams(draw: st.DrawFn) -> list[Op]:
    n = draw(st.integers(min_value=1, max_value=40))
    t = at("21:50")
    ops: list[Op] = []
    for seq in range(1, n + 1):
        t += draw(st.sampled_from(STEPS))
        if draw(st.integers(0, 5)) == 0:
            ops.append(("advance", t))
            t += draw(st.sampled_from(STEPS))
        device = draw(st.sampled_from(DEVICES))
        kind = draw(st.sampled_from(KINDS))
        values: dict[str, bool | int] = {}
        if kind in (Kind.RESIDENCE, Kind.PRESENCE):
            values["present"] = draw(st.booleans())
        if kind is Kind.BATTERY:
            values["battery"] = draw(st.integers(0, 100))
        if draw(st.integers(0, 3)) == 0:
            values[TEST] = True  # from a device in test mode
        info = CONTEXT.devices[device]
        assert info.family is not None
        ops.append(("feed", Event(device, info.family, kind, t, t, location=info.location, values=values, seq=seq)))
    ops.append(("advance", t + draw(st.sampled_from(STEPS))))
    return ops


def apply(e: Engine, op: Op) -> list[Decision]:
    return e.feed(op[1]) if op[0] == "feed" else e.advance(op[1])


def run(ops: list[Op]) -> list[Decision]:
    e = Engine(BOTH, None, CONTEXT)
    return [d for op in ops for d in apply(e, op)]


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(streams())
def test_same_stream_same_decisions(ops: list[Op]) -> None:
    assert run(ops) == run(ops)


@FAST
@given(streams(), st.data())
def test_batching_does_not_matter(ops: list[Op], data: st.DataObject) -> None:
    """An advance to any time up to the next event decides what the event would have decided."""
    feeds = [op for op in ops if op[0] == "feed"]
    final = ops[-1]
    plain = run([*feeds, final])
    extra: list[Op] = []
    last = feeds[0][1].event_time
    for op in feeds:
        t = op[1].event_time
        if data.draw(st.booleans()):
            extra.append(("advance", data.draw(st.floats(min_value=last, max_value=t))))
        extra.append(op)
        last = t
    assert run([*extra, final]) == plain


@FAST
@given(streams(), st.data())
def test_crash_at_any_point_gives_the_same_decisions(ops: list[Op], data: st.DataObject) -> None:
    e = Engine(BOTH, None, CONTEXT)
    saved: dict[str, Any] = {}
    snapshots: list[dict[str, Any]] = [{}]
    decisions: list[list[Decision]] = []
    for op in ops:
        decisions.append(apply(e, op))
        for key, value in e.dirty():
            if value is None:
                saved.pop(key, None)
            else:
                saved[key] = value
        snapshots.append(json.loads(json.dumps(saved)))  # what the store would hold
    crash = data.draw(st.integers(0, len(ops)))
    restored = Engine(BOTH, None, CONTEXT, state=list(snapshots[crash].items()))
    replay = [d for op in ops[crash:] for d in apply(restored, op)]
    assert replay == [d for ds in decisions[crash:] for d in ds]
    assert restored.export() == e.export()


@FAST
@given(streams())
def test_no_second_raise_while_open(ops: list[Op]) -> None:
    open_keys: set[str] = set()
    for d in run(ops):
        if d.action == "raise":
            assert d.dedup_key not in open_keys
            open_keys.add(d.dedup_key)
        elif d.action == "update":
            assert d.dedup_key in open_keys
        else:
            open_keys.remove(d.dedup_key)


@FAST
@given(streams())
def test_test_events_never_raise_count_or_arm(ops: list[Op]) -> None:
    """Whatever a test event is, no alert is raised or made worse because of it: it is never the
    evidence of a raise or an update, except as the last sign of life an absence counts from."""
    tests = {op[1].seq for op in ops if op[0] == "feed" and op[1].values.get(TEST) is True}
    types = {r.id: r.type for r in BOTH.rules}
    for d in run(ops):
        if d.action != "resolve" and types[d.rule] != "absence":
            assert not tests.intersection(d.evidence), d


def test_export_is_plain_json() -> None:
    e = Engine(BOTH, None, CONTEXT)
    e.advance(at("08:00"))
    entries = e.export()
    assert entries and json.loads(json.dumps(entries)) == [list(x) for x in entries]
    assert e.next_deadline() == min(t for t, _, _ in e.timers())
