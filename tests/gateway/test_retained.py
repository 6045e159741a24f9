"""Retained MQTT messages, without a broker: the ingest's commit step and the alert path on a
real store, across restarts (gateway/ingest/retained.py).

A retained message already handled (live or as an earlier replay) is skipped; one never seen
gives its alarm states, marked retained, and they are evaluated like live events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drivers import rtl433, zigbee2mqtt
from edge_rules import load_rules
from gateway.alerts.path import RETAINED_EN, RETAINED_ZH, AlertPath, Transition
from gateway.clock import VirtualClock
from gateway.ingest.mqtt import MqttIngest, _Message
from gateway.ingest.retained import RETAINED_KINDS, retained_events
from gateway.models import ALARM_KINDS, RETAINED, Event, Kind
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import event, minimal_site

CONFIG = parse_config(minimal_site(staff=[{"id": "staff-1", "name": "李值班", "role": "property"}]), environ={})
RULES = load_rules("elderly_care", "smart_community")
SMOKE = "zigbee2mqtt/1号楼/101/烟感"
DOOR = "zigbee2mqtt/1号楼/101/门磁"
FALL = "zigbee2mqtt/1号楼/101/跌倒"
SOS = "zigbee2mqtt/1号楼/101/SOS"
# What an HS1SA in alarm makes zigbee2mqtt publish (tamper is not one of its fields: ignored).
SMOKE_ON = b'{"smoke": true, "battery": 90, "linkquality": 120, "tamper": false}'
SMOKE_OFF = b'{"smoke": false, "battery": 90, "linkquality": 118, "tamper": false}'


def z2m(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


class Rig:
    """Ingest commit step + alert path + store; ``restart()`` opens them again on the same file."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.sqlite3"
        self.clock = VirtualClock()
        self.registry = Registry(CONFIG)
        self.seen: list[Transition] = []
        self._mid = 0
        self._open()

    def _open(self) -> None:
        self.store = Store(self.path)
        self.alerts = AlertPath(
            self.registry, self.store, self.clock, CONFIG.topic_prefix, RULES, 600, self.seen.append
        )
        self.alerts.catch_up()
        self.ingest = MqttIngest(CONFIG, self.registry, self.store, self.clock, {}, self._stored)

    async def _stored(self, events: list[Event]) -> None:
        self.alerts.process(events)

    def restart(self) -> None:
        self.store.close()
        self._open()

    async def deliver(self, *messages: tuple[str, bytes, bool]) -> list[Event]:
        """One batch of ``(topic, payload, retain)``, as paho would hand it over at QoS 0."""
        batch = []
        for topic, payload, retain in messages:
            self._mid += 1
            batch.append(_Message(1, self._mid, 0, False, retain, topic, payload))
        stored, _ = await self.ingest._commit(batch)
        await self._stored(stored)
        return stored

    def raised(self) -> list[Transition]:
        return [t for t in self.seen if t.kind == "raised"]


async def test_a_retained_alarm_never_seen_is_stored_marked_and_raises_an_alert(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    stored = await rig.deliver((SMOKE, SMOKE_ON, True))
    # Only the alarm state: the battery report in the same message is dropped.
    assert [(e.kind, e.values.get(RETAINED)) for e in stored] == [(Kind.SMOKE_ALARM, True)]
    assert stored[0].values["linkquality"] == 120 and stored[0].source == "zigbee2mqtt"
    (t,) = rig.raised()
    assert t.alert.rule == "smoke_alarm" and t.alert.device_id == "101-smoke"
    assert t.alert.message_zh.startswith("【火警】") and t.alert.message_zh.endswith(RETAINED_ZH)
    assert t.alert.message_en.endswith(RETAINED_EN)
    (row,) = rig.store.alert_log(t.alert.id)
    assert row.detail == {"events": [stored[0].seq], RETAINED: True}
    assert rig.store.counters()["retained_new"] == 1


async def test_the_same_retained_message_on_every_subscribe_is_skipped(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.deliver((SMOKE, SMOKE_ON, True))
    assert await rig.deliver((SMOKE, SMOKE_ON, True)) == []  # a reconnect
    rig.restart()
    assert await rig.deliver((SMOKE, SMOKE_ON, True)) == []  # a restart
    assert [t.kind for t in rig.seen] == ["raised"]
    assert rig.store.counters()["retained_skipped"] == 2
    assert rig.store.event_count() == 1


async def test_the_retained_copy_of_a_message_handled_live_is_skipped(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (live,) = [e for e in await rig.deliver((SMOKE, SMOKE_ON, False)) if e.kind is Kind.SMOKE_ALARM]
    assert RETAINED not in live.values
    assert not rig.raised()[0].alert.message_zh.endswith(RETAINED_ZH)
    rig.restart()
    assert await rig.deliver((SMOKE, SMOKE_ON, True)) == []
    assert [t.kind for t in rig.seen] == ["raised"]  # no "updated", no "repeated" notification


async def test_a_live_message_and_its_retained_copy_in_one_batch(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    stored = await rig.deliver((SMOKE, SMOKE_ON, False), (SMOKE, SMOKE_ON, True))
    assert [e.kind for e in stored] == [Kind.SMOKE_ALARM, Kind.BATTERY]
    assert [t.kind for t in rig.seen] == ["raised"]


async def test_an_alarm_a_person_resolved_is_not_raised_again_by_its_retained_message(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.deliver((SMOKE, SMOKE_ON, True))
    (t,) = rig.raised()
    rig.alerts.resolve(t.alert.id, "staff-1", "cli", "厨房炒菜油烟，已确认无火情")
    rig.restart()
    assert await rig.deliver((SMOKE, SMOKE_ON, True)) == []
    assert len(rig.raised()) == 1 and rig.store.alerts(open_only=True) == []


async def test_a_retained_alarm_newer_than_the_last_clear_raises_an_alert(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.deliver((SMOKE, SMOKE_OFF, False))  # seen live: no smoke
    rig.restart()  # down; the detector alarms meanwhile, at QoS 0: only the retained copy is left
    await rig.clock.advance(3600)
    stored = await rig.deliver((SMOKE, SMOKE_ON, True))
    assert [(e.kind, e.values[RETAINED]) for e in stored] == [(Kind.SMOKE_ALARM, True)]
    assert [t.alert.rule for t in rig.raised()] == ["smoke_alarm"]


async def test_a_retained_clear_resolves_an_alarm_that_ended_while_the_gateway_was_away(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.deliver((SMOKE, SMOKE_ON, False))
    rig.restart()
    await rig.deliver((SMOKE, SMOKE_OFF, True))
    assert [t.kind for t in rig.seen] == ["raised", "resolved"]
    assert rig.store.alerts(open_only=True) == []


async def test_a_newer_report_of_the_same_alarm_is_news_like_the_live_message_it_stands_for(tmp_path: Path) -> None:
    """With ``last_seen`` every report differs. A report missed while away is evaluated as it
    would have been live: folded into the open alert, or a new alert once a person closed it."""
    rig = Rig(tmp_path)
    first = z2m(smoke=True, battery=90, last_seen="2026-01-01T00:00:00.000Z")
    later = z2m(smoke=True, battery=90, last_seen="2026-01-01T00:20:00.000Z")
    latest = z2m(smoke=True, battery=89, last_seen="2026-01-01T00:40:00.000Z")
    await rig.deliver((SMOKE, first, False))
    rig.restart()
    await rig.clock.advance(1200)
    await rig.deliver((SMOKE, later, True))
    assert [t.kind for t in rig.seen] == ["raised", "repeated"]  # still smoking after 20 min
    rig.alerts.resolve(rig.seen[-1].alert.id, "staff-1", "cli")
    rig.restart()
    await rig.clock.advance(1200)
    await rig.deliver((SMOKE, latest, True))
    assert [t.kind for t in rig.seen] == ["raised", "repeated", "resolved", "raised"]


async def test_telemetry_in_a_retained_message_is_dropped(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    door = z2m(contact=False, battery=100, voltage=3005, linkquality=120)
    fall = z2m(fall_status="normal", occupancy=True, battery=80)
    stored = await rig.deliver((DOOR, door, True), (FALL, fall, True))
    assert [(e.device_id, e.kind) for e in stored] == [("101-door", Kind.DOOR_OPENED), ("101-fall", Kind.FALL_CLEARED)]
    assert all(e.values[RETAINED] is True for e in stored)
    assert rig.store.counters()["retained_new"] == 2


async def test_an_sos_press_published_while_away_alerts_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    press = z2m(action="emergency", battery=100, linkquality=110)
    await rig.deliver((SOS, press, True))
    rig.restart()
    await rig.deliver((SOS, press, True))
    assert [(t.kind, t.alert.rule) for t in rig.seen] == [("raised", "sos")]
    assert rig.seen[0].alert.severity == 1


async def test_retained_availability_is_taken_every_time_and_commands_never(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    command = json.dumps({"action": "ack", "alert": "abcdef", "by": "staff-1"}).encode()
    for _ in range(2):
        stored = await rig.deliver(
            (f"{SMOKE}/availability", b'{"state": "online"}', True),
            (f"{CONFIG.topic_prefix}/alerts/commands", command, True),
        )
        assert [(e.kind, RETAINED in e.values) for e in stored] == [(Kind.ONLINE, False)]
    assert rig.store.commands() == []  # a retained ack would act again on every subscribe
    assert rig.store.counters()["retained_skipped"] == 2


async def test_retained_messages_of_unknown_devices_are_skipped_and_bad_ones_rejected_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    unknown = ("zigbee2mqtt/9号楼/999/烟感", SMOKE_ON, True)
    bad = (SMOKE, b'{"smoke": "yes"}', True)
    await rig.deliver(unknown, bad)
    await rig.deliver(unknown, bad)
    counters = rig.store.counters()
    assert counters["retained_skipped"] == 3 and counters["malformed.wrong_type"] == 1
    assert "malformed.unknown_device" not in counters
    assert [r["topic"] for r in rig.store.rejected_payloads()] == [SMOKE]
    # A live message from an unknown device is still counted and kept.
    await rig.deliver((unknown[0], SMOKE_ON, False))
    assert rig.store.counters()["malformed.unknown_device"] == 1


def test_every_alarm_state_the_codecs_emit_is_evaluated_when_retained() -> None:
    # Residence and denied access are alarm-lane but not MQTT device states: a radar's stay is
    # activity (its time matters) and a denied card is an instant, neither is kept by a broker.
    assert ALARM_KINDS - {Kind.RESIDENCE, Kind.ACCESS_DENIED} <= RETAINED_KINDS
    emitted = {k for m in zigbee2mqtt.MODELS.values() for k in m.emits}
    emitted |= {k for r in rtl433.MODELS.values() for k in r.emits}
    assert emitted & ALARM_KINDS <= RETAINED_KINDS
    # Each alarm state comes with the state that ends it, so a clear missed while away resolves.
    for alarm, clear in [
        (Kind.SMOKE_ALARM, Kind.SMOKE_CLEAR),
        (Kind.GAS_ALARM, Kind.GAS_CLEAR),
        (Kind.WATER_LEAK, Kind.WATER_CLEAR),
        (Kind.FALL_DETECTED, Kind.FALL_CLEARED),
        (Kind.TAMPER, Kind.TAMPER_CLEAR),
        (Kind.DOOR_OPENED, Kind.DOOR_CLOSED),
    ]:
        assert {alarm, clear} <= RETAINED_KINDS
    assert not {Kind.BATTERY, Kind.PRESENCE, Kind.MOTION, Kind.HEARTBEAT, Kind.VISIT} & RETAINED_KINDS


def test_retained_events_keeps_alarm_states_and_marks_them() -> None:
    events = [event(Kind.DOOR_OPENED, battery=90), event(Kind.BATTERY, battery=90), event(Kind.PRESENCE, present=True)]
    (kept,) = retained_events(events)
    assert kept.kind is Kind.DOOR_OPENED and dict(kept.values) == {"battery": 90, RETAINED: True}
    assert events[0].values == {"battery": 90}  # the input is left alone
