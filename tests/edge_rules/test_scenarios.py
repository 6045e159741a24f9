"""A household or a building through a timeline, both packs enabled; the decision timeline is
compared with the expected one. Supervision tickets for the quiet simulated devices are
filtered out unless the scenario is about them."""

from __future__ import annotations

from typing import Any

from edge_rules import Decision, Engine
from tests.edge_rules.helpers import BOTH, CONTEXT, Feed, at, engine, timeline

Step = tuple[float, str, str] | tuple[float, str, str, dict[str, Any]]
SUPERVISION = {"device_silent"}
MOVING = {"state": "moving"}  # a radar that sees someone move


def run(script: list[Step], until: float, e: Engine | None = None, keep: set[str] | None = None) -> list[Decision]:
    e = e or engine()
    f = Feed()
    out = e.advance(min(s[0] for s in script)) if script else []
    for step in sorted(script, key=lambda s: s[0]):
        values = step[3] if len(step) == 4 else {}
        out += e.feed(f(step[1], step[2], step[0], **values))
    out += e.advance(until)
    return [d for d in out if (keep is None and d.rule not in SUPERVISION) or (keep is not None and d.rule in keep)]


def test_fall_at_0312_no_recovery() -> None:
    out = run(
        [
            (at("03:12"), "3-2-502-bath", "fall_detected"),
            (at("03:12", seconds=20), "3-2-502-bath", "residence", {"present": True}),
        ],
        at("03:30"),
    )
    assert timeline(out) == [
        ("raise", "fall", "fall:3-2-502", 2, at("03:12")),
        ("update", "fall_no_recovery", "fall:3-2-502", 1, at("03:13")),
    ]
    assert out[1].message_zh == (
        "【跌倒报警升级】3号楼2单元502室 卫生间 独居老人王秀英跌倒后1分钟内无活动，请立即上门处置"
    )


def test_a_radar_reporting_stillness_after_a_fall_is_no_recovery() -> None:
    # After a fall a radar keeps reporting: motion "stationary" / "none", a low body-movement
    # level. None of that is recovery; the alert must still escalate.
    out = run(
        [
            (at("03:12"), "3-2-502-bath", "fall_detected"),
            (at("03:12", seconds=5), "3-2-502-bath", "motion", {"state": "stationary"}),
            (at("03:12", seconds=10), "3-2-502-bath", "motion", {"level": 3}),
            (at("03:12", seconds=30), "3-2-502-bath", "motion", {"state": "none"}),
        ],
        at("03:30"),
    )
    expected = [("raise", "fall", 2), ("update", "fall_no_recovery", 1)]
    assert [(d.action, d.rule, int(d.severity)) for d in out] == expected


def test_moving_again_after_a_fall_is_recovery() -> None:
    out = run(
        [(at("15:00"), "3-2-502-bath", "fall_detected"), (at("15:00", seconds=25), "3-2-502-bath", "motion", MOVING)],
        at("16:00"),
    )
    assert [(d.action, d.rule, int(d.severity)) for d in out] == [("raise", "fall", 2), ("update", "fall_recovered", 4)]


def test_fall_cleared_quickly_is_kept_and_downgraded() -> None:
    out = run(
        [(at("15:00"), "3-2-502-bath", "fall_detected"), (at("15:00", seconds=25), "3-2-502-bath", "fall_cleared")],
        at("16:00"),
    )
    assert timeline(out) == [
        ("raise", "fall", "fall:3-2-502", 2, at("15:00")),
        ("update", "fall_recovered", "fall:3-2-502", 4, at("15:00", seconds=25)),
    ]
    assert "已记录并降级" in out[1].message_zh


def test_fall_in_a_family_household_alerts_without_the_elder_escalation() -> None:
    out = run([(at("03:12"), "3-2-501-bath", "fall_detected")], at("04:00"))
    assert timeline(out) == [("raise", "fall_household", "fall:3-2-501", 2, at("03:12"))]


def test_sos_in_a_family_household_and_in_a_lone_elders_is_one_alert_each() -> None:
    out = run(
        [
            (at("10:00"), "3-2-501-sos", "sos_pressed"),
            (at("10:00"), "3-2-601-sos", "sos_pressed"),
            (at("10:01"), "3-2-601-sos", "sos_pressed"),
        ],
        at("10:05"),
    )
    assert timeline(out) == [
        ("raise", "sos_household", "sos:3-2-501", 1, at("10:00")),
        ("raise", "sos", "sos:3-2-601", 1, at("10:00")),  # the elder's rule words it
        ("update", "sos", "sos:3-2-601", 1, at("10:01")),  # a second press counts once
    ]
    assert out[2].count == 2


def test_sos_at_once() -> None:
    out = run([(at("10:00"), "3-2-601-sos", "sos_pressed")], at("10:00"))
    assert timeline(out) == [("raise", "sos", "sos:3-2-601", 1, at("10:00"))]
    assert out[0].message_zh == "【紧急呼叫】3号楼2单元601室 卧室 独居老人李建国按下紧急呼叫按钮，请立即处置"
    assert out[0].subject.resident_ids == ("r-601",)


def test_door_not_opened_for_26_hours() -> None:
    # Everybody goes out at 08:00; only 502 comes and goes after that, the night before the check.
    script: list[Step] = [(at("08:00"), f"{h}-door", "door_opened") for h in ("3-2-501", "3-2-502", "3-2-601")]
    script += [(at("18:00"), "3-2-502-door", "door_opened")]
    # keep the bedrooms busy so that "no activity" stays quiet
    script += [
        (at(f"{h:02d}:30", day=d), f"{hh}-bed", "motion", MOVING)
        for d in (0, 1)
        for h in range(7, 21)
        for hh in ("3-2-502", "3-2-601")
        if at(f"{h:02d}:30", day=d) < at("10:00", day=1)
    ]
    out = run(script, at("10:00", day=1), keep={"door_not_opened_24h", "door_not_opened_48h"})
    assert timeline(out) == [("raise", "door_not_opened_24h", "door_not_opened_24h:3-2-601", 3, at("08:00", day=1))]
    assert "已24小时未开门" in out[0].message_zh


def test_door_not_opened_48h_and_back() -> None:
    e = engine()
    out = run(
        [(at("08:00"), "3-2-502-door", "door_opened"), (at("09:00", day=2), "3-2-502-door", "door_opened")],
        at("10:00", day=2),
        e=e,
        keep={"door_not_opened_24h", "door_not_opened_48h"},
    )
    assert [d.summary()[:3] for d in out if d.dedup_key.endswith("3-2-502")] == [
        ("raise", "door_not_opened_24h", "door_not_opened_24h:3-2-502"),
        ("raise", "door_not_opened_48h", "door_not_opened_48h:3-2-502"),
        ("resolve", "door_not_opened_24h", "door_not_opened_24h:3-2-502"),
        ("resolve", "door_not_opened_48h", "door_not_opened_48h:3-2-502"),
    ]


def test_two_smoke_detectors_in_building_3_within_4_minutes() -> None:
    out = run(
        [
            (at("14:00"), "3-2-501-smoke", "smoke_alarm"),
            (at("14:04"), "3-2-601-smoke", "smoke_alarm"),
            (at("14:20"), "3-2-501-smoke", "smoke_clear"),
        ],
        at("15:00"),
    )
    assert timeline(out) == [
        ("raise", "smoke_alarm", "smoke_alarm:3-2-501-smoke", 2, at("14:00")),
        ("raise", "smoke_alarm", "smoke_alarm:3-2-601-smoke", 2, at("14:04")),
        ("raise", "fire_confirmed", "fire:3", 1, at("14:04")),
        ("resolve", "smoke_alarm", "smoke_alarm:3-2-501-smoke", 2, at("14:20")),
    ]
    assert out[2].message_zh == "【确认火警】3号楼 5分钟内2个烟感报警，请微型消防站及本楼全体物业人员立即处置"


def test_smoke_far_apart_and_test_button_do_not_confirm_fire() -> None:
    out = run(
        [
            (at("14:00"), "3-2-501-smoke", "smoke_test"),
            (at("14:01"), "3-2-601-smoke", "smoke_test"),
            (at("15:00"), "3-2-501-smoke", "smoke_alarm"),
            (at("15:06"), "3-2-601-smoke", "smoke_alarm"),
        ],
        at("16:00"),
    )
    assert [d.rule for d in out] == ["smoke_alarm", "smoke_alarm"]


def test_public_area_smoke_is_confirmed_fire() -> None:
    out = run(
        [(at("02:00"), "3-stair-smoke", "smoke_alarm"), (at("02:01"), "3-2-501-smoke", "smoke_alarm")], at("02:10")
    )
    assert timeline(out) == [
        ("raise", "smoke_alarm", "smoke_alarm:3-stair-smoke", 2, at("02:00")),
        ("raise", "fire_public_area", "fire:3", 1, at("02:00")),
        ("raise", "smoke_alarm", "smoke_alarm:3-2-501-smoke", 2, at("02:01")),
        ("update", "fire_confirmed", "fire:3", 1, at("02:01")),
    ]


def test_night_wandering() -> None:
    out = run(
        [
            (at("23:40"), "3-2-502-door", "door_opened"),
            (at("23:40", seconds=5), "3-2-502-door", "door_closed"),
            (at("01:30", day=1), "3-2-502-door", "door_opened"),
        ],
        at("02:00", day=1),
    )
    assert timeline(out) == [
        ("raise", "night_wandering", "night_wandering:3-2-502", 2, at("00:10", day=1)),
        ("resolve", "night_wandering", "night_wandering:3-2-502", 2, at("01:30", day=1)),
    ]
    assert "夜间开门外出，已30分钟未归" in out[0].message_zh


def test_night_door_with_movement_inside_is_not_wandering() -> None:
    out = run(
        [
            (at("23:40"), "3-2-601-door", "door_opened"),
            (at("23:45"), "3-2-601-bed", "motion", MOVING),
            (at("21:30"), "3-2-502-door", "door_opened"),
        ],
        at("02:00", day=1),
    )
    assert out == []


def test_bathroom_stay_thresholds_per_risk_tier() -> None:
    out = run(
        [
            (at("10:00"), "3-2-502-bath", "residence", {"present": True}),
            (at("10:00"), "3-2-601-bath", "residence", {"present": True}),
            (at("10:00"), "3-2-501-bath", "residence", {"present": True}),
            (at("11:00"), "3-2-601-bath", "residence", {"present": False}),
        ],
        at("12:00"),
    )
    assert timeline(out) == [
        ("raise", "bathroom_stay", "bathroom_stay:3-2-601", 2, at("10:30")),  # high risk: 30 min
        ("raise", "bathroom_stay", "bathroom_stay:3-2-502", 2, at("10:45")),  # medium: 45 min
        ("resolve", "bathroom_stay", "bathroom_stay:3-2-601", 2, at("11:00")),
    ]


def test_no_activity_in_daytime_and_sleeping_late_is_fine() -> None:
    # 502 (medium, 4 h): last seen 20:30, sleeps until 09:30: 0.5 h + 2.5 h < 4 h — no alert.
    # 601 (high, 3 h): last seen 20:30, nothing the next day: due at 07:00 + 2.5 h.
    out = run(
        [
            (at("20:30"), "3-2-502-bed", "motion", MOVING),
            (at("20:30"), "3-2-601-bed", "motion", MOVING),
            (at("09:30", day=1), "3-2-502-bed", "motion", MOVING),
            (at("12:00", day=1), "3-2-502-bed", "motion", MOVING),
        ],
        at("12:30", day=1),
        keep={"no_activity"},
    )
    assert timeline(out) == [("raise", "no_activity", "no_activity:3-2-601", 2, at("09:30", day=1))]
    assert "白天已3小时无活动" in out[0].message_zh


def test_access_denied_and_forced_door() -> None:
    t = at("13:00")
    script: list[Step] = [(t + i * 10, "3-u2-reader", "access_denied", {"credential": "card:1"}) for i in range(5)]
    script += [
        (t + 100, "3-u2-reader", "access_granted", {"credential": "card:2"}),
        (t + 105, "3-u2-door", "door_opened"),
        (t + 110, "3-u2-door", "door_closed"),
        (t + 400, "3-u2-door", "door_opened"),  # someone walking out: no grant, not forced
        (t + 450, "3-u2-door", "door_closed"),
        (t + 600, "3-u2-reader", "door_opened", {"secured": True}),  # the controller: opened while locked
    ]
    out = run(script, t + 700)
    assert timeline(out) == [
        ("raise", "access_denied_repeated", "access_denied_repeated:3-u2-reader", 3, t + 40),
        ("raise", "door_forced", "door_forced:3-u2-reader", 2, t + 600),
    ]


def test_door_held_open_and_tamper() -> None:
    t = at("13:00")
    out = run(
        [
            (t, "3-u2-door", "door_opened"),
            (t + 400, "3-u2-door", "door_closed"),
            (t + 500, "3-u2-reader", "tamper"),
            (t + 560, "3-u2-reader", "tamper"),
            (t + 600, "3-u2-reader", "tamper_clear"),
        ],
        t + 700,
    )
    assert [d.summary()[:2] for d in out if d.rule != "door_forced"] == [
        ("raise", "door_held_open"),
        ("resolve", "door_held_open"),
        ("raise", "tamper"),
        ("resolve", "tamper"),
    ]


def test_maintenance_ticket_raised_once() -> None:
    t = at("09:00")
    script: list[Step] = [(t + 60 * i, "3-2-501-smoke", "battery_low") for i in range(60)]
    script += [
        (t + 3700, "3-2-501-smoke", "sensor_fault"),
        (t + 3800, "3-2-501-smoke", "sensor_fault"),
        (t + 3900, "3-2-501-smoke", "battery", {"battery": 100}),
    ]
    out = run(script, t + 4000)
    assert [d.summary()[:3] for d in out] == [
        ("raise", "battery_low", "maintenance:battery:3-2-501-smoke"),
        ("raise", "sensor_fault", "maintenance:fault:3-2-501-smoke"),
        ("resolve", "battery_low", "maintenance:battery:3-2-501-smoke"),
    ]
    assert all(d.severity == 4 for d in out)


def test_silent_device_becomes_one_offline_ticket() -> None:
    e = Engine(BOTH, None, CONTEXT)
    f = Feed()
    e.advance(at("00:00"))
    out = [d for d in e.advance(at("23:00")) if d.subject.device == "3-2-502-sos"]
    assert timeline(out) == [("raise", "device_silent", "maintenance:offline:3-2-502-sos", 4, at("03:00"))]
    assert e.feed(f("3-2-502-sos", "offline", at("23:10"))) == []  # same ticket: folded silently
    back = [d for d in e.feed(f("3-2-502-sos", "heartbeat", at("23:30"))) if d.action == "resolve"]
    assert [d.dedup_key for d in back] == ["maintenance:offline:3-2-502-sos"]


def test_the_offline_ticket_says_what_resolved_it() -> None:
    # device_offline and device_silent share the ticket; device_silent also counts "online" as
    # a report. The bridge's online must still say 已在线 (device_offline comes first in the
    # pack), any other report after a silence 已恢复上报.
    e = Engine(BOTH, None, CONTEXT)
    f = Feed()
    e.advance(at("00:00"))
    e.advance(at("23:00"))  # 3-2-502-sos silent since midnight: device_silent raised at 03:00
    e.feed(f("3-2-502-sos", "offline", at("23:10")))
    (online,) = [d for d in e.feed(f("3-2-502-sos", "online", at("23:30"))) if d.action == "resolve"]
    assert (online.rule, online.dedup_key) == ("device_offline", "maintenance:offline:3-2-502-sos")
    assert online.message_zh.endswith("设备3-2-502-sos已在线")
    # the door's ticket (silent since midnight, then offline too) ends with a plain report
    assert e.feed(f("3-2-502-door", "offline", at("23:40"))) == []
    (report,) = [d for d in e.feed(f("3-2-502-door", "heartbeat", at("23:50"))) if d.action == "resolve"]
    assert (report.rule, report.dedup_key) == ("device_silent", "maintenance:offline:3-2-502-door")
    assert report.message_zh.endswith("设备3-2-502-door已恢复上报")


def test_restart_in_the_middle_of_a_24h_window() -> None:
    """Killed 10 h into a 24 h window, down for 20 h: the alert comes on boot, at the original deadline, once."""
    e, f = engine(), Feed()
    e.advance(at("07:00"))
    e.feed(f("3-2-502-door", "door_opened", at("08:00")))
    e.advance(at("18:00"))
    saved = dict(e.dirty())
    again = engine(state=[(k, v) for k, v in saved.items() if v is not None])
    out = [d for d in again.advance(at("14:00", day=1)) if d.rule == "door_not_opened_24h"]
    assert [(d.dedup_key, d.at) for d in out] == [
        ("door_not_opened_24h:3-2-601", at("07:00", day=1)),
        ("door_not_opened_24h:3-2-502", at("08:00", day=1)),
    ]
    assert [d for d in again.advance(at("18:00", day=1)) if d.rule == "door_not_opened_24h"] == []
