"""The rule index (edge_rules/index.py) changes which rules the engine looks at, never what it
decides: on random sites and random event streams, the indexed engine and the one that shows
every event to every rule (``indexed=False``) give the same decisions in the same order, the
same state changes after every step, the same timers and the same final state — with both
packs, and with random rules built from every kind of condition."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_rules import Context, DeviceInfo, Engine, ResidentInfo, RuleSet
from edge_rules.context import RiskTier
from edge_rules.rules import combine, parse_rule_file
from gateway.models import Event, Family, Kind, Location
from tests.edge_rules.helpers import BOTH, CONTEXT, Feed, at

KINDS = list(Kind)
FAMILIES = list(Family)
TIERS: list[RiskTier] = ["high", "medium", "low"]
ROOMS = ["卫生间", "入户门", "卧室", "厨房", "楼梯间", "单元门"]
BUILDINGS = ["1", "2"]
THRESHOLDS = ["no_activity", "bathroom_stay", "fall_recovery", "night_wandering", "door_not_opened_24h", "g"]
STEPS = [0.0, 1.0, 30.0, 59.0, 61.0, 150.0, 300.0, 1800.0, 3 * 3600.0, 10 * 3600.0, 26 * 3600.0]
MSG = {"zh": "{place} {who} {count} {duration}", "en": "{place_en}{who_en} {count}"}

# ------------------------------------------------------------------ a random site


@st.composite
def residents(draw: st.DrawFn, hid: str) -> tuple[ResidentInfo, ...]:
    out = []
    for i in range(draw(st.integers(0, 2))):
        own = draw(st.lists(st.sampled_from(THRESHOLDS), max_size=2, unique=True))
        thresholds = tuple((name, draw(st.sampled_from([45.0, 600.0, 1200.0, 7200.0]))) for name in own)
        tier: RiskTier = draw(st.sampled_from(TIERS))
        out.append(ResidentInfo(f"{hid}-r{i}", f"居民{i}", draw(st.booleans()), tier, thresholds))
    return tuple(out)


@st.composite
def sites(draw: st.DrawFn) -> Context:
    devices: list[DeviceInfo] = []
    for b in BUILDINGS:
        for n in range(draw(st.integers(1, 3))):
            number = str(101 + n)
            hid = f"{b}-1-{number}"
            people = draw(residents(hid))
            for i in range(draw(st.integers(1, 4))):
                devices.append(
                    DeviceInfo(
                        f"{hid}-d{i}",
                        draw(st.sampled_from([*FAMILIES, None])),
                        household=hid,
                        building=b,
                        location=Location(b, "1", number, draw(st.sampled_from(ROOMS))),
                        residents=people,
                        report_interval=draw(st.sampled_from([None, 600.0, 3600.0])),
                    )
                )
        for i in range(draw(st.integers(0, 2))):
            devices.append(
                DeviceInfo(
                    f"{b}-public-{i}",
                    draw(st.sampled_from([*FAMILIES, None])),
                    building=b,
                    location=Location(b, "1", "", draw(st.sampled_from(["楼梯间", "单元门"]))),
                    report_interval=draw(st.sampled_from([None, 3600.0])),
                )
            )
    return Context(devices)


# ------------------------------------------------------------------ random rules


@st.composite
def conditions(draw: st.DrawFn, context: Context) -> dict[str, Any]:
    def sometimes(n: int) -> bool:
        return draw(st.integers(0, n)) == 0

    cond: dict[str, Any] = {}
    if draw(st.booleans()):
        cond["kind"] = draw(st.lists(st.sampled_from([k.value for k in KINDS]), min_size=1, max_size=3, unique=True))
    if sometimes(4):
        cond["kind_not"] = draw(st.lists(st.sampled_from([k.value for k in KINDS]), min_size=1, max_size=3))
    if sometimes(3):
        cond["family"] = draw(st.lists(st.sampled_from([f.value for f in FAMILIES]), min_size=1, max_size=2))
    if sometimes(4):
        cond["room"] = draw(st.lists(st.sampled_from(ROOMS), min_size=1, max_size=2))
    if sometimes(5):
        households = sorted({d.household for d in context.devices.values()} | {"9-9-999"})
        cond["household"] = draw(st.lists(st.sampled_from(households), min_size=1, max_size=2))
    if sometimes(5):
        cond["building"] = [draw(st.sampled_from(BUILDINGS))]
    if sometimes(6):
        cond["device"] = draw(st.lists(st.sampled_from(sorted(context.devices)), min_size=1, max_size=3))
    if sometimes(4):
        cond["public"] = draw(st.booleans())
    if sometimes(3):
        cond["where"] = draw(
            st.sampled_from(
                [
                    {"present": True},
                    {"present": {"ne": True}},
                    {"battery": {"lt": 20}},
                    {"level": {"gt": 15}},
                    {"state": {"in": ["moving"]}},
                    {"secured": {"exists": False}},
                ]
            )
        )
    if sometimes(6):
        cond["schedule"] = {"start": "22:00", "end": "06:00"}
    return cond


@st.composite
def condition_lists(draw: st.DrawFn, context: Context) -> list[dict[str, Any]]:
    return draw(st.lists(conditions(context), min_size=1, max_size=3))


@st.composite
def rule_sets(draw: st.DrawFn, context: Context) -> RuleSet:
    rules: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["match", "absence", "count", "sequence", "held", "correlation"]))
        rule: dict[str, Any] = {
            "id": f"g{i}",
            "type": kind,
            "severity": draw(st.integers(1, 4)),
            "message": MSG,
            "per": draw(st.sampled_from(["household", "resident", "device", "building", "location"])),
        }
        if draw(st.integers(0, 3)) == 0:
            rule["dedup"] = "shared:{building}"  # rules that share an alert
        if draw(st.integers(0, 2)) == 0:
            rule["applies_to"] = draw(st.sampled_from([{"lives_alone": True}, {"risk_tier": ["high", "medium"]}]))
        if draw(st.integers(0, 2)) == 0:
            rule["auto_resolve"] = draw(condition_lists(context))
        rule["on_repeat"] = draw(st.sampled_from(["update", "ignore"]))
        rule["downgrade"] = draw(st.booleans())
        waits = kind in ("absence", "held", "sequence")
        if kind == "match" or kind in ("count", "correlation"):
            rule["when"] = draw(condition_lists(context))
        if kind == "count":
            rule |= {"count": draw(st.integers(2, 3)), "window": draw(st.sampled_from(["60s", "10m"]))}
        if kind == "correlation":
            rule |= {"devices": 2, "window": "5m"}
        if kind == "absence":
            if draw(st.booleans()):
                rule["when"] = draw(condition_lists(context))
            rule["duration"] = draw(st.sampled_from(["30m", "2h", "26h"]))
            if draw(st.integers(0, 2)) == 0:
                rule["schedule"] = {"start": "07:00", "end": "21:00"}
            if rule["per"] == "device" and draw(st.booleans()):
                rule["interval_multiple"] = 3
        if kind == "held":
            rule |= {"start": draw(condition_lists(context)), "end": draw(condition_lists(context)), "duration": "45m"}
        if kind == "sequence":
            mode = draw(st.sampled_from(["followed_by", "not_followed_by", "not_preceded_by"]))
            rule |= {"first": draw(condition_lists(context)), "then": draw(condition_lists(context)), "mode": mode}
            rule["within"] = draw(st.sampled_from(["60s", "30m"]))
            if draw(st.booleans()):
                rule["min_gap"] = "30s"
        if waits and draw(st.booleans()):
            rule["thresholds"] = {"high": "10m", "medium": "20m"}
        if waits and "interval_multiple" not in rule and draw(st.integers(0, 2)) == 0:
            rule["resident_threshold"] = draw(st.sampled_from(THRESHOLDS))
        if (kind in ("absence", "held") or rule.get("mode") == "not_followed_by") and draw(st.booleans()):
            rule["auto_resolve"] = True
        rules.append(rule)
    data = {"settings": {"timezone": "Asia/Shanghai"}, "rules": rules}
    return combine([("generated.toml", parse_rule_file(data, "generated.toml"))])


# ------------------------------------------------------------------ random streams

Op = tuple[str, Any]
VALUES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("present", st.booleans()),
    ("battery", st.integers(0, 100)),
    ("state", st.sampled_from(["moving", "none", "stationary"])),
    ("level", st.integers(0, 40)),
    ("moving", st.booleans()),
    ("secured", st.booleans()),
]


@st.composite
def streams(draw: st.DrawFn, context: Context) -> list[Op]:
    devices = sorted(context.devices)
    t = at("21:50")
    ops: list[Op] = []
    for seq in range(1, draw(st.integers(1, 40)) + 1):
        t += draw(st.sampled_from(STEPS))
        roll = draw(st.integers(0, 9))
        if roll == 0:
            ops.append(("advance", t))
            t += draw(st.sampled_from(STEPS))
        elif roll == 1:
            ops.append(("close", draw(st.integers(0, 5))))
        device = draw(st.sampled_from([*devices, "ghost"]))  # "ghost": not in the context
        info = context.device(device)
        family = info.family if info is not None and info.family is not None else None
        if family is None or draw(st.integers(0, 5)) == 0:
            family = draw(st.sampled_from(FAMILIES))
        location = info.location if info is not None else Location("1", "1", "", "楼梯间")
        values = {name: draw(values) for name, values in VALUES if draw(st.integers(0, 3)) == 0}
        kind = draw(st.sampled_from(KINDS))
        ops.append(("feed", Event(device, family, kind, t, t, location=location, values=values, seq=seq)))
    ops.append(("advance", t + draw(st.sampled_from(STEPS))))
    return ops


def assert_same(rules: RuleSet, context: Context, ops: list[Op]) -> None:
    every, indexed = (Engine(rules, None, context, indexed=flag) for flag in (False, True))
    for op in ops:
        if op[0] == "close":
            keys = sorted(every.open_alerts())
            if keys:
                every.close(keys[op[1] % len(keys)])
                indexed.close(keys[op[1] % len(keys)])
            decided: tuple[list[Any], list[Any]] = ([], [])
        elif op[0] == "feed":
            decided = (every.feed(op[1]), indexed.feed(op[1]))
        else:
            decided = (every.advance(op[1]), indexed.advance(op[1]))
        assert decided[1] == decided[0], op
        assert indexed.dirty() == every.dirty(), op
        assert indexed.next_deadline() == every.next_deadline()
    assert indexed.export() == every.export()
    assert indexed.timers() == every.timers()
    assert indexed.open_alerts() == every.open_alerts()


SLOW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(st.data())
def test_indexed_decides_as_every_rule_on_both_packs(data: st.DataObject) -> None:
    context = data.draw(sites())
    assert_same(BOTH, context, data.draw(streams(context)))


@SLOW
@given(st.data())
def test_indexed_decides_as_every_rule_on_the_test_block(data: st.DataObject) -> None:
    assert_same(BOTH, CONTEXT, data.draw(streams(CONTEXT)))


@SLOW
@given(st.data())
def test_indexed_decides_as_every_rule_on_random_rules(data: st.DataObject) -> None:
    context = data.draw(sites())
    assert_same(data.draw(rule_sets(context)), context, data.draw(streams(context)))


# ------------------------------------------------------------------ the index itself


def test_every_condition_field_is_indexed() -> None:
    fields = ("when", "first", "then", "start", "end")
    for rule in BOTH:
        expected = [c for name in fields for c in getattr(rule, name, [])] + rule.resolve_conditions()
        found = rule.conditions()
        assert len(found) == len(expected) and {id(c) for c in found} == {id(c) for c in expected}, rule.id


def test_which_rules_an_event_can_trigger() -> None:
    e = Engine(BOTH, None, CONTEXT)
    f = Feed()

    def triggered(device: str, kind: Kind) -> list[str]:
        return [rule.id for rule in e.rules_for(f(device, kind, at("10:00")))]

    # kind_not = ["offline", "visit"]: device_silent sees every other kind, and only it sees a heartbeat
    assert triggered("3-2-502-door", Kind.HEARTBEAT) == ["device_silent"]
    assert "device_silent" not in triggered("3-2-502-door", Kind.OFFLINE)
    # public = true: sos_public and fire_public_area only for a public device
    assert triggered("3-2-502-sos", Kind.SOS_PRESSED) == ["sos", "sos_household", "device_silent"]
    assert triggered("3-u2-door", Kind.SOS_PRESSED) == ["sos_public", "device_silent"]
    assert triggered("3-stair-smoke", Kind.SMOKE_ALARM) == [
        "smoke_alarm",
        "fire_confirmed",
        "fire_public_area",
        "device_silent",
    ]
    # room = 卫生间: bathroom_stay only hears the bathroom radar
    assert "bathroom_stay" in triggered("3-2-502-bath", Kind.PRESENCE)
    assert "bathroom_stay" not in triggered("3-2-502-bed", Kind.PRESENCE)
    # every condition counts: first, then, when, auto_resolve (battery_low clears on battery)
    assert triggered("3-2-502-door", Kind.DOOR_OPENED) == [
        "no_activity",
        "door_not_opened_24h",
        "door_not_opened_48h",
        "night_wandering",
        "door_forced",
        "device_silent",
    ]
    assert triggered("3-2-502-bed", Kind.FALL_CLEARED) == [
        "fall_no_recovery",
        "fall_recovered",
        "fall_suspected",
        "device_silent",
    ]
    assert triggered("3-2-502-sos", Kind.BATTERY) == ["device_silent", "battery_low"]
    # 501 is a family (nobody lives alone): the elderly_care rules have no subject there
    assert triggered("3-2-501-door", Kind.DOOR_OPENED) == ["door_forced", "device_silent"]
    # a device the context does not know is judged by what its event says
    ghost = Event("ghost", Family.DOOR, Kind.DOOR_OPENED, at("10:00"), at("10:00"), location=Location("3", "2", "", ""))
    assert [r.id for r in e.rules_for(ghost)] == ["door_forced", "door_held_open", "device_silent"]
