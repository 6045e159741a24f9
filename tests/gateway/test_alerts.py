"""The minimal alert path: raise, fold repeats, auto-resolve, and catch up after a crash."""

from __future__ import annotations

from pathlib import Path

from gateway.alerts import AlertPath, Transition
from gateway.clock import VirtualClock
from gateway.config import parse_config
from gateway.models import AlertState, Event, Family, Kind, Location
from gateway.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

T0 = 1_767_225_600.0


def ev(kind: Kind, family: Family, device: str, t: float) -> Event:
    return Event(device, family, kind, t, t, location=Location("1", "1", "101", "厨房"))


def setup(tmp_path: Path) -> tuple[Store, AlertPath, list[Transition]]:
    store = Store(tmp_path / "s.db")
    registry = Registry(parse_config(minimal_site(), environ={}))
    seen: list[Transition] = []
    path = AlertPath(registry, store, VirtualClock(T0), "sensegate/gw", repeat_window=600, notify=seen.append)
    return store, path, seen


def test_sos_raises_one_critical_alert_with_resident_and_place(tmp_path: Path) -> None:
    store, path, seen = setup(tmp_path)
    stored = store.append([ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0)], {})
    path.process(stored)
    (t,) = seen
    assert t.kind == "raised"
    a = t.alert
    assert (a.rule, int(a.severity), a.resident, a.evidence) == ("sos", 1, "r1", (stored[0].seq,))
    assert a.message_zh == "【紧急呼叫】1号楼1单元101室 厨房 独居老人王秀英 按下紧急呼叫按钮，请立即处置"
    assert a.message_en == "SOS pressed at building 1, unit 1, flat 101, 厨房 (王秀英, lives alone)"
    topics = [m.topic for m in store.outbox_batch("mqtt")]
    assert topics == ["sensegate/gw/alerts/events", f"sensegate/gw/alerts/open/{a.id}"]


def test_repeats_fold_into_the_open_alert_and_renotify_after_quiet(tmp_path: Path) -> None:
    store, path, seen = setup(tmp_path)
    times = [T0, T0 + 5, T0 + 10, T0 + 10 + 601]
    for t in times:
        path.process(store.append([ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", t)], {}))
    assert [t.kind for t in seen] == ["raised", "updated", "updated", "repeated"]
    assert seen[-1].alert.count == 4 and len({t.alert.id for t in seen}) == 1
    assert len(store.alerts(open_only=True)) == 1


def test_clear_resolves_smoke_but_nothing_resolves_a_fall(tmp_path: Path) -> None:
    store, path, seen = setup(tmp_path)
    path.process(
        store.append(
            [
                ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", T0),
                ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0 + 1),
                ev(Kind.SMOKE_CLEAR, Family.SMOKE, "101-smoke", T0 + 30),
                ev(Kind.FALL_CLEARED, Family.FALL, "101-fall", T0 + 31),
            ],
            {},
        )
    )
    assert [(t.kind, t.alert.rule) for t in seen] == [
        ("raised", "smoke"),
        ("raised", "fall"),
        ("resolved", "smoke"),
    ]
    states = {a.rule: a.state for a in store.alerts()}
    assert states == {"smoke": AlertState.RESOLVED, "fall": AlertState.RAISED}
    resolved = [m for m in store.outbox_batch("mqtt") if m.retain][-1]
    assert resolved.payload == ""  # clears the retained open-alert state
    # After resolution a new alarm is a new alert.
    path.process(store.append([ev(Kind.SMOKE_ALARM, Family.SMOKE, "101-smoke", T0 + 99)], {}))
    assert seen[-1].kind == "raised" and seen[-1].alert.id != seen[0].alert.id


def test_events_stored_before_a_crash_raise_their_alerts_on_restart(tmp_path: Path) -> None:
    store, path, _ = setup(tmp_path)
    path.process(store.append([ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0)], {}))
    # The crash: events committed (and acknowledged) but the alert path never ran on them.
    store.append([ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 1)], {})
    store.close()

    store2 = Store(tmp_path / "s.db")
    registry = Registry(parse_config(minimal_site(), environ={}))
    seen2: list[Transition] = []
    path2 = AlertPath(registry, store2, VirtualClock(T0), "sensegate/gw", notify=seen2.append)
    # The door event changed no alert, so its cursor was only in memory: it is replayed too,
    # harmlessly (under the same alert state it changes nothing again).
    assert path2.catch_up() == 2
    assert [(t.kind, t.alert.rule) for t in seen2] == [("raised", "sos")]
    # Idempotent: a second catch-up (another restart) raises nothing new.
    assert path2.catch_up() == 0
    assert len(store2.alerts()) == 1


def test_replay_after_crash_gives_the_same_alert_ids(tmp_path: Path) -> None:
    store, path, seen = setup(tmp_path)
    stored = store.append([ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0)], {})
    path.process(stored)
    first = seen[0].alert.id
    other = Store(tmp_path / "other.db")
    other.append([ev(Kind.FALL_DETECTED, Family.FALL, "101-fall", T0)], {})
    seen2: list[Transition] = []
    AlertPath(path.registry, other, VirtualClock(T0), "p", notify=seen2.append).catch_up()
    assert seen2[0].alert.id == first


def test_checkpoint_saves_the_cursor_of_quiet_batches(tmp_path: Path) -> None:
    store, path, _ = setup(tmp_path)
    path.process(store.append([ev(Kind.DOOR_OPENED, Family.DOOR, "101-door", T0 + i) for i in range(50)], {}))
    path.checkpoint()
    store.append([ev(Kind.SOS_PRESSED, Family.SOS, "101-sos", T0 + 60)], {})
    path2 = AlertPath(path.registry, store, VirtualClock(T0), "p")
    assert path2.catch_up() == 1
