"""The ``device_state`` summary: kept by ``append`` in the events' own transaction, one upsert per
device per batch, and the same whether a run of events arrives as one batch, in halves or one
by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.models import RETAINED, Event, Family, Kind
from gateway.store import DeviceState, Store
from gateway.store.devices import fold
from tests.gateway.factories import event

T0 = 1_767_225_600.0


def _states(store: Store) -> dict[str, DeviceState]:
    return store.device_states()


def test_a_batch_leaves_each_device_its_last_report_battery_link_quality_and_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append(
        [
            event(Kind.DOOR_OPENED, device="door", t=T0, linkquality=120),
            event(Kind.BATTERY, device="door", t=T0 + 1, battery=88),
            event(Kind.SMOKE_CLEAR, Family.SMOKE, device="smoke", t=T0 + 2),
            event(Kind.DOOR_CLOSED, device="door", t=T0 + 3),
        ],
        {},
    )
    door = store.device_states()["door"]
    assert (door.last_seen, door.last_kind, door.online) == (T0 + 3, "door_closed", True)
    assert (door.battery, door.battery_low, door.link_quality) == (88, False, 120)
    assert (door.state, door.state_at, door.activity_at, door.events) == ("door_closed", T0 + 3, T0 + 3, 3)
    assert store.device_states(["smoke", "nothing"]).keys() == {"smoke"}
    # A later batch that says nothing of the battery or the link keeps them.
    store.append([event(Kind.OFFLINE, device="door", t=T0 + 10)], {})
    door = store.device_states()["door"]
    assert (door.online, door.online_at, door.battery, door.link_quality) == (False, T0 + 10, 88, 120)
    assert (door.state, door.last_kind, door.events) == ("door_closed", "offline", 4)


def test_battery_low_has_the_rules_hysteresis_and_the_flag_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for percent, low in ((60, False), (15, True), (35, True), (55, False), (35, False)):
        store.append([event(Kind.BATTERY, Family.SOS, device="sos", battery=percent)], {})
        assert store.device_states()["sos"].battery_low is low, percent
    store.append([event(Kind.BATTERY_LOW, Family.SOS, device="sos")], {})
    assert store.device_states()["sos"].battery_low is True


def test_a_retained_replay_sets_the_state_but_is_no_sign_of_life(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([event(Kind.DOOR_CLOSED, device="door", t=T0)], {})
    store.append([event(Kind.SMOKE_ALARM, Family.SMOKE, device="door", t=T0 + 60, **{RETAINED: True})], {})
    s = store.device_states()["door"]
    assert (s.last_seen, s.last_kind, s.state) == (T0, "door_closed", "smoke_alarm")


def test_visits_and_absent_presence_are_not_activity(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append(
        [
            event(Kind.VISIT, device="visits", t=T0),
            event(Kind.PRESENCE, Family.PRESENCE, device="radar", t=T0, present=True),
            event(Kind.PRESENCE, Family.PRESENCE, device="radar", t=T0 + 5, present=False),
        ],
        {},
    )
    states = store.device_states()
    assert "visits" not in states
    assert (states["radar"].state, states["radar"].activity_at) == ("presence:off", T0)


def test_one_upsert_per_device_per_batch_in_the_events_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    upserts: list[str] = []
    store._db.set_trace_callback(lambda sql: upserts.append(sql) if "INTO device_state" in sql else None)
    batch = [event(Kind.MOTION, Family.PRESENCE, device=f"d{i % 3}", t=T0 + i, moving=True) for i in range(300)]
    store.append(batch, {})
    assert len(upserts) == 3
    store._db.set_trace_callback(None)
    # A batch that fails stores neither its events nor their summary.
    with pytest.raises(TypeError):  # a command that cannot be stored: the whole batch rolls back
        store.append([event(Kind.MOTION, Family.PRESENCE, device="d9")], {}, commands=[{"bad": object()}])
    assert "d9" not in store.device_states() and store.event_count() == 300


# ---------------------------------------------------------------------- split-invariance

_KINDS = [
    (Kind.DOOR_OPENED, {}),
    (Kind.DOOR_CLOSED, {"linkquality": 90}),
    (Kind.BATTERY, {"battery": 10}),
    (Kind.BATTERY, {"battery": 35}),
    (Kind.BATTERY, {"battery": 80, "linkquality": 30}),
    (Kind.BATTERY_LOW, {}),
    (Kind.TAMPER, {}),
    (Kind.TAMPER_CLEAR, {}),
    (Kind.ONLINE, {}),
    (Kind.OFFLINE, {}),
    (Kind.SENSOR_FAULT, {}),
    (Kind.HEARTBEAT, {}),
    (Kind.PRESENCE, {"present": True}),
    (Kind.PRESENCE, {"present": False}),
    (Kind.SMOKE_ALARM, {RETAINED: True}),
]

_runs = st.lists(
    st.tuples(st.sampled_from(range(len(_KINDS))), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=25
)


def _events(run: list[tuple[int, str]]) -> list[Event]:
    out = []
    for i, (k, device) in enumerate(run):
        kind, values = _KINDS[k]
        out.append(event(kind, device=device, t=T0 + i, **values))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=_runs, cuts=st.lists(st.integers(min_value=1, max_value=24), max_size=4))
# online → offline → online inside one batch after an online one: the change time is the batch's
@example(run=[(0, "a"), (9, "a"), (0, "a")], cuts=[1])
def test_the_summary_is_the_same_whole_split_or_one_by_one(
    tmp_path_factory: pytest.TempPathFactory, run: list[tuple[int, str]], cuts: list[int]
) -> None:
    events = _events(run)
    whole = Store(tmp_path_factory.mktemp("whole") / "s.db")
    whole.append(events, {})
    split = Store(tmp_path_factory.mktemp("split") / "s.db")
    points = sorted({c for c in cuts if c < len(events)})
    for a, b in zip([0, *points], [*points, len(events)], strict=True):
        split.append(events[a:b], {})
    single = Store(tmp_path_factory.mktemp("single") / "s.db")
    for ev in events:
        single.append([ev], {})
    assert whole.device_states() == split.device_states() == single.device_states()
    # On an empty table, the fold of the whole run is what the table holds.
    assert whole.device_states() == fold(events)
