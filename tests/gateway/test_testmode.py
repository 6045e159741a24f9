"""Test mode and the walk test without a broker (issue 12): the store's marking, the service's
commands and supervisor on a virtual clock, and a walk test over the demo block driven by the
simulators through the gateway's own ingest."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.alerts.path import AlertPath
from gateway.clock import VirtualClock
from gateway.models import TEST, TEST_MODE, Event, Family, Kind
from gateway.scenario_wire import Broker, ModbusStep, MqttStep, SerialStep, Wire
from gateway.site.config import SiteConfig, load_config, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.testmode.service import DAILY_RULE, OVERRUN_RULE, TestModes
from gateway.testmode.walk import walk
from simulators.devices import AccessControllerSim, DoorSim, FallSim, SimDevice, SmokeSim, SosSim, simulators_for
from simulators.serial_radar import RadarSim
from tests.gateway.factories import minimal_site

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_772_413_200.0  # 2026-03-02 09:00 Asia/Shanghai, a Monday


@dataclass
class Rig:
    config: SiteConfig
    registry: Registry
    store: Store
    clock: VirtualClock
    alerts: AlertPath
    modes: TestModes

    def event(self, device: str, kind: Kind, **values: object) -> Event:
        entry = self.registry.devices[device]
        now = self.clock.now()
        return Event(device, entry.family, kind, now, now, entry.model, entry.location, dict(values))  # type: ignore[arg-type]

    def store_events(self, *events: Event) -> list[Event]:
        stored = self.store.append(list(events), {})
        self.alerts.process(stored)
        return stored

    def apply(self, **command: object) -> dict[str, object]:
        return self.modes.apply({"via": "test", **command})


def _rig(config: SiteConfig, path: Path) -> Rig:
    registry = Registry(config)
    store = Store(path / "store.sqlite3", synchronous="normal")
    clock = VirtualClock(T0)
    rules = site_rules(config)
    alerts = AlertPath(registry, store, clock, config.topic_prefix, rules)
    modes = TestModes(config, registry, store, clock, alerts, timezone=rules.settings.timezone)
    return Rig(config, registry, store, clock, alerts, modes)


def _site() -> SiteConfig:
    site = minimal_site()
    site["staff"] = [
        {"id": "s-zhou", "name": "周师傅", "role": "maintenance"},
        {"id": "s-sun", "name": "孙经理", "role": "manager"},
    ]
    return parse_config(site, file="<test>")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = _rig(_site(), tmp_path)
    yield r
    r.store.close()


def test_the_store_marks_what_a_running_test_mode_covers_and_nothing_else(rig: Rig) -> None:
    assert rig.apply(action="testmode_start", scope="household", target="1-1-101", by="s-zhou", **{"for": 600})["ok"]
    (smoke, gate) = rig.store.append(
        [rig.event("101-smoke", Kind.SMOKE_ALARM), rig.event("main-door", Kind.DOOR_OPENED)], {}
    )
    assert smoke.values == {TEST: True, TEST_MODE: 1} and gate.values == {}
    assert rig.store.events_after(0)[0].values[TEST] is True  # on disk, as forwarded
    rig.clock.set(T0 + 600)  # its end: no longer marked, even before the supervisor noticed
    (late,) = rig.store.append([rig.event("101-smoke", Kind.SMOKE_ALARM)], {})
    assert TEST not in late.values


def test_a_test_mode_survives_a_restart_and_still_ends_by_itself(rig: Rig, tmp_path: Path) -> None:
    assert rig.apply(action="testmode_start", scope="building", target="1", by="s-zhou")["ok"]  # default 1 h
    rig.store.close()
    again = _rig(_site(), tmp_path)
    try:
        (mode,) = again.store.test_modes(open_only=True)
        assert (mode.label, mode.ends_at - mode.started_at) == ("1号楼", 3600.0)
        again.clock.set(T0 + 1800)
        (ev,) = again.store_events(again.event("101-sos", Kind.SOS_PRESSED))
        assert ev.values[TEST] is True and again.store.alerts() == []
        assert [w.rule for w in again.store.would_haves()] == ["sos"]
        assert again.modes.next_deadline() == T0 + 3600
        again.clock.set(T0 + 3600)
        assert again.modes.tick() == []  # quiet for the last 10 minutes: expired, no alert
        (row,) = again.store.test_modes()
        assert (row.ended_at, row.ended_by) == (T0 + 3600, "system")
        assert [r.action for r in again.store.test_mode_log(row.id)] == ["started", "expired"]
        again.store_events(again.event("101-sos", Kind.SOS_PRESSED))  # paging resumed: a real SOS
        assert [a.rule for a in again.store.alerts()] == ["sos"]
    finally:
        again.store.close()


def test_the_board_is_told_when_a_test_mode_begins_ends_or_runs_out(rig: Rig) -> None:
    told: list[int] = []
    rig.modes.on_change = lambda: told.append(len(rig.store.test_modes(open_only=True)))
    assert rig.apply(action="testmode_start", scope="building", target="1", by="s-zhou", **{"for": 600})["ok"]
    assert rig.apply(action="testmode_start", scope="site", by="s-zhou", **{"for": 1200})["ok"]
    assert told == [1, 2]
    assert not rig.apply(action="testmode_end", scope="building", target="9", by="s-zhou")["ok"]
    assert told == [1, 2]  # a refused command changes nothing
    rig.clock.set(T0 + 600)
    assert rig.modes.tick() == [] and told == [1, 2, 1]  # the building's ran out
    assert rig.apply(action="testmode_end", scope="site", by="s-zhou")["ok"] and told == [1, 2, 1, 0]
    assert rig.modes.tick() == [] and told == [1, 2, 1, 0]


def test_commands_name_a_known_staff_member_a_real_scope_and_at_most_24_hours(rig: Rig) -> None:
    refused = rig.apply(action="testmode_start", scope="building", target="1", by="周师傅")
    assert refused["reason"] == "unknown_person" and "s-zhou" in str(refused["error"])  # the name → the id
    assert rig.apply(action="testmode_start", scope="building", target="9", by="s-zhou")["reason"] == "bad_scope"
    too_long = rig.apply(action="testmode_start", scope="site", by="s-zhou", **{"for": 86_401})
    assert too_long["reason"] == "bad_duration"
    assert rig.apply(action="testmode_end", scope="building", target="1", by="s-zhou")["reason"] == "no_test_mode"
    assert rig.store.test_modes() == []
    ok = rig.apply(action="testmode_start", scope="site", by="s-zhou", note="年检", **{"for": 86_400})
    assert ok["ok"] and ok["devices"] == len(rig.config.devices)
    line, alerted = rig.store.test_mode_log(1)
    assert (line.action, line.actor, line.via, line.detail["note"]) == ("started", "s-zhou", "test", "年检")
    assert (alerted.action, alerted.detail["rule"]) == ("alerted", DAILY_RULE)  # 24 h is over the 8 h a day


def test_a_test_mode_that_runs_out_while_in_use_and_too_many_hours_in_a_day_are_alerts(rig: Rig) -> None:
    assert rig.apply(action="testmode_start", scope="building", target="1", by="s-zhou", **{"for": 3600})["ok"]
    rig.clock.set(T0 + 3300)
    rig.store_events(rig.event("101-door", Kind.DOOR_OPENED))  # still at work 5 min before the end
    rig.clock.set(T0 + 3600)
    (t,) = rig.modes.tick()
    assert (t.alert.rule, int(t.alert.severity), t.alert.location.building) == (OVERRUN_RULE, 3, "1")
    assert "测试模式超时未结束" in t.alert.message_zh and "周师傅" in t.alert.message_zh
    assert rig.modes.tick() == []  # once
    # 1 h this morning and 8 h more: 9 h in one day
    assert rig.apply(action="testmode_start", scope="building", target="1", by="s-zhou", **{"for": 8 * 3600})["ok"]
    daily = [a for a in rig.store.alerts() if a.rule == DAILY_RULE]
    assert len(daily) == 1 and "9小时" in daily[0].message_zh


def test_ending_by_id_and_what_the_trail_says(rig: Rig) -> None:
    rig.apply(action="testmode_start", scope="device", target="101-smoke", by="s-zhou")
    rig.clock.set(T0 + 120)
    result = rig.apply(action="testmode_end", id=1, by="s-sun")
    assert result["ok"] and result["ended"][0]["ended_by"] == "s-sun"  # type: ignore[index]
    assert [(r.action, r.actor) for r in rig.store.test_mode_log(1)] == [("started", "s-zhou"), ("ended", "s-sun")]


# ---------------------------------------------------------------------- the walk test


LEFT_OUT = ("1-1-201-smoke", "1-2-102-sos", "2-1-101-door")


def _trigger(sim: SimDevice) -> list[object]:
    """What the installer does at each device: press, open, test, walk past, swipe."""
    if isinstance(sim, AccessControllerSim):
        return [*sim.grant("card:900-0001", "周师傅"), *sim.close()]
    if isinstance(sim, DoorSim):
        return [*sim.open(), *sim.close()]
    if isinstance(sim, SmokeSim):
        return list(sim.test())
    if isinstance(sim, SosSim):
        return list(sim.press())
    if isinstance(sim, FallSim):
        return list(sim.presence(True))
    raise AssertionError(sim)


async def test_a_walk_test_over_the_demo_block_lists_exactly_the_devices_left_out(tmp_path: Path) -> None:
    config = load_config(ROOT / "config" / "demo.toml")
    r = _rig(config, tmp_path)
    wire = Wire(config, r.registry, r.store, r.clock, _on_stored(r), Broker())
    try:
        started = r.apply(action="commission_start", scope="site", by="s-fix")
        assert started["ok"] and started["devices"] == len(config.devices) == 169
        sims = simulators_for(config.devices, config.mqtt, seed=3)
        for sim in sims.values():  # a good mesh and fresh batteries, but for two devices
            sim.battery = 90
            if hasattr(sim, "linkquality"):
                sim.linkquality = 150
        weak, flat = "1-1-101-door", "1-1-102-smoke"
        sims[weak].linkquality = 20  # type: ignore[attr-defined]  # at the far end of the mesh
        sims[flat].battery = 9
        for device in config.devices:
            if device.id in LEFT_OUT:
                continue
            await r.clock.advance(7)
            if device.id in sims:
                for message in _trigger(sims[device.id]):
                    await wire.feed(MqttStep(message.topic, message.payload))  # type: ignore[attr-defined]
            elif device.serial is not None:  # the wired MR60FDA1: someone walks in
                await wire.feed(
                    SerialStep(device.id, RadarSim(device.serial.protocol).report(Kind.PRESENCE, present=True))
                )
            else:  # a Modbus detector answers the gateway's poll
                await wire.feed(ModbusStep(device.id, {}))
        (commission,) = r.store.commissions(open_only=True)
        checklist = walk(config, r.registry, r.store, commission, timezone="Asia/Shanghai")
        assert sorted(i.device_id for i in checklist.not_seen) == sorted(LEFT_OUT)
        assert "未上报" in checklist.text() and "请按测试键" in checklist.text()

        done = r.apply(action="commission_finish", by="s-fix")
        assert done["ok"]
        summary = done["commission"]["summary"]  # type: ignore[index]
        assert sorted(summary["not_seen"]) == sorted(LEFT_OUT) and summary["seen"] == 166
        assert summary["weak"] == [weak] and summary["low_battery"] == [flat]
        # Nobody was paged and no alert was raised: every press was in test mode …
        assert r.store.alerts(limit=1000) == []
        # … and what the presses would have raised is in the report.
        assert {w.rule for w in r.store.would_haves()} >= {"sos", "sos_household", "battery_low"}
        html_text, csv_text = r.store.commission_report(commission.id) or ("", "")
        missing = html_text.split("<h2>未上报的设备（3台）</h2>")[1].split("</ul>")[0]
        assert all(device in missing for device in LEFT_OUT) and missing.count("<li>") == 3
        for words in ("现场调试报告", "调试人员", "周师傅 (s-fix)", "1号楼1单元201室", "信号弱", "低电量", "本应触发"):
            assert words in html_text, words
        rows = list(csv.DictReader(io.StringIO(csv_text.lstrip("\ufeff"))))
        assert len(rows) == 169
        assert sorted(row["设备"] for row in rows if row["结果"] == "未上报") == sorted(LEFT_OUT)
        (mode,) = r.store.test_modes()
        assert mode.ended_by == "s-fix"  # finishing ended the walk test's test mode
    finally:
        r.store.close()


def _on_stored(r: Rig):  # type: ignore[no-untyped-def]
    async def on_stored(events: list[Event]) -> None:
        r.alerts.process(events)

    return on_stored


def test_the_demo_block_is_all_zigbee_rtl433_native_and_two_wired_kinds() -> None:
    """The walk test above triggers every device of config/demo.toml one way or another."""
    config = load_config(ROOT / "config" / "demo.toml")
    families = {d.family for d in config.devices}
    assert families <= {Family.DOOR, Family.SMOKE, Family.SOS, Family.FALL, Family.GAS}
    wired = [d for d in config.devices if d.mqtt is None]
    assert {("serial" if d.serial else "modbus") for d in wired} == {"serial", "modbus"}
