"""Getting alerts to people: routes, roster, ladders, acknowledgement, durable delivery — on a
virtual clock, with a channel twin that records what it was asked to send and can be "down"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.alerts.channels.base import Notification
from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath, LifecycleError, Transition
from gateway.clock import VirtualClock
from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Alert, AlertState, Event, Family, Kind, Location, Severity
from gateway.site.config import SiteConfig, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

TZ = ZoneInfo("Asia/Shanghai")
MON_9 = datetime(2026, 3, 2, 9, 0, tzinfo=TZ).timestamp()
MON_23 = datetime(2026, 3, 2, 23, 0, tzinfo=TZ).timestamp()


def site(**extra: Any) -> dict[str, Any]:
    s = minimal_site()
    s["residents"][0]["contacts"] = [{"name": "王小明", "phone": "+8613800000001", "relation": "儿子"}]
    s["staff"] = [
        {"id": "day", "name": "李白班", "role": "property", "phone": "+8613800000011"},
        {"id": "night", "name": "赵夜班", "role": "property", "phone": "+8613800000012"},
        {"id": "guard", "name": "钱保安", "role": "security", "phone": "+8613800000013", "buildings": ["1"]},
        {"id": "boss", "name": "孙经理", "role": "manager", "phone": "+8613800000014"},
        {"id": "fix", "name": "周师傅", "role": "maintenance", "phone": "+8613800000015"},
    ]
    s["channels"] = [{"type": "mqtt", "id": "robot"}, {"type": "mqtt", "id": "sms"}]
    s["roster"] = [
        {"person": "day", "start": "08:00", "end": "20:00"},
        {"person": "night", "start": "20:00", "end": "08:00"},
        {"person": "guard"},
    ]
    s["ladders"] = [
        {
            "id": "emergency",
            "repeat": "5m",
            "tiers": [
                {"to": ["family", "on_duty:property"], "channels": ["robot", "sms"]},
                {"after": "2m", "to": ["on_duty:security"], "channels": ["robot", "sms"]},
                {"after": "5m", "to": ["role:manager"], "channels": ["sms"]},
            ],
        },
        {
            "id": "maintenance",
            "repeat": "once",
            "quiet": {"start": "22:00", "end": "07:00"},
            "tiers": [{"to": ["role:maintenance"], "channels": ["robot"]}],
        },
    ]
    s["routes"] = [{"severity": [1, 2], "ladder": "emergency"}, {"severity": [4], "ladder": "maintenance"}]
    s.update(extra)
    return s


class Twin:
    """A channel that records what it sent; ``down`` makes it fail like an unreachable receiver."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Notification] = []
        self.down = False
        self.reject = False
        self.attempts = 0

    async def open(self) -> None:
        return None

    async def send(self, note: Notification) -> None:
        self.attempts += 1
        if self.down:
            raise RetryableSinkError(f"{self.name}: connection refused")
        if self.reject:
            raise RejectedBatchError(f"{self.name}: invalid number")
        self.sent.append(note)

    async def close(self) -> None:
        return None


class Rig:
    def __init__(self, tmp_path: Path, config: SiteConfig, start: float) -> None:
        self.path = tmp_path / "store.db"
        self.config = config
        self.clock = VirtualClock(start)
        self.registry = Registry(config)
        self.twins = {c.id: Twin(c.id) for c in config.channels}
        self.seen: list[Transition] = []
        self._build()

    def _build(self) -> None:
        self.store = Store(self.path)
        self.alerts = AlertPath(
            self.registry,
            self.store,
            self.clock,
            "sensegate/gw",
            site_rules(self.config),
            600,
            self._on,
            flap_threshold=self.config.alerts.flap_threshold,
            flap_window=self.config.alerts.flap_window,
        )
        self.notifier = Notifier(self.config, self.store, self.clock, self.alerts, self.twins)

    def _on(self, t: Transition) -> None:
        self.seen.append(t)
        self.notifier.on_transition(t)

    def feed(self, kind: Kind, family: Family, device: str, **values: Any) -> None:
        room = self.registry.devices[device].location.room
        t = self.clock.now()
        e = Event(device, family, kind, t, t, location=Location("1", "1", "101", room), values=values)
        self.alerts.process(self.store.append([e], {}))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self.notifier.run_ladders())]
        tasks += [asyncio.create_task(self.notifier.run_channel(n)) for n in self.twins]
        await settle()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def advance(self, seconds: float, step: float = 10.0) -> None:
        while seconds > 0:
            await self.clock.advance(min(step, seconds))
            seconds -= step
            await settle()

    def restart(self) -> None:
        self.store.close()
        self._build()

    def to(self, channel: str) -> list[tuple[str, tuple[str, ...]]]:
        return [(n.kind, tuple(r.id for r in n.recipients)) for n in self.twins[channel].sent]


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


def rig(tmp_path: Path, start: float = MON_9, **extra: Any) -> Rig:
    return Rig(tmp_path, parse_config(site(**extra), environ={}), start)


async def test_nobody_acknowledges_each_tier_is_paged_at_its_time_then_the_top_repeats(tmp_path: Path) -> None:
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        family_and_day = ("contact:r1:0", "day")
        assert r.to("sms") == [("raised", family_and_day)]
        await r.advance(119)
        assert len(r.twins["sms"].sent) == 1
        await r.advance(2)
        assert r.to("sms")[1] == ("escalated", ("guard",))
        await r.advance(180)
        assert r.to("sms")[2] == ("escalated", ("boss",))
        await r.advance(300)
        assert r.to("sms")[3] == ("reminder", ("boss",))
        assert r.to("robot") == [("raised", family_and_day), ("escalated", ("guard",))]
    (alert,) = r.store.alerts(open_only=True)
    assert alert.state is AlertState.ESCALATED and alert.notified_at is not None
    first = r.twins["sms"].sent[0]
    assert (
        first.title.startswith("【一级(特别重大)·报警】")
        and alert.id in first.text
        and "告知值班室确认" in first.text
        and "sensegate" not in first.text  # a command line is no instruction for property staff
    )
    actions = [row.action for row in r.store.alert_log(alert.id)]
    assert actions[:3] == ["raised", "paged", "delivered"] and actions.count("paged") == 4


async def test_an_ack_at_tier_two_stops_the_ladder_and_tells_the_channels_already_used(tmp_path: Path) -> None:
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await r.advance(130)
        (alert,) = r.store.alerts(open_only=True)
        r.alerts.acknowledge(alert.id[:6], "guard", "cli", "已上门")
        await r.advance(3600, step=60)
    assert [k for k, _ in r.to("sms")] == ["raised", "escalated", "acknowledged"]
    assert [k for k, _ in r.to("robot")] == ["raised", "escalated", "acknowledged"]
    assert "已由钱保安确认" in r.twins["sms"].sent[-1].text
    acked = r.store.alert(alert.id)
    assert acked is not None and (acked.state, acked.acked_by, acked.acked_via) == (
        AlertState.ACKNOWLEDGED,
        "guard",
        "cli",
    )
    assert r.store.escalations() == []
    # Acknowledged is not resolved: a person closes it with a note, and the rule forgets it.
    done = r.alerts.resolve(alert.id, "guard", "cli", "老人误按，已安抚").alert
    assert (done.state, done.resolved_by, done.resolve_note) == (AlertState.RESOLVED, "guard", "老人误按，已安抚")
    with pytest.raises(LifecycleError, match="already resolved"):
        r.alerts.acknowledge(alert.id, "boss", "cli")
    trail = [(row.action, row.actor, row.channel) for row in r.store.alert_log(alert.id)]
    assert ("acknowledged", "guard", "cli") in trail and ("resolved", "guard", "cli") in trail


async def test_night_time_routing_follows_the_roster(tmp_path: Path) -> None:
    r = rig(tmp_path, start=MON_23)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
    assert r.to("sms") == [("raised", ("contact:r1:0", "night"))]


async def test_a_receiver_down_for_an_hour_gets_each_notification_once_when_it_returns(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.twins["robot"].down = True
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await r.advance(3600, step=30)
        assert r.twins["robot"].sent == [] and r.twins["robot"].attempts > 5
        r.twins["robot"].down = False
        await r.advance(600, step=30)
    keys = [n.key for n in r.twins["robot"].sent]
    assert len(keys) == len(set(keys)) == 2  # tier 0 and tier 1 (the manager tier is SMS only)
    assert all(n.state == "sent" for n in r.store.notifications() if n.channel == "robot")


async def test_a_restart_mid_ladder_continues_without_re_paging_the_tiers_already_notified(tmp_path: Path) -> None:
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await r.advance(60)
    r.restart()  # a crash: the ladder is on disk, tier 0 was paged
    await r.clock.advance(240)  # the gateway was down past the tier-1 deadline
    async with r.running():
        await r.advance(30)
    assert r.to("sms") == [("raised", ("contact:r1:0", "day")), ("escalated", ("guard",)), ("escalated", ("boss",))]


async def test_an_alert_raised_just_before_a_crash_gets_its_ladder_on_start(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.notifier.on_transition = lambda t: None  # type: ignore[method-assign]  # dies before planning
    r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
    r.restart()
    async with r.running():
        await settle()
    assert r.to("sms") == [("raised", ("contact:r1:0", "day"))]


async def test_a_flapping_door_makes_one_alert_with_a_count_and_one_page(tmp_path: Path) -> None:
    r = rig(tmp_path, routes=[{"ladder": "maintenance"}])
    async with r.running():
        for _ in range(250):
            r.feed(Kind.DOOR_OPENED, Family.DOOR, "101-door", secured=True)
            await r.clock.advance(1.2)
            r.feed(Kind.DOOR_CLOSED, Family.DOOR, "101-door")
            await r.clock.advance(1.2)
        await settle()
    (alert,) = r.store.alerts(open_only=True)
    assert alert.rule == "door_forced" and alert.count == 250
    assert r.to("robot") == [("raised", ("fix",))]


async def test_a_flapping_tamper_switch_is_held_in_one_alert_with_a_visible_note_then_settles(tmp_path: Path) -> None:
    r = rig(tmp_path, routes=[{"ladder": "maintenance"}])
    async with r.running():
        for _ in range(20):  # 40 events in 10 minutes
            r.feed(Kind.TAMPER, Family.SMOKE, "101-smoke")
            await r.clock.advance(15)
            r.feed(Kind.TAMPER_CLEAR, Family.SMOKE, "101-smoke")
            await r.clock.advance(15)
        await settle()
        (flapping,) = r.store.alerts(open_only=True)
        assert flapping.flapping and flapping.count == 18  # the third alert holds the rest
        await r.advance(9 * 60)
        r.alerts.tick()
        assert [a.id for a in r.store.alerts(open_only=True)] == [flapping.id]  # clear for 9 min only
        await r.advance(90)
        r.alerts.tick()
        await settle()
    assert r.store.alerts(open_only=True) == []
    kinds = [k for k, _ in r.to("robot")]
    assert kinds == ["raised", "resolved", "raised", "resolved", "raised", "flapping", "resolved"]
    note = next(n for n in r.twins["robot"].sent if n.kind == "flapping")
    assert "抖动" in note.text and "10分钟" in note.text
    (done,) = [a for a in r.store.alerts() if a.id == flapping.id]
    assert done.message_zh.endswith("（反复报警18次后已稳定）") and done.resolved_by == "rule:tamper"


async def test_over_the_hourly_cap_messages_are_summarised_not_dropped(tmp_path: Path) -> None:
    r = rig(tmp_path, notify={"cap_per_hour": 3}, routes=[{"ladder": "maintenance"}], alerts={"flap_threshold": 100})
    async with r.running():
        for _ in range(5):
            r.feed(Kind.TAMPER, Family.SMOKE, "101-smoke")
            r.feed(Kind.TAMPER_CLEAR, Family.SMOKE, "101-smoke")
            await r.advance(60)
        assert [k for k, _ in r.to("robot")] == ["raised", "resolved"] * 3
        await r.advance(3600, step=60)
    summary = [n for n in r.twins["robot"].sent if n.kind == "summary"]
    assert len(summary) == 1 and summary[0].title == "【告警汇总】过去一小时另有2条告警"
    assert summary[0].recipients[0].id == "fix" and summary[0].text.count("\n") == 1


async def test_maintenance_tickets_wait_for_the_end_of_the_quiet_night(tmp_path: Path) -> None:
    r = rig(tmp_path, start=MON_23)
    async with r.running():
        r.feed(Kind.BATTERY_LOW, Family.SMOKE, "101-smoke", battery=5)
        await r.advance(8 * 3600 + 60, step=600)
    (note,) = r.twins["robot"].sent
    sent = [n for n in r.store.notifications() if n.state == "sent"]
    assert note.recipients[0].id == "fix"
    assert datetime.fromtimestamp(sent[0].due_at, TZ).strftime("%H:%M") == "07:00"


async def test_a_rejected_notification_is_recorded_and_not_retried(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.twins["sms"].reject = True
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await r.advance(30)
    assert r.twins["sms"].attempts == 1
    (alert,) = r.store.alerts(open_only=True)
    assert "rejected" in [row.action for row in r.store.alert_log(alert.id)]
    assert r.store.counters()["notify.sms.rejected"] == 1


def test_config_names_unknown_targets_channels_ladders_and_people() -> None:
    from gateway.errors import ConfigError

    s = site()
    s["ladders"][0]["tiers"][0]["to"].append("role:astronaut")
    s["ladders"][0]["tiers"][1]["channels"] = ["pager"]
    s["routes"].append({"ladder": "nope"})
    s["roster"].append({"person": "ghost"})
    with pytest.raises(ConfigError) as info:
        parse_config(s, file="site.toml", environ={})
    found = [str(p) for p in info.value.problems]
    assert any(
        p.startswith("site.toml: ladders['emergency'].tiers[0].to[2]: expected family, visitors") for p in found
    ), found
    assert (
        "site.toml: ladders['emergency'].tiers[1].channels[0]: expected a channel id (robot, sms), found 'pager'"
        in found
    )
    assert "site.toml: routes[2].ladder: expected a ladder id (emergency, maintenance), found 'nope'" in found
    assert "site.toml: roster[3].person: expected a staff id, found 'ghost'" in found


async def test_an_urgent_message_stuck_on_a_dead_uplink_also_goes_out_by_sms(tmp_path: Path) -> None:
    s = site(notify={"fallback": "sms", "fallback_after": "60s"})
    s["ladders"][0]["tiers"][0]["channels"] = ["robot"]
    r = Rig(tmp_path, parse_config(s, environ={}), MON_9)
    r.twins["robot"].down = True
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await r.advance(50)
        assert r.twins["sms"].sent == []
        await r.advance(60)
        assert [(n.kind, n.key.endswith("/fallback")) for n in r.twins["sms"].sent] == [("raised", True)]
        await r.advance(600)
        r.twins["robot"].down = False
        await r.advance(600)
    fallback = [n for n in r.twins["sms"].sent if n.key.endswith("/fallback")]
    assert len(fallback) == len({n.key for n in fallback})  # once per stuck message
    # The robot got everything too, once it was back, in the order it was queued.
    assert [n.kind for n in r.twins["robot"].sent][:2] == ["raised", "escalated"]


def test_channel_ladder_and_visitor_ids_are_unique() -> None:
    from gateway.errors import ConfigError

    s = site()
    s["channels"].append({"type": "mqtt", "id": "sms"})
    s["ladders"].append({**s["ladders"][1]})
    s["visitors"] = [{"id": "v1", "name": "张网格", "role": "grid_worker"}] * 2
    with pytest.raises(ConfigError) as info:
        parse_config(s, file="site.toml", environ={})
    found = [str(p) for p in info.value.problems]
    assert "site.toml: channels[2].id: expected a unique id, found 'sms'" in found
    assert "site.toml: ladders[2].id: expected a unique id, found 'maintenance'" in found
    assert "site.toml: visitors[1].id: expected a unique id, found 'v1'" in found


def test_routes_match_the_pack_a_rule_comes_from(tmp_path: Path) -> None:
    r = rig(tmp_path, routes=[{"packs": ["smart_community"], "ladder": "maintenance"}, {"ladder": "emergency"}])
    assert r.notifier.pack_of["sos"] == "elderly_care" and r.notifier.pack_of["tamper"] == "smart_community"
    tamper = r.notifier.route(Alert("a", "k", "tamper", Severity.SERIOUS, AlertState.RAISED, MON_9, MON_9, "", ""))
    sos = r.notifier.route(Alert("b", "k2", "sos", Severity.CRITICAL, AlertState.RAISED, MON_9, MON_9, "", ""))
    assert tamper is not None and tamper.ladder == "maintenance"
    assert sos is not None and sos.ladder == "emergency"


async def test_a_fall_the_elder_gets_up_from_stops_climbing_and_its_notice_waits_for_the_morning(
    tmp_path: Path,
) -> None:
    # Issue 10, defect 4: the fall was downgraded to 四级 when the elder got up, yet two minutes
    # later the emergency ladder paged its next tier, and the terminal never showed that page.
    r = rig(tmp_path, start=MON_23)
    lines: list[str] = []
    r.notifier.on_page = lines.append
    async with r.running():
        fall = b'{"occupancy":true,"sensor_status":"activity","fall_status":"fall_alarm"}'
        events = r.registry.decode("zigbee2mqtt/1号楼/101/跌倒", fall, r.clock.now())
        r.alerts.process(r.store.append(events, {}))
        await r.advance(20)
        up = b'{"occupancy":true,"sensor_status":"activity","fall_status":"normal"}'
        r.alerts.process(r.store.append(r.registry.decode("zigbee2mqtt/1号楼/101/跌倒", up, r.clock.now()), {}))
        await r.advance(600, step=30)
        (alert,) = r.store.alerts(open_only=True)
        assert alert.severity is Severity.GENERAL and alert.rule == "fall_recovered"
        # Those paged about the fall heard at once that it is over; nobody further up was paged.
        paged = ("contact:r1:0", "night")
        assert r.to("sms") == [("raised", paged), ("downgraded", paged)]  # each by name: an SMS needs a number
        assert [k for k, _ in r.to("robot")] == ["raised", "downgraded"]
        assert not [n for n in r.twins["robot"].sent + r.twins["sms"].sent if n.kind == "escalated"]
        # The 四级 route (maintenance, quiet 22:00–07:00) holds its notice for the morning.
        log = r.store.alert_log(alert.id)
        (held,) = [row for row in log if row.action == "held"]
        assert held.detail["why"] == "quiet" and held.detail["to"] == ["fix"]
        assert datetime.fromtimestamp(float(held.detail["until"]), TZ).strftime("%H:%M") == "07:00"
        assert "replanned" in [row.action for row in log]
    # Every page, and the held one, was shown on the terminal.
    assert any(line.startswith("  → 第1级通知") and "赵夜班" in line for line in lines)
    assert any(line.startswith("  ⏸ 第1级暂未发送 周师傅") and "07:00:00发出" in line for line in lines)


async def test_an_acknowledgement_by_a_family_contact_names_the_contact(tmp_path: Path) -> None:
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        (alert,) = r.store.alerts(open_only=True)
        r.alerts.acknowledge(alert.id, "contact:r1:0", "sms")
        await r.advance(10)
    (note,) = [n for n in r.twins["sms"].sent if n.kind == "acknowledged"]
    assert "已由王小明确认" in note.text


async def test_everyone_paged_by_sms_is_texted_who_acknowledged_except_who_did(tmp_path: Path) -> None:
    # An acknowledgement notice with no recipient reaches nobody on SMS: it goes to the people
    # each channel paged, less the person who acknowledged (they know; an SMS reply gets its answer).
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        (alert,) = r.store.alerts(open_only=True)
        r.alerts.acknowledge(alert.id, "day", "console")
        await r.advance(10)
    assert r.to("sms") == [("raised", ("contact:r1:0", "day")), ("acknowledged", ("contact:r1:0",))]
    (note,) = [n for n in r.twins["sms"].sent if n.kind == "acknowledged"]
    assert "已由李白班确认" in note.text


async def test_an_acknowledgement_by_an_integration_names_it_as_one(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.store.add_api_token("duty-app", "sgt_" + "x" * 40, "duty", r.clock.now())
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        (alert,) = r.store.alerts(open_only=True)
        r.alerts.acknowledge(alert.id, "token:duty-app", "api")
        await r.advance(10)
    (note,) = [n for n in r.twins["sms"].sent if n.kind == "acknowledged"]
    assert "已由系统接口duty-app确认" in note.text and "token:" not in note.text
