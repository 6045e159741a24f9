"""The alert path over the rule engine: decisions become alerts, durably, across restarts."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pytest import MonkeyPatch

from edge_rules import load_rules
from gateway.alerts import path as alert_path
from gateway.alerts.path import AlertPath, Transition
from gateway.clock import VirtualClock
from gateway.errors import StoreError
from gateway.models import AlertState, Event, Family, Kind, Location
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

RULES = load_rules("elderly_care", "smart_community")
REGISTRY = Registry(parse_config(minimal_site(), environ={}))
# Monday 2026-03-02 09:00 in Shanghai: inside the daytime schedule of the welfare rules.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
HOUSE = Location("1", "1", "101")


def ev(kind: Kind, family: Family, device: str, t: float, **values: object) -> Event:
    room = REGISTRY.devices[device].location.room
    return Event(device, family, kind, t, t, location=Location("1", "1", "101", room), values=values)  # type: ignore[arg-type]


class Rig:
    """A store, an alert path and a virtual clock; ``restart()`` is a crash and a reboot."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "s.db"
        self.clock = VirtualClock(T0)
        self.seen: list[Transition] = []
        self.store = Store(self.path)
        self.alerts = self._path()

    def _path(self) -> AlertPath:
        return AlertPath(REGISTRY, self.store, self.clock, "sensegate/gw", RULES, 600, self.seen.append)

    def feed(self, *events: Event) -> list[Transition]:
        return self.alerts.process(self.store.append(list(events), {}))

    def restart(self) -> int:
        self.store.close()
        self.store = Store(self.path)
        self.alerts = self._path()
        return self.alerts.catch_up()

    def timeline(self) -> list[tuple[str, str, int]]:
        return [(t.kind, t.alert.rule, int(t.alert.severity)) for t in self.seen]


def test_sos_of_an_elder_living_alone_raises_one_critical_alert(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (t,) = rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0))
    a = t.alert
    assert (t.kind, a.rule, int(a.severity), a.resident, a.dedup_key) == ("raised", "sos", 1, "r1", "sos:1-1-101")
    assert a.message_zh == "【紧急呼叫】1号楼1单元101室 卧室 独居老人王秀英按下紧急呼叫按钮，请立即处置"
    assert a.location == Location("1", "1", "101", "卧室")
    assert "SOS pressed" in a.message_en and "lives alone" in a.message_en
    topics = [m.topic for m in rig.store.outbox_batch("mqtt")]
    assert topics == ["sensegate/gw/alerts/events", f"sensegate/gw/alerts/open/{a.id}"]
    # A second press folds into the open alert.
    (t2,) = rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 30))
    assert (t2.kind, t2.alert.id, t2.alert.count) == ("updated", a.id, 2)


def test_smoke_repeats_fold_and_a_clear_resolves(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", T0))
    rig.feed(ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", T0 + 5))
    rig.feed(ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", T0 + 5 + 601))
    rig.feed(ev(Kind.SMOKE_CLEAR, Family.SMOKE, "101-smoke", T0 + 700))
    assert [k for k, _, _ in rig.timeline()] == ["raised", "updated", "repeated", "resolved"]
    assert rig.seen[-1].alert.message_zh.startswith("【火警解除】")
    assert len({t.alert.id for t in rig.seen}) == 1
    assert rig.store.alerts(open_only=True) == []
    resolved = [m for m in rig.store.outbox_batch("mqtt") if m.retain][-1]
    assert resolved.payload == ""  # clears the retained open-alert state


def test_fall_without_recovery_escalates_after_60_s(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    rig.clock.set(T0 + 59)
    assert rig.alerts.tick() == []
    rig.clock.set(T0 + 61)
    (t,) = rig.alerts.tick()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]
    assert t.alert.state is AlertState.ESCALATED and "无活动" in t.alert.message_zh
    # The radar still reporting the fall folds in without rewording the escalated alert.
    (t2,) = rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0 + 70))
    assert (t2.kind, t2.alert.rule, int(t2.alert.severity), t2.alert.count) == ("updated", "fall_no_recovery", 1, 3)
    assert t2.alert.message_zh == t.alert.message_zh


def test_fall_that_recovers_is_kept_and_downgraded(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    rig.feed(ev(Kind.FALL_CLEARED, Family.FALL, "101-fall", T0 + 20))
    rig.clock.set(T0 + 300)
    rig.alerts.tick()
    assert rig.timeline() == [("raised", "fall", 2), ("downgraded", "fall_recovered", 4)]
    assert [a.state for a in rig.store.alerts()] == [AlertState.RAISED]  # on record, still open


def test_events_stored_before_a_crash_raise_their_alerts_on_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0))
    # The crash: events committed (and acknowledged) but the alert path never ran on them.
    rig.store.append([ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 1)], {})
    assert rig.restart() == 2  # the quiet door event was not checkpointed: replayed, harmlessly
    assert rig.timeline() == [("raised", "sos", 1)]
    assert rig.restart() == 0  # idempotent
    assert len(rig.store.alerts()) == 1


def test_the_rules_state_is_saved_behind_the_alerts_and_rebuilt_as_it_was(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.DOOR_CLOSED, Family.DOOR, "101-door", T0))
    rig.alerts.checkpoint()
    saved = rig.store.rule_state()
    # The fall's alert is saved at once; the engine's state (the fall's 60 s timer) is not.
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0 + 10))
    assert (rig.store.cursor("alerts"), rig.store.cursor("rules"), rig.alerts.replay_from) == (2, 1, 1)
    assert rig.store.rule_state() == saved
    engine = rig.alerts.engine.export()
    assert engine != saved
    # A crash: the engine is its saved state and the fall fed again, its alert not raised twice.
    assert rig.restart() == 0
    assert rig.alerts.engine.export() == engine
    assert rig.timeline() == [("raised", "fall", 2)]
    assert (rig.store.cursor("rules"), rig.alerts.replay_from) == (2, 2)  # catch_up's checkpoint
    rig.clock.set(T0 + 71)
    rig.alerts.tick()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]


def test_a_checkpoint_written_behind_saves_the_state_as_it_was_taken(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    write = rig.alerts.checkpoint_behind()
    assert write is not None
    taken = rig.alerts.engine.export()
    rig.feed(ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0 + 5))  # the engine goes on meanwhile
    assert rig.alerts.checkpoint_behind() is None  # one at a time
    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    assert (rig.store.cursor("rules"), rig.alerts.replay_from) == (1, 1)
    assert rig.store.rule_state() == taken  # without the door
    now = rig.alerts.engine.export()
    rig.restart()
    assert rig.alerts.engine.export() == now
    assert rig.timeline() == [("raised", "fall", 2)]


def test_state_saved_while_a_checkpoint_is_written_behind_is_written_after_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    write = rig.alerts.checkpoint_behind()
    assert write is not None
    rig.clock.set(T0 + 61)
    # The fall's deadline fires while the checkpoint is still to be written: the tick's state
    # (the timer gone) must not be overwritten by the older state (the timer pending).
    ticking = threading.Thread(target=rig.alerts.tick)
    ticking.start()
    ticking.join(timeout=0.5)
    write()
    ticking.join()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]
    rig.restart()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]  # not again


def test_a_checkpoint_written_behind_stops_giving_way_once_the_loop_waits_for_it(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    """The checkpoint lets other threads have the interpreter between pieces, until a save of
    the state on the loop waits for it: then it finishes at once (a busy loop would leave it
    a sliver of every switch interval, and the loop waits)."""
    rig = Rig(tmp_path)
    monkeypatch.setattr(alert_path, "STATE_CHUNK", 1)  # the fall's 13 entries: 13 pieces
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    write = rig.alerts.checkpoint_behind()
    assert write is not None
    rig.clock.set(T0 + 61)
    ticking = threading.Thread(target=rig.alerts.tick)  # the fall's deadline: its state is saved
    gave_way: list[bool] = []

    def first_gives_way_to_the_tick() -> None:
        gave_way.append(True)
        if len(gave_way) == 1:
            ticking.start()
            deadline = time.monotonic() + 5
            while not rig.alerts._hurry and time.monotonic() < deadline:
                time.sleep(0.001)  # until the tick waits for the state lock

    monkeypatch.setattr(alert_path, "yield_interpreter", first_gives_way_to_the_tick)
    write()
    ticking.join()
    assert gave_way == [True]
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]
    rig.restart()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]


def test_a_checkpoint_that_fails_behind_is_saved_with_the_next(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0))
    monkeypatch.setattr(rig.store, "save_rule_state", disk_error)
    write = rig.alerts.checkpoint_behind()
    assert write is not None
    write()  # logged, not raised: the housekeeping goes on
    monkeypatch.undo()
    assert (rig.store.cursor("rules"), rig.store.rule_state()) == (0, [])
    rig.alerts.checkpoint()  # the lock was let go, and the entries are changed ones again
    assert rig.store.cursor("rules") == 1
    assert rig.store.rule_state() == rig.alerts.engine.export()
    (t,) = rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 30))
    assert (t.kind, t.alert.count) == ("updated", 2)


def disk_error(*args: object, **kwargs: object) -> None:
    raise StoreError("disk I/O error")


def press_whose_save_fails(rig: Rig, monkeypatch: MonkeyPatch) -> None:
    """An SOS press stored, whose alert's save fails."""
    monkeypatch.setattr(rig.store, "save_alerts", disk_error)
    with pytest.raises(StoreError):
        rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0))
    monkeypatch.undo()


def test_after_a_failed_save_the_engine_is_rebuilt_from_the_store(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    rig = Rig(tmp_path)
    press_whose_save_fails(rig, monkeypatch)
    # The press is stored; the engine that saw it is not what the store holds: it is rebuilt,
    # and the press raises its alert, once.
    rig.feed(ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0 + 5))
    (alert,) = rig.store.alerts()
    assert (alert.rule, alert.count, alert.state) == ("sos", 1, AlertState.RAISED)
    assert rig.timeline() == [("raised", "sos", 1)]
    (t,) = rig.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 30))
    assert (t.kind, t.alert.id, t.alert.count) == ("updated", alert.id, 2)


def test_a_stop_after_a_failed_save_saves_no_state_ahead_of_its_cursor(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    press_whose_save_fails(rig, monkeypatch)
    rig.alerts.checkpoint(durable=True)  # the gateway stops
    rig.restart()
    (alert,) = rig.store.alerts()
    assert (alert.rule, alert.count) == ("sos", 1)
    assert rig.timeline() == [("raised", "sos", 1)]


def test_a_fall_timer_survives_a_crash_and_fires_on_boot(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0))
    # Down from T0+10 to T0+600: the 60 s no-recovery deadline passes while down.
    rig.clock.set(T0 + 600)
    rig.restart()
    assert rig.timeline() == [("raised", "fall", 2), ("escalated", "fall_no_recovery", 1)]
    assert rig.restart() == 0 and len(rig.seen) == 2  # fired exactly once


def test_no_activity_window_is_not_restarted_by_a_reboot(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.feed(ev(Kind.DOOR_CLOSED, Family.DOOR, "101-door", T0))  # last sign of life at 09:00
    rig.clock.set(T0 + 2 * 3600)
    rig.alerts.tick()
    rig.alerts.checkpoint()
    rig.clock.set(T0 + 2.5 * 3600)
    rig.restart()  # reboot at 11:30: the high-risk 3 h window must still end at 12:00
    assert rig.timeline() == []
    rig.clock.set(T0 + 3 * 3600 + 1)
    rig.alerts.tick()
    assert rig.timeline() == [("raised", "no_activity", 2)]
    assert "无活动" in rig.seen[0].alert.message_zh and "王秀英" in rig.seen[0].alert.message_zh
    # Activity resolves the welfare alert.
    rig.feed(ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0 + 3 * 3600 + 60))
    assert rig.timeline()[-1] == ("resolved", "no_activity", 2)


def test_replay_after_crash_gives_the_same_alert_ids(tmp_path: Path) -> None:
    a, b = Rig(tmp_path / "a"), Rig(tmp_path / "b")
    (tmp_path / "a").mkdir(exist_ok=True)
    a.feed(ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0))
    b.store.append([ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0)], {})
    b.restart()
    assert a.seen[0].alert.id == b.seen[0].alert.id


def test_a_full_disk_is_one_alert_reworded_as_telemetry_is_refused_and_taken_until_it_resolves(
    tmp_path: Path,
) -> None:
    from gateway.alerts.system import disk_decision, disk_key
    from gateway.store.disk import DiskState

    rig = Rig(tmp_path)

    def state(full: bool, refusing: bool) -> DiskState:
        return DiskState(True, full, refusing, 700_000, 64_000, 600_000, 16 << 20, 4096, 0, 1 << 20)

    steps = [(True, False), (True, True), (True, False), (True, True), (False, False)]
    for n, (full, refusing) in enumerate(steps):
        rig.alerts.external([disk_decision(state(full, refusing), "gw", T0 + n)])
    alerts = [a for a in rig.store.alerts(limit=100) if a.dedup_key == disk_key("gw")]
    assert len(alerts) == 1
    assert alerts[0].state is AlertState.RESOLVED and not alerts[0].flapping
    assert [t.kind for t in rig.seen] == ["raised", "updated", "updated", "updated", "resolved"]
    refused = [t.alert.message_zh for t in rig.seen if t.kind == "updated"]
    assert "遥测数据暂不接收" in refused[0] and "遥测数据暂不接收" not in refused[1]
