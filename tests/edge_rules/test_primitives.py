"""One primitive at a time, on pure calls: times come from events and advance(now)."""

from __future__ import annotations

import tomllib

import pytest

from edge_rules import Engine
from edge_rules.engine import Subject, _dedup_of
from edge_rules.rules import RuleSet, combine, parse_rule_file
from tests.edge_rules.helpers import CONTEXT, Feed, at, timeline


def rules(text: str) -> RuleSet:
    head = '[settings]\ntimezone = "Asia/Shanghai"\n'
    return combine([("t.toml", parse_rule_file(tomllib.loads(head + text), "t.toml"))])


def make(text: str) -> Engine:
    return Engine(rules(text), None, CONTEXT)


MSG = 'message = { zh = "{place} {who} {count} {duration}", en = "{place_en}{who_en}" }\n'


def test_match_raise_update_resolve() -> None:
    e = make(
        '[[rules]]\nid = "smoke"\ntype = "match"\nseverity = 2\nwhen = { kind = "smoke_alarm" }\n'
        'auto_resolve = { kind = "smoke_clear" }\n' + MSG
    )
    f = Feed()
    d1 = e.feed(f("3-2-501-smoke", "smoke_alarm", at("10:00")))
    assert [d.action for d in d1] == ["raise"]
    assert d1[0].dedup_key == "smoke:3-2-501-smoke"
    assert d1[0].message_zh.startswith("3号楼2单元501室 厨房 住户张伟")
    assert d1[0].evidence == (1,)
    d2 = e.feed(f("3-2-501-smoke", "smoke_alarm", at("10:01")))
    assert [(d.action, d.count) for d in d2] == [("update", 2)]
    assert e.feed(f("3-2-502-smoke", "smoke_clear", at("10:02"))) == []  # another device: not ours
    d3 = e.feed(f("3-2-501-smoke", "smoke_clear", at("10:03")))
    assert [d.action for d in d3] == ["resolve"] and d3[0].evidence == (4,)
    assert e.feed(f("3-2-501-smoke", "smoke_clear", at("10:04"))) == []
    assert [d.action for d in e.feed(f("3-2-501-smoke", "smoke_alarm", at("10:05")))] == ["raise"]


def test_match_conditions() -> None:
    e = make(
        '[[rules]]\nid = "low"\ntype = "match"\nseverity = 4\non_repeat = "ignore"\n'
        'when = { kind = "battery", where = { battery = { lt = 20 }, voltage = { exists = false } } }\n'
        + MSG
        + '[[rules]]\nid = "night_sos"\ntype = "match"\nseverity = 1\nper = "household"\n'
        'when = { kind = "sos_pressed", room = ["卧室"], schedule = { start = "22:00", end = "06:00" } }\n'
        + MSG
        + '[[rules]]\nid = "cards"\ntype = "match"\nseverity = 3\nper = "building"\n'
        'when = { kind = "access_granted", public = true, where = { method = { in = ["card", "qr"] }, '
        'person = { ne = "保安" } } }\n' + MSG
    )
    f = Feed()
    assert e.feed(f("3-2-501-smoke", "battery", at("09:00"), battery=35)) == []
    assert e.feed(f("3-2-501-smoke", "battery", at("09:00"), battery=15, voltage=2700)) == []
    assert e.feed(f("3-2-501-smoke", "battery", at("09:00"), battery="15")) == []  # not a number
    assert [d.action for d in e.feed(f("3-2-501-smoke", "battery", at("09:01"), battery=15))] == ["raise"]
    assert e.feed(f("3-2-501-smoke", "battery", at("09:02"), battery=14)) == []  # raised once
    assert e.feed(f("3-2-501-sos", "sos_pressed", at("12:00"))) == []  # daytime
    assert timeline(e.feed(f("3-2-501-sos", "sos_pressed", at("23:00")))) == [
        ("raise", "night_sos", "night_sos:3-2-501", 1, at("23:00"))
    ]
    assert e.feed(f("3-u2-reader", "access_granted", at("12:00"), method="face")) == []
    assert e.feed(f("3-u2-reader", "access_granted", at("12:00"), method="card", person="保安")) == []
    assert e.feed(f("3-2-501-door", "access_granted", at("12:00"), method="card")) == []  # not public
    assert [d.dedup_key for d in e.feed(f("3-u2-reader", "access_granted", at("12:01"), method="card"))] == ["cards:3"]


def test_absence_fires_once_and_rearms() -> None:
    e = make(
        '[[rules]]\nid = "quiet"\ntype = "absence"\nseverity = 3\nper = "household"\n'
        'when = { family = "door", kind = "door_opened" }\nduration = "24h"\nauto_resolve = true\n' + MSG
    )
    f = Feed()
    assert e.advance(at("08:00")) == []  # first call: every household with a door gets a timer
    assert e.next_deadline() == at("08:00", day=1)
    assert e.feed(f("3-2-502-door", "door_opened", at("09:00"))) == []
    fired = e.advance(at("12:00", day=1))
    assert timeline(fired) == [
        ("raise", "quiet", "quiet:3-2-501", 3, at("08:00", day=1)),
        ("raise", "quiet", "quiet:3-2-601", 3, at("08:00", day=1)),
        ("raise", "quiet", "quiet:3-2-502", 3, at("09:00", day=1)),
    ]
    assert "24小时" in fired[0].message_zh
    assert fired[2].evidence == (1,)
    assert e.advance(at("12:00", day=5)) == []  # raised once, not again
    back = e.feed(f("3-2-502-door", "door_opened", at("13:00", day=5)))
    assert [(d.action, d.dedup_key) for d in back] == [("resolve", "quiet:3-2-502")]
    assert e.next_deadline() == at("13:00", day=6)


def test_absence_per_resident_tier_and_schedule() -> None:
    e = make(
        '[[rules]]\nid = "idle"\ntype = "absence"\nseverity = 2\nper = "resident"\n'
        'applies_to = { lives_alone = true }\nwhen = { kind = ["motion", "door_opened"] }\n'
        'duration = "6h"\nthresholds = { high = "2h", medium = "4h" }\n'
        'schedule = { start = "07:00", end = "21:00" }\n' + MSG
    )
    f = Feed()
    e.feed(f("3-2-502-door", "door_opened", at("19:00")))  # 王 (medium: 4 h)
    e.feed(f("3-2-601-door", "door_opened", at("20:30")))  # 李 (high: 2 h)
    e.feed(f("3-2-501-door", "door_opened", at("20:30")))  # 张 does not live alone: no subject
    out = e.advance(at("23:59", day=1))
    assert timeline(out) == [
        ("raise", "idle", "idle:r-601", 2, at("08:30", day=1)),
        ("raise", "idle", "idle:r-502", 2, at("09:00", day=1)),
    ]
    assert out[0].subject.kind == "resident" and out[0].subject.resident_ids == ("r-601",)
    assert "李建国" in out[0].message_zh and "2小时" in out[0].message_zh


def test_absence_device_supervision_interval_multiple() -> None:
    e = make(
        '[[rules]]\nid = "silent"\ntype = "absence"\nseverity = 4\nper = "device"\n'
        'when = { kind_not = "offline", device = ["3-2-501-smoke", "3-stair-smoke"] }\n'
        'interval_multiple = 3\nduration = "6h"\nauto_resolve = true\non_repeat = "ignore"\n' + MSG
    )
    f = Feed()
    e.feed(f("3-2-501-smoke", "heartbeat", at("00:00")))
    out = e.advance(at("12:00"))
    # 3 × the 1 h report interval; the stairwell detector has none: the 6 h fallback
    assert timeline(out) == [
        ("raise", "silent", "silent:3-2-501-smoke", 4, at("03:00")),
        ("raise", "silent", "silent:3-stair-smoke", 4, at("06:00")),
    ]
    assert e.feed(f("3-2-501-smoke", "offline", at("12:30"))) == []
    assert [d.action for d in e.feed(f("3-2-501-smoke", "heartbeat", at("13:00")))] == ["resolve"]


def test_count_window() -> None:
    e = make(
        '[[rules]]\nid = "denied"\ntype = "count"\nseverity = 3\nwhen = { kind = "access_denied" }\n'
        'count = 3\nwindow = "60s"\n' + MSG
    )
    f = Feed()
    t = at("10:00")
    assert e.feed(f("3-u2-reader", "access_denied", t)) == []
    assert e.feed(f("3-u2-reader", "access_denied", t + 30)) == []
    assert e.feed(f("3-u2-reader", "access_denied", t + 60)) == []  # the first is 60 s old: out
    out = e.feed(f("3-u2-reader", "access_denied", t + 70))
    assert [(d.action, d.count, d.evidence) for d in out] == [("raise", 3, (2, 3, 4))]
    assert " 3 1分钟" in out[0].message_zh
    assert e.advance(t + 200) == [] and e.next_deadline() is None  # window state expired and dropped
    assert [d.action for d in e.feed(f("3-u2-reader", "access_denied", t + 300))] == []


def test_sequence_followed_by() -> None:
    e = make(
        '[[rules]]\nid = "seq"\ntype = "sequence"\nseverity = 3\nper = "household"\n'
        'first = { kind = "door_opened" }\nthen = { kind = "door_closed" }\nwithin = "10s"\n' + MSG
    )
    f = Feed()
    t = at("10:00")
    e.feed(f("3-2-501-door", "door_opened", t))
    assert [d.evidence for d in e.feed(f("3-2-501-door", "door_closed", t + 5))] == [(1, 2)]
    e.feed(f("3-2-502-door", "door_opened", t + 20))
    assert e.feed(f("3-2-502-door", "door_closed", t + 30)) == []  # exactly 10 s: too late


def test_sequence_not_followed_by_with_min_gap() -> None:
    e = make(
        '[[rules]]\nid = "gone"\ntype = "sequence"\nseverity = 2\nper = "household"\n'
        'mode = "not_followed_by"\nfirst = { kind = "door_opened" }\nthen = [{ kind = "door_opened" }, '
        '{ kind = "motion" }]\nmin_gap = "1m"\nwithin = "10m"\nauto_resolve = true\n' + MSG
    )
    f = Feed()
    t = at("23:00")
    e.feed(f("3-2-501-door", "door_opened", t))
    e.feed(f("3-2-501-bed", "motion", t + 30))  # sooner than min_gap: still leaving
    e.feed(f("3-2-502-door", "door_opened", t))
    e.feed(f("3-2-502-bed", "motion", t + 120))  # 502 is back
    out = e.advance(t + 3600)
    assert timeline(out) == [("raise", "gone", "gone:3-2-501", 2, t + 600)]
    assert [d.action for d in e.feed(f("3-2-501-door", "door_opened", t + 4000))] == ["resolve"]
    assert e.next_deadline() is None  # the return was consumed, not taken as a new departure


def test_sequence_not_preceded_by() -> None:
    e = make(
        '[[rules]]\nid = "forced"\ntype = "sequence"\nseverity = 2\nper = "location"\n'
        'mode = "not_preceded_by"\nfirst = { kind = "access_granted" }\nthen = { kind = "door_opened" }\n'
        'within = "30s"\n' + MSG
    )
    f = Feed()
    t = at("14:00")
    e.feed(f("3-u2-reader", "access_granted", t))
    assert e.feed(f("3-u2-door", "door_opened", t + 5)) == []
    out = e.feed(f("3-u2-door", "door_opened", t + 40))
    assert [(d.action, d.dedup_key, d.evidence) for d in out] == [("raise", "forced:3/2//单元门", (3,))]


def test_held_with_quiet_period() -> None:
    e = make(
        '[[rules]]\nid = "ajar"\ntype = "held"\nseverity = 3\nstart = { kind = "door_opened" }\n'
        'end = { kind = "door_closed" }\nduration = "5m"\nauto_resolve = true\n'
        'schedule = { start = "09:00", end = "07:00" }\n' + MSG
    )
    f = Feed()
    e.feed(f("3-u2-door", "door_opened", at("07:10")))  # propped open in the morning rush
    assert e.advance(at("08:59")) == []
    out = e.advance(at("10:00"))
    assert timeline(out) == [("raise", "ajar", "ajar:3-u2-door", 3, at("09:05"))]
    assert e.feed(f("3-u2-door", "door_opened", at("10:01"))) == []  # still held: nothing new
    assert [(d.action, d.evidence) for d in e.feed(f("3-u2-door", "door_closed", at("10:02")))] == [("resolve", (1, 3))]
    e.feed(f("3-u2-door", "door_opened", at("11:00")))
    e.feed(f("3-u2-door", "door_closed", at("11:04")))
    assert e.advance(at("12:00")) == []


def test_correlation_distinct_devices() -> None:
    e = make(
        '[[rules]]\nid = "fire"\ntype = "correlation"\nseverity = 1\nper = "building"\n'
        'when = { kind = "smoke_alarm" }\ndevices = 2\nwindow = "5m"\n' + MSG
    )
    f = Feed()
    t = at("15:00")
    assert e.feed(f("3-2-501-smoke", "smoke_alarm", t)) == []
    assert e.feed(f("3-2-501-smoke", "smoke_alarm", t + 10)) == []  # same detector again
    assert e.feed(f("5-stair-smoke", "smoke_alarm", t + 20)) == []  # other building
    out = e.feed(f("3-2-502-smoke", "smoke_alarm", t + 240))
    assert [(d.action, d.dedup_key, d.count, d.evidence) for d in out] == [("raise", "fire:3", 2, (2, 4))]
    assert out[0].subject.kind == "building" and out[0].message_zh.startswith("3号楼 ")


def test_shared_dedup_escalates_and_downgrades() -> None:
    e = make(
        '[[rules]]\nid = "a"\ntype = "match"\nseverity = 2\ndedup = "x:{subject}"\n'
        'when = { kind = "fall_detected" }\n'
        + MSG
        + '[[rules]]\nid = "b"\ntype = "match"\nseverity = 1\ndedup = "x:{subject}"\n'
        'when = { kind = "residence" }\n'
        + MSG
        + '[[rules]]\nid = "c"\ntype = "match"\nseverity = 4\ndedup = "x:{subject}"\ndowngrade = true\n'
        'when = { kind = "fall_cleared" }\n' + MSG
    )
    f = Feed()
    t = at("03:00")
    e.feed(f("3-2-501-bath", "fall_detected", t))
    up = e.feed(f("3-2-501-bath", "residence", t + 1, present=True))
    assert [(d.action, int(d.severity), d.previous_severity) for d in up] == [("update", 1, 2)]
    again = e.feed(f("3-2-501-bath", "fall_detected", t + 2))
    assert [int(d.severity) for d in again] == [1]  # a repeat never lowers the severity
    down = e.feed(f("3-2-501-bath", "fall_cleared", t + 3))
    assert [(d.action, int(d.severity)) for d in down] == [("update", 4)]
    assert e.open_alerts()["x:3-2-501-bath"]["count"] == 4
    e.close("x:3-2-501-bath")
    assert [d.action for d in e.feed(f("3-2-501-bath", "fall_detected", t + 4))] == ["raise"]


def test_time_never_goes_backwards() -> None:
    e = make(
        '[[rules]]\nid = "seq"\ntype = "sequence"\nseverity = 3\nmode = "not_followed_by"\n'
        'first = { kind = "door_opened" }\nthen = { kind = "door_closed" }\nwithin = "10s"\n' + MSG
    )
    f = Feed()
    t = at("10:00")
    e.feed(f("3-2-501-door", "door_opened", t))
    assert [d.at for d in e.advance(t + 20)] == [t + 10]
    late = e.feed(f("3-2-501-door", "door_opened", t + 5))  # a late event is taken at the engine's time
    assert late == [] and e.now == t + 20 and e.next_deadline() == t + 30


@pytest.mark.parametrize(
    "template",
    [
        "{rule}:{subject}",
        "maintenance:battery:{device}",
        "fire:{building}",
        "100%{{not a field}}:{per}/{household}/{device}",
        "{rule!r}:{subject:>12}",  # refused by the rule check, but the engine would use str.format
        "one key for all",
    ],
)
def test_dedup_key_as_its_template_formats_it(template: str) -> None:
    """The engine words a dedup key without str.format (engine._dedup_of): the same text."""
    subjects = [
        Subject("household", "3-2-501", building="3", household="3-2-501", device="3-2-501-door"),
        Subject("device", "lobby%{1}", building="3", device="lobby%{1}"),
        Subject("building", "3", building="3"),
    ]
    checked = rules('[[rules]]\nid = "r1"\ntype = "match"\nseverity = 1\nwhen = { kind = "sos_pressed" }\n' + MSG)
    rule = checked.rules[0].model_copy(update={"dedup": template})
    for s in subjects:
        expected = template.format(
            rule="r1", subject=s.id, per=s.kind, device=s.device, building=s.building, household=s.household
        )
        assert _dedup_of(rule)(s) == expected
