"""Visit tracking (探访): records from card swipes and check-ins, plans, the overdue alert."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_rules import load_rules
from gateway.alerts.path import AlertPath, Transition
from gateway.care.checkin import checkin_event
from gateway.care.visits import VisitTracker
from gateway.clock import VirtualClock
from gateway.errors import ConfigError, PayloadError
from gateway.models import AlertState, Event, Family, Kind, Location
from gateway.site.checkin import decode_checkin
from gateway.site.config import SiteConfig, parse_config
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

RULES = load_rules("elderly_care", "smart_community")
# Monday 2026-03-02 09:00 in Shanghai.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
DAY = 86_400.0


def site(**overrides: Any) -> dict[str, Any]:
    s = minimal_site()
    s["visitors"] = [
        {
            "id": "v1",
            "name": "张网格",
            "role": "grid_worker",
            "credentials": ["card:123-4567"],
            "households": ["1-1-101"],
        },
        {"id": "v2", "name": "刘志愿", "role": "volunteer", "credentials": ["card:999"]},
    ]
    s.update(overrides)
    return s


CONFIG = parse_config(site(), environ={})
REGISTRY = Registry(CONFIG)


def swipe(device: str, t: float, credential: str = "card:123-4567") -> Event:
    loc = REGISTRY.devices[device].location
    return Event(device, Family.DOOR, Kind.ACCESS_GRANTED, t, t, location=loc, values={"credential": credential})


class Rig:
    """Store, alert path and visit tracker on a virtual clock; ``restart()`` is a reboot."""

    def __init__(self, tmp_path: Path, config: SiteConfig = CONFIG) -> None:
        self.path = tmp_path / "s.db"
        self.config = config
        self.clock = VirtualClock(T0)
        self.seen: list[Transition] = []
        self.store = Store(self.path)
        self._build()

    def _build(self) -> None:
        registry = Registry(self.config)
        self.alerts = AlertPath(registry, self.store, self.clock, "sensegate/gw", RULES, 600, self.seen.append)
        self.alerts.catch_up()
        self.visits = VisitTracker(self.config, self.store, self.clock, self.alerts, RULES)
        self.visits.catch_up()

    def feed(self, *events: Event) -> None:
        stored = self.store.append(list(events), {})
        self.alerts.process(stored)
        self.visits.process(stored)

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        self.alerts.tick()
        self.visits.tick()

    def restart(self) -> None:
        self.store.close()
        self.store = Store(self.path)
        self._build()

    def open_rules(self) -> set[str]:
        return {a.rule for a in self.store.alerts(open_only=True)}


async def test_weekly_plan_overdue_then_a_card_swipe_resolves_it_and_the_welfare_alerts(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.advance(3 * DAY)
    rig.restart()  # a restart inside the week does not reset the plan
    await rig.advance(3.9 * DAY)
    assert "visit_overdue" not in rig.open_rules()
    await rig.advance(1.1 * DAY)  # 8 days without a visit: the weekly (high risk) plan is overdue
    overdue = [t for t in rig.seen if t.alert.rule == "visit_overdue"]
    assert [t.kind for t in overdue] == ["raised"]
    a = overdue[0].alert
    assert (a.dedup_key, int(a.severity), a.resident) == ("visit_overdue:r1", 3, "r1")
    assert a.raised_at == pytest.approx(T0 + 7 * DAY)  # at the plan's deadline, not at the tick
    assert a.message_zh.startswith("【逾期未探访】1号楼1单元101室 独居老人王秀英超过7天未获探访")
    assert {"visit_overdue", "door_not_opened_24h", "no_activity"} <= rig.open_rules()
    rig.restart()
    assert [t.alert.rule for t in rig.seen].count("visit_overdue") == 1  # not raised twice

    # The grid worker swipes a card at the building's door: a visit to the household he looks after.
    rig.feed(swipe("gate-1", rig.clock.now()))
    (visit,) = rig.store.visits()
    assert (visit.household, visit.residents, visit.visitor, visit.method) == ("1-1-101", ("r1",), "v1", "access")
    assert visit.visitor_name == "张网格" and visit.device_id == "gate-1"
    resolved = {t.alert.rule for t in rig.seen if t.kind == "resolved"}
    assert {"visit_overdue", "door_not_opened_24h", "door_not_opened_48h", "no_activity"} <= resolved
    assert rig.open_rules() & {"visit_overdue", "no_activity", "door_not_opened_24h", "door_not_opened_48h"} == set()
    assert not any(rig.alerts.engine.is_open(k) for k in ("no_activity:1-1-101", "door_not_opened_24h:1-1-101"))
    # The next deadline is a week after the visit, and survives a restart.
    rig.restart()
    assert rig.visits.next_deadline() == pytest.approx(visit.at + 7 * DAY)
    assert len(rig.store.visits()) == 1  # replaying the events after a restart records nothing twice


async def test_an_overdue_alert_a_person_resolved_is_not_raised_again_for_the_same_deadline(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.visits.next_deadline() == pytest.approx(T0 + 7 * DAY)
    await rig.advance(8 * DAY)
    (alert,) = [a for a in rig.store.alerts(open_only=True) if a.rule == "visit_overdue"]
    rig.store.save_alerts([replace(alert, state=AlertState.RESOLVED, resolved_at=rig.clock.now())], [])
    rig.restart()
    await rig.advance(DAY)
    assert [a.rule for a in rig.store.alerts() if a.rule == "visit_overdue"] == ["visit_overdue"]
    assert rig.visits.next_deadline() is None  # nothing pending: the timer task does not spin
    # The next visit starts a new period; missing that one raises a new alert.
    rig.feed(swipe("gate-1", rig.clock.now()))
    assert rig.visits.next_deadline() == pytest.approx(rig.clock.now() + 7 * DAY)
    await rig.advance(7 * DAY + 1)
    assert len([a for a in rig.store.alerts(open_only=True) if a.rule == "visit_overdue"]) == 1


async def test_swipes_that_are_not_visits(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(swipe("gate-1", T0 + 60, "card:unknown"))  # not a visitor
    # A visitor, but not assigned to 101: the building's door proves nothing.
    rig.feed(swipe("gate-1", T0 + 120, "card:999"))
    assert rig.store.visits() == []
    cfg = parse_config(site(visits={"building_door_counts": False}), environ={})
    rig2 = Rig(tmp_path / "b", cfg)
    rig2.feed(swipe("gate-1", T0 + 60))
    assert rig2.store.visits() == []


async def test_checkin_by_cli_while_down_counts_after_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.advance(8 * DAY)
    assert "visit_overdue" in rig.open_rules()
    rig.store.close()
    # `sensegate visits checkin` writes the event and the record together, gateway stopped.
    store = Store(rig.path)
    event, row = checkin_event(CONFIG, "1-1-101", "v2", rig.clock.now(), rig.clock.now(), "送米面油", "cli")
    store.append_visit(event, row)
    store.close()
    rig.store = Store(rig.path)
    rig._build()
    (visit,) = rig.store.visits()
    assert (visit.method, visit.note, visit.visitor) == ("cli", "送米面油", "v2")
    assert "visit_overdue" not in rig.open_rules()


def test_per_resident_override_and_coverage(tmp_path: Path) -> None:
    s = site()
    s["residents"] = [
        {"id": "r1", "name": "王秀英", "household": "1-1-101", "lives_alone": True, "visit_every": "3d"},
        {"id": "r2", "name": "赵大爷", "household": "1-1-102", "risk_tier": "medium"},
    ]
    cfg = parse_config(s, environ={})
    rig = Rig(tmp_path, cfg)
    dues = {d.resident.id: d.due - T0 for d in rig.visits.plan()}
    assert dues == {"r1": 3 * DAY}
    cfg = parse_config({**s, "visits": {"lives_alone": False}}, environ={})
    rig = Rig(tmp_path / "b", cfg)
    assert {d.resident.id: d.due - T0 for d in rig.visits.plan()} == {"r1": 3 * DAY, "r2": 14 * DAY}


def test_mqtt_checkin_is_decoded_by_the_registry() -> None:
    topic = "sensegate/gw-test/visits/checkin"
    assert topic in REGISTRY.subscriptions()
    payload = {"household": "1-1-101", "visitor": "v1", "time": "2026-03-02T10:00:00+08:00", "note": "量血压"}
    (ev,) = REGISTRY.decode(topic, json.dumps(payload).encode(), T0)
    assert ev.kind is Kind.VISIT and ev.event_time == T0 + 3600
    assert dict(ev.values) == {"household": "1-1-101", "visitor": "v1", "note": "量血压", "method": "mqtt"}
    assert ev.location == Location("1", "1", "101")
    for bad, reason in (
        (b"{", "bad_json"),
        (b'{"household": "1-1-101"}', "missing_field"),
        (b'{"household": "9-9-999", "visitor": "v1"}', "unknown_reference"),
        (b'{"household": "1-1-101", "visitor": "v1", "time": "yesterday"}', "wrong_type"),
    ):
        with pytest.raises(PayloadError) as info:
            decode_checkin(CONFIG, bad, T0)
        assert info.value.reason == reason


async def test_mqtt_checkin_event_records_a_visit(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.advance(8 * DAY)
    body = json.dumps({"household": "1-1-101", "visitor": "v1"}).encode()
    rig.feed(*REGISTRY.decode("sensegate/gw-test/visits/checkin", body, rig.clock.now()))
    (visit,) = rig.store.visits()
    assert visit.method == "mqtt" and visit.residents == ("r1",)
    assert all(a.state is AlertState.RESOLVED for a in rig.store.alerts() if a.rule == "visit_overdue")


def test_config_mistakes_are_located() -> None:
    bad = site()
    bad["visitors"].append(
        {"id": "v1", "name": "x", "role": "postman", "credentials": ["card:999", "nocolon"], "households": ["9"]}
    )
    with pytest.raises(ConfigError) as info:
        parse_config(bad, environ={})
    text = str(info.value)
    assert "visitors[2].role" in text and "nocolon" in text
    bad["visitors"][2].update(role="family", credentials=["card:999"])
    bad["visits"] = {"include": ["nobody"], "plans": {"high": "soon"}}
    with pytest.raises(ConfigError) as info:
        parse_config(bad, environ={})
    text = str(info.value)
    assert "visits.plans.high" in text
    bad["visits"] = {"include": ["nobody"]}
    with pytest.raises(ConfigError) as info:
        parse_config(bad, environ={})
    text = str(info.value)
    for path in ("visitors[2].id", "visitors[2].households[0]", "visitors[2].credentials[0]", "visits.include[0]"):
        assert path in text
