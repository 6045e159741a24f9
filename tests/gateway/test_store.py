"""The durable store: append, per-output pending rows, dead letters, alerts and the disk bound."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import StoreError
from gateway.models import Event, Family, Kind
from gateway.store import Store
from gateway.store.alerts import REWRITE_FROM, REWRITE_KEYS
from gateway.store.commands import COMMANDS_KEEP
from gateway.store.events import stored_body
from tests.gateway.factories import Killed, event, killed_at

OUTPUTS: dict[str, frozenset[str] | None] = {"influx": None, "smoke_only": frozenset({"smoke"})}


def test_append_assigns_increasing_seq_and_pending_rows_per_output(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    stored = store.append([event(), event(Kind.SMOKE_ALARM, Family.SMOKE), event(Kind.DOOR_CLOSED)], OUTPUTS)
    assert [e.seq for e in stored] == [1, 2, 3]
    assert store.pending_count("influx") == 3
    assert store.pending_count("smoke_only") == 1
    assert [e.kind for e in store.pending_batch("smoke_only", 10)] == [Kind.SMOKE_ALARM]
    assert store.counters()["accepted"] == 3


def test_events_survive_reopen_with_values_and_location(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([event(battery=96.5, credential="card:1")], OUTPUTS)
    store.close()
    again = Store(tmp_path / "s.db")
    (ev,) = again.events_after(0)
    assert ev.seq == 1
    assert ev.values == {"battery": 96.5, "credential": "card:1"}
    assert ev.location.room == "门口"
    assert again.pending_count("influx") == 1


VALUES = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12)),
    max_size=5,
)


def _same(a: Event, b: Event) -> bool:
    """Equal, a NaN value counting as equal to a NaN."""
    nan = {k for k, v in a.values.items() if isinstance(v, float) and math.isnan(v)}
    if nan != {k for k, v in b.values.items() if isinstance(v, float) and math.isnan(v)}:
        return False
    return replace(a, values={k: v for k, v in a.values.items() if k not in nan}) == replace(
        b, values={k: v for k, v in b.values.items() if k not in nan}
    )


@given(VALUES, st.text(max_size=12))
def test_the_stored_body_is_the_json_the_store_wrote_before_and_reads_back_as_the_event(
    values: dict[str, bool | int | float | str], device: str
) -> None:
    ev = replace(event(device=device, **{"x": 1}), values=values, raw=json.dumps(values))
    body = stored_body(ev)
    before = ev.to_dict()
    del before["seq"]
    # The reader of every release parses it to what json.dumps wrote (NaN and ±inf included).
    assert json.dumps(json.loads(body)) == json.dumps(before)
    store = Store(":memory:")
    (stored,) = store.append([ev], {})
    assert _same(stored, replace(ev, seq=1))
    (read,) = store.events_after(0)
    assert _same(read, stored)


def test_bodies_written_by_json_before_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    ev = event(battery=96.5, note='门 "ok"')
    old = ev.to_dict()
    del old["seq"]
    old["values"]["level"] = float("nan")  # json wrote NaN, which orjson refuses to read
    old["values"]["counter"] = 2**70
    columns = ("telemetry", ev.device_id, "door", "door_opened", ev.event_time, ev.received_at)
    with store._tx() as db:
        db.execute(
            "INSERT INTO events(lane, device_id, family, kind, event_time, received_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*columns, json.dumps(old, ensure_ascii=False)),
        )
    (read,) = store.events_after(0)
    assert read.seq == 1 and read.values["note"] == '门 "ok"' and math.isnan(float(read.values["level"]))
    assert read.values["counter"] == 2**70
    assert read.location == ev.location and read.kind is Kind.DOOR_OPENED


def test_the_writer_reads_back_the_events_another_process_reads_from_the_file(tmp_path: Path) -> None:
    writer = Store(tmp_path / "s.db")
    events = [event(battery=96.5, level=float("nan"), big=2**70), event(Kind.SMOKE_ALARM, Family.SMOKE, note="烟")]
    stored = writer.append(events * 3, OUTPUTS)
    writer.delivered("influx", [stored[0].seq])
    other = Store(tmp_path / "s.db")  # not the process that wrote them: parsed from the bodies
    for output in OUTPUTS:
        mine, read = writer.pending_batch(output, 4), other.pending_batch(output, 4)
        assert [e.seq for e in mine] == [e.seq for e in read] and all(map(_same, mine, read))
    assert [e.seq for e in writer.pending_batch("influx", 10)] == [e.seq for e in stored[1:]]


def test_events_another_process_stored_are_remembered_for_the_forwarders(tmp_path: Path) -> None:
    ingest = Store(tmp_path / "s.db")
    ingest.recent_keep = 0  # the ingest process forwards nothing
    stored = ingest.append([event(n=1), event(n=2)], OUTPUTS)
    assert not ingest._recent
    gateway = Store(tmp_path / "s.db")
    read = gateway.events_after(0)
    gateway.remember(read)
    # Read back from memory: the very objects the alert path was handed.
    assert all(a is b for a, b in zip(gateway.pending_batch("influx", 10), read, strict=True))
    assert [e.seq for e in read] == [e.seq for e in stored]


def test_coordinated_writers_queue_on_the_writer_lock_for_the_whole_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.coordinate_writers()
    other = os.open(tmp_path / "s.db.writer", os.O_RDWR)  # another process's writer, in effect

    def taken() -> bool:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False

    with store._tx() as db:
        assert taken()
        db.execute("INSERT INTO counters(name, value) VALUES ('x', 1)")
    assert not taken()
    with pytest.raises(StoreError), store._tx() as db:
        db.execute("INSERT INTO counters(name, value) VALUES ('x', 2)")  # the key is taken
    assert not taken(), "released after a failed transaction too"
    fcntl.flock(other, fcntl.LOCK_EX)  # held elsewhere: a write waits for it
    done = threading.Event()
    writer = threading.Thread(target=lambda: (store.append([event()], OUTPUTS), done.set()))
    writer.start()
    assert not done.wait(0.3)
    fcntl.flock(other, fcntl.LOCK_UN)
    assert done.wait(10)
    writer.join()
    os.close(other)
    store.close()


def test_delivered_removes_only_that_outputs_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    stored = store.append([event(Kind.SMOKE_ALARM, Family.SMOKE)], OUTPUTS)
    store.delivered("influx", [stored[0].seq])
    assert store.pending_count("influx") == 0
    assert store.pending_count("smoke_only") == 1
    assert store.counters()["forwarded.influx"] == 1


def test_delivered_removes_exactly_the_rows_given_however_they_are_spaced(tmp_path: Path) -> None:
    """A forwarder's batch is deleted as one range of seqs; what is not a whole range row by row."""
    store = Store(tmp_path / "s.db")
    seqs = [e.seq for e in store.append([event() for _ in range(10)], {"influx": None})]

    def left() -> list[int]:
        return [e.seq for e in store.pending_batch("influx", 100)]

    store.delivered("influx", seqs[0:3])  # a batch: the oldest, in order
    assert left() == seqs[3:]
    store.delivered("influx", seqs[4:9:2])  # every other one: those between stay
    assert left() == [seqs[3], seqs[5], seqs[7], seqs[9]]
    store.delivered("influx", seqs[3:6])  # one of them gone already (evicted meanwhile)
    assert left() == [seqs[7], seqs[9]]
    store.delivered("influx", [])
    assert left() == [seqs[7], seqs[9]]
    assert store.counters()["forwarded.influx"] == 9


def test_rule_state_is_kept_exactly_as_saved_changed_and_deleted(tmp_path: Path) -> None:
    """What the rules' timers resume from after a restart: each value as it was saved, a
    float's every digit and a key that is not a string included; a later save changes and
    deletes entries (the last of two changes to one entry wins)."""
    store = Store(tmp_path / "s.db")
    first = {"due": 1796653501.1234567, "seen": [1, 2.5e-07, None], "by": {3: "x"}, "zh": "跌倒"}
    store.save_alerts([], [], rule_state=[("a", first), ("b", {"n": 1}), ("c", {"n": 2})])
    store.save_alerts([], [], rule_state=[("b", None), ("c", {"n": 3}), ("c", {"n": 4}), ("d", {})])
    assert store.rule_state() == [("a", {**first, "by": {"3": "x"}}), ("c", {"n": 4}), ("d", {})]


def _state_rows(n: int, tag: str, step: int = 1) -> list[tuple[str, str | None]]:
    return [(f"rule:r:{i:05d}", json.dumps({"v": tag, "i": i})) for i in range(0, n, step)]


def test_a_busy_minutes_rule_state_goes_in_a_range_at_a_time_and_a_rewrite_cut_short_is_all_or_nothing(
    tmp_path: Path,
) -> None:
    """A checkpoint of many entries is written into the other table, ``REWRITE_KEYS`` rows a
    transaction, made the state with its cursor in one more, and the old table emptied a range
    at a time. One cut short anywhere leaves the state and the cursor as they were before the
    switch, or as saved after it; the next goes in whole."""
    store = Store(tmp_path / "s.db")
    expected: dict[str, str | None] = {}

    def save(rows: list[tuple[str, str | None]], at: int, between: Callable[[], None] = lambda: None) -> None:
        store.save_rule_state(rows, ("rules", at), between=between)
        expected.update(rows)

    def state() -> tuple[int, dict[str, str]]:
        return store.cursor("rules"), {k: json.dumps(v) for k, v in store.rule_state()}

    def held() -> dict[str, str]:
        return {k: v for k, v in expected.items() if v is not None}

    save(_state_rows(5000, "first"), 1)
    assert state() == (1, held()) and store.meta("rule_state.table") == "1"
    # Changes, deletions and new keys across the ranges; one key twice (the last stays).
    second = _state_rows(5000, "second", 2) + [(f"rule:r:{i:05d}", None) for i in range(1, 5000, 7)]
    second += [(f"rule:r:{i:05d}x", json.dumps({"new": i})) for i in range(0, 5000, 3)]
    second += [("rule:r:00001", json.dumps({"again": 1}))]
    transactions = 0

    def count() -> None:
        nonlocal transactions
        transactions += 1

    save(second, 2, count)
    assert state() == (2, held()) and store.meta("rule_state.table") == "0"
    ranges = -(-5000 // REWRITE_KEYS)
    assert transactions == 2 * ranges + 1  # a range of the table each, the switch, a range of the old each
    assert len(state()[1]) > REWRITE_FROM
    cut = 0
    while True:  # killed before each transaction of the rewrite in turn
        cut += 1
        before, rows = state(), _state_rows(6000, f"cut {cut}")
        ranges = -(-len(before[1]) // REWRITE_KEYS)
        if cut > 2 * ranges + 1:
            break
        with pytest.raises(Killed):
            store.save_rule_state(rows, ("rules", 10 + cut), between=killed_at(cut))
        if cut > ranges + 1:  # after the switch: the old table not yet emptied
            expected.update(rows)
            assert state() == (10 + cut, held())
        else:
            assert state() == before
    save(_state_rows(6000, "whole"), 99)
    assert state() == (99, held())
    store.close()
    assert Store(tmp_path / "s.db").rule_state() == [(k, json.loads(v)) for k, v in sorted(held().items())]


def test_a_few_rule_state_entries_change_the_table_that_holds_the_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.save_rule_state(_state_rows(REWRITE_FROM, "once"), ("rules", 1))
    store.save_rule_state(_state_rows(REWRITE_FROM, "twice"), ("rules", 1))
    store.save_rule_state(_state_rows(REWRITE_FROM, "many"), ("rules", 1))
    assert store.meta("rule_state.table") == "1"
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM rule_state").fetchone() == (0,)  # its pages freed
    store.save_rule_state([("rule:r:00000", None), ("rule:r:00001", '{"few": 1}')], ("rules", 2))
    store.save_alerts([], [], rule_state=[("rule:r:00002", {"loop": 1})])
    got = dict(store.rule_state())
    assert (store.cursor("rules"), store.meta("rule_state.table"), len(got)) == (2, "1", REWRITE_FROM - 1)
    assert got["rule:r:00001"] == {"few": 1} and got["rule:r:00002"] == {"loop": 1}


def test_dead_letter_keeps_event_and_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    stored = store.append([event(), event()], OUTPUTS)
    store.dead_letter("influx", stored[:1], "field type conflict", at=5.0)
    assert store.pending_count("influx") == 1
    (dl,) = store.dead_letters("influx")
    assert dl.reason == "field type conflict" and dl.event.seq == stored[0].seq
    assert store.counters()["dead_lettered.influx"] == 1


def test_rejected_payloads_are_kept_for_inspection(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append(
        [],
        OUTPUTS,
        counts={"malformed.bad_json": 1},
        rejected=[("zigbee2mqtt/x", "bad_json", "not JSON", b"{oops" + b"x" * 10_000)],
        now=7.0,
    )
    (rec,) = store.rejected_payloads()
    assert rec["reason"] == "bad_json" and rec["topic"] == "zigbee2mqtt/x"
    assert rec["payload_bytes"] == 10_005 and len(str(rec["payload"])) == 4096
    assert store.counters()["malformed.bad_json"] == 1
    assert store.dead_letters() == []  # ingest records are not output dead letters


def test_recent_ingest_keys_expire(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([event()], OUTPUTS, ingest_keys=[("k1", 100.0), ("k2", 200.0)])
    assert store.seen_recently("k1") and store.seen_recently("k2")
    assert store.forget_ingest_keys(older_than=150.0) == 1
    assert not store.seen_recently("k1") and store.seen_recently("k2")


def test_done_commands_are_forgotten_after_a_week_pending_ones_never(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    old_done, old_pending, new_done = (store.add_command({"action": "ack", "n": n}, 100.0) for n in range(3))
    store.command_done(old_done, 200.0, {"ok": True})
    store.command_done(new_done, 200.0 + COMMANDS_KEEP, {"ok": True})
    now = 200.0 + COMMANDS_KEEP + 1
    assert store.forget_commands(now - COMMANDS_KEEP) == 1
    assert [c.id for c in store.commands(pending_only=False)] == [old_pending, new_done]
    assert [c.id for c in store.commands()] == [old_pending]  # the gateway still applies it
    assert store.forget_commands(now - COMMANDS_KEEP) == 0
    store.close()


def test_a_key_stored_after_a_lookup_is_seen_by_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([], OUTPUTS, ingest_keys=[("k1", 100.0)])
    assert store.seen_recently("k1") and not store.seen_recently("k2")
    store.append([], OUTPUTS, ingest_keys=[("k2", 101.0)])
    assert store.seen_recently("k2")
    other = Store(tmp_path / "s.db")  # another connection's commit is seen too
    other.append([], OUTPUTS, ingest_keys=[("k3", 102.0)])
    assert store.seen_recently("k3")
    assert store.forget_ingest_keys(older_than=101.5) == 2
    assert not store.seen_recently("k1") and not store.seen_recently("k2") and store.seen_recently("k3")
    other.close()
    store.close()


def test_only_the_newest_ingest_keys_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.append([], OUTPUTS, ingest_keys=[(f"k{i}", 100.0) for i in range(50)])
    store.append([], OUTPUTS, ingest_keys=[("k3", 101.0)])  # seen again: now among the newest
    # Rows are counted: k0–k39 and the first row of k3 (a key stored again is a row again).
    assert store.forget_ingest_keys(older_than=0.0, keep=10) == 41
    assert store.seen_recently("k3") and store.seen_recently("k49")
    assert not store.seen_recently("k39") and not store.seen_recently("k0")


def test_bound_prunes_delivered_then_drops_telemetry_never_alarms(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", max_bytes=800 * 1024)  # of which 160 KiB for the WAL (disk.py)
    pad = "x" * 400
    outputs: dict[str, frozenset[str] | None] = {"influx": None}
    delivered = store.append([event(pad=pad) for _ in range(400)], outputs)
    store.delivered("influx", [e.seq for e in delivered])
    alarms = store.append([event(Kind.SOS_PRESSED, Family.SOS, pad=pad) for _ in range(300)], outputs)
    telemetry = store.append([event(pad=pad) for _ in range(900)], outputs)
    assert store.used_bytes() > store.max_bytes

    removed = store.enforce_bound(processed_seq=telemetry[-1].seq)

    assert removed["pruned"] == 400  # all delivered events went first
    assert removed["dropped"] > 0  # then the oldest undelivered telemetry
    assert store.used_bytes() <= store.max_bytes
    left = store.events_after(0, limit=10_000)
    assert {e.seq for e in alarms} <= {e.seq for e in left}  # every alarm event is kept
    kept_telemetry = [e.seq for e in left if e.kind is Kind.DOOR_OPENED]
    assert kept_telemetry and kept_telemetry == [e.seq for e in telemetry][-len(kept_telemetry) :]  # newest kept
    c = store.counters()
    assert c["pruned"] == 400 and c["dropped"] == removed["dropped"]
    assert store.pending_count("influx") == 300 + len(kept_telemetry)


def test_bound_never_touches_events_the_alert_path_has_not_seen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", max_bytes=64 * 1024)
    stored = store.append([event(pad="y" * 400) for _ in range(500)], {"influx": None})
    removed = store.enforce_bound(processed_seq=100)
    assert removed["dropped"] == 100
    assert store.events_after(0, limit=1)[0].seq == 101
    assert store.over_bound  # the rest is protected, and the store says so
    assert len(store.events_after(0, limit=10_000)) == len(stored) - 100


def test_only_alarms_left_grows_past_the_bound(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", max_bytes=32 * 1024)
    store.append([event(Kind.FALL_DETECTED, Family.FALL, pad="z" * 400) for _ in range(300)], {"influx": None})
    removed = store.enforce_bound(processed_seq=10_000)
    assert removed == {"pruned": 0, "dropped": 0}
    assert store.over_bound
    assert store.event_count() == 300


def test_last_event_at_is_the_newest_of_the_devices_in_the_window(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    evs = [event(device="a", t=100.0), event(device="b", t=150.0), event(device="a", t=200.0)]
    evs += [event(device="c", t=180.0), event(device="b", t=90.0)]  # a clock that stepped back
    store.append(evs, OUTPUTS)
    assert store.last_event_at(["a", "b"], 0.0, 1000.0) == 200.0
    assert store.last_event_at(["a", "b"], 0.0, 200.0) == 150.0  # until is excluded
    assert store.last_event_at(["b"], 0.0, 140.0) == 90.0
    assert store.last_event_at(["a"], 200.0, 201.0) == 200.0  # since is included
    assert store.last_event_at(["a", "b"], 160.0, 200.0) is None  # only c's event in it
    assert store.last_event_at([], 0.0, 1000.0) is None
    many = [f"x{i}" for i in range(2000)] + ["c"]  # more than SQLite takes as parameters once
    assert store.last_event_at(many, 0.0, 1000.0) == 180.0
    store.close()
