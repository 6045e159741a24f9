"""The ``device_state`` summary: written behind the events in passes (one upsert per device per
pass), read as if written with every batch, the same whether a run of events arrives as one
batch, in halves or one by one, written behind at any point, or read after a crash; and
``last_payload`` written behind its log the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.models import RETAINED, Event, Family, Kind
from gateway.store import DeviceState, Store
from gateway.store import events as events_module
from gateway.store.base import key_bounds
from gateway.store.devices import SUMMARY_SEQ, fold
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


def test_a_batch_writes_no_row_a_pass_writes_each_devices_row_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    upserts: list[str] = []
    store._db.set_trace_callback(lambda sql: upserts.append(sql) if "INTO device_state" in sql else None)
    batch = [event(Kind.MOTION, Family.PRESENCE, device=f"d{i % 3}", t=T0 + i, moving=True) for i in range(300)]
    store.append(batch, {})
    assert upserts == []  # the events are the log; the rows are written behind them
    assert store.device_states()["d1"].events == 100  # ... and read as if they were not
    store.summarise()
    # Many rows a statement (insert_rows): each device's row is in one of them, once.
    assert sorted(re.findall(r"\('(d\d+)'", "".join(upserts))) == ["d0", "d1", "d2"]
    store._db.set_trace_callback(None)
    assert store.meta(SUMMARY_SEQ) == "300"
    # A batch that fails stores neither its events nor anything of their summary.
    with pytest.raises(TypeError):  # a command that cannot be stored: the whole batch rolls back
        store.append([event(Kind.MOTION, Family.PRESENCE, device="d9")], {}, commands=[{"bad": object()}])
    assert "d9" not in store.device_states() and store.event_count() == 300


def test_the_store_that_keeps_the_disk_writes_the_summaries_in_passes_of_key_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "SUMMARY_EVENTS", 2400)
    store = Store(tmp_path / "s.db", max_bytes=16 * 1024 * 1024, synchronous="normal")
    store.manage_disk(lambda: 0)
    devices = [f"dev{i:04}" for i in range(1200)]
    for i, device in enumerate(devices):  # one row each, written by a first pass
        store.append([event(Kind.DOOR_OPENED, device=device, t=T0 + i)], {})
    store.summarise()
    assert store._db.execute("SELECT COUNT(*) FROM device_state").fetchone()[0] == 1200
    written: list[str] = []
    store._db.set_trace_callback(lambda sql: written.append(sql) if "INTO device_state" in sql else None)
    for i in range(2400 + 1):
        store.append([event(Kind.BATTERY, device=devices[i % 1200], t=T0 + 2000 + i / 100, battery=90)], {})
    store._db.set_trace_callback(None)
    # A pass started after 2,400 events: a key range of stored rows after each batch since.
    size = store._chunk_rows()
    assert store._pass is not None and 1 <= len(store._pass.devices) < -(-1200 // size)
    assert 0 < len(written) <= 2 * size
    expected = {d: store.device_states([d])[d] for d in devices}
    store.summarise()
    assert store._pass is None and store.meta(SUMMARY_SEQ) == str(store.last_seq())
    assert store.device_states() == expected and expected["dev0007"].events == 3


def test_a_store_opened_again_after_a_crash_reads_what_it_wrote(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.manage_disk(lambda: 0)
    events = _events([(i % len(_KINDS), "abc"[i % 3]) for i in range(40)])
    store.append(events[:20], {})
    store.summarise()
    store.append(events[20:], {})
    # A pass cut short: one row written beyond the mark, the mark not moved.
    store._pass = store._start_pass(store._own_tail())
    store._pass.devices = [["b"]]
    assert store._pass_step(store._pass, T0)
    before = store.device_states()
    store._db.close()  # no orderly close: what a SIGKILL leaves
    again = Store(tmp_path / "s.db")
    assert again.device_states() == before == fold(events)
    again.manage_disk(lambda: 0)
    again.summarise()
    assert again.device_states() == before


def test_the_last_payload_of_a_topic_is_the_logs_latest_before_and_after_a_pass(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([], {}, payloads=[("t/a", "1"), ("t/b", "1")], now=T0)
    store.append([], {}, payloads=[("t/a", "2")], now=T0 + 1)
    assert store.last_payloads(["t/a", "t/b", "t/c"]) == {"t/a": "2", "t/b": "1"}
    store.summarise()
    assert store._db.execute("SELECT COUNT(*) FROM payload_log").fetchone()[0] == 0
    store.append([], {}, payloads=[("t/b", "3")], now=T0 + 2)
    assert Store(tmp_path / "s.db").last_payloads(["t/a", "t/b"]) == {"t/a": "2", "t/b": "3"}
    assert store.last_payloads(["t/a", "t/b"]) == {"t/a": "2", "t/b": "3"}


def test_the_summary_writer_keeps_the_log_it_folds_and_reads_what_another_writer_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store that keeps the disk folds payload_log as it appends (a pass no longer reads the
    whole log while the next commit waits); rows another store logged in between are read from
    the file; each pass writes each topic's latest, in key ranges of stored rows."""
    monkeypatch.setattr(events_module, "SUMMARY_EVENTS", 600)
    store = Store(tmp_path / "s.db", synchronous="normal")
    store.manage_disk(lambda: 0)
    other = Store(tmp_path / "s.db", synchronous="normal")
    topics = [f"z2m/dev{i:04}" for i in range(700)]
    latest: dict[str, str] = {}
    passes = 0
    for n in range(2_000):
        topic = topics[(n * 3) % len(topics)]
        writer = other if n % 3 == 0 else store  # another writer comes between, in passes too
        writer.append([], {}, payloads=[(topic, f"d{n}")], now=T0 + n)
        latest[topic] = f"d{n}"
        passes += store._pass is not None
    assert passes >= 6  # a pass was under way at six appends or more, while both wrote
    store.summarise()
    rows = dict(store._db.execute("SELECT topic, digest FROM last_payload").fetchall())
    assert rows == latest
    assert store._db.execute("SELECT COUNT(*) FROM payload_log").fetchone()[0] == 0
    # The ranges a pass writes start at every size-th stored key.
    keys = sorted(rows)
    assert key_bounds(store._db, "last_payload", "topic", 256) == [keys[256], keys[512]]


@pytest.mark.parametrize("rows", [0, 1, 255, 256, 257, 511, 512, 513, 1_000])
def test_a_passs_key_ranges_start_at_every_size_th_stored_key(tmp_path: Path, rows: int) -> None:
    store = Store(tmp_path / "s.db", synchronous="normal")
    keys = sorted(f"z2m/{(i * 7919) % 10_007:05}" for i in range(rows))
    store._db.executemany("INSERT INTO last_payload(topic, digest, at) VALUES (?, 'd', 0)", [(k,) for k in keys])
    for size in (1, 256, 257):
        assert key_bounds(store._db, "last_payload", "topic", size) == keys[size::size]
    store.close()


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
    # Written behind at any points (a pass after some batches), it reads the same.
    behind = Store(tmp_path_factory.mktemp("behind") / "s.db")
    for i, (a, b) in enumerate(zip([0, *points], [*points, len(events)], strict=True)):
        behind.append(events[a:b], {})
        if i % 2 == 0:
            behind.summarise()
    assert behind.device_states() == whole.device_states()
    behind.summarise()
    assert behind.device_states() == whole.device_states()
