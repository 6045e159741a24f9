"""Schema versions: a store from the release before versions (commit 2a83890, the fixture
testdata/store-v0.sql) and one of version 1 (commit 4145940, testdata/store-v1.sql) migrate with
their data; a newer store is refused; a failed migration leaves the file as it was; new
aggregates' tables still appear in old stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.models import AlertState, Kind
from gateway.store import Store
from gateway.store import schema as store_schema
from gateway.store.schema import SCHEMA_VERSION, Migration, has_column
from tests.gateway.factories import event

V0_SQL = Path(__file__).parent / "testdata" / "store-v0.sql"
V1_SQL = Path(__file__).parent / "testdata" / "store-v1.sql"
T0 = 1_795_305_600.0
T1 = 1_796_601_600.0  # the v1 fixture's first event


def v0_store(path: Path, sql: Path = V0_SQL) -> Path:
    db = sqlite3.connect(path)
    db.executescript(sql.read_text(encoding="utf-8"))
    db.close()
    return path


def indexes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        db.close()


def version_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_new_store_has_the_current_version_and_ran_no_migration(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.schema_version() == SCHEMA_VERSION >= 1
    assert store.migrated == []
    assert store.first_event_at() is None
    store.append([event(t=T0)], {})
    store.append([event(t=T0 + 5)], {})
    assert store.first_event_at() == T0  # the first one, not the latest
    store.close()


def test_a_store_from_the_previous_release_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = v0_store(tmp_path / "old.db")
    assert version_of(path) == 0
    store = Store(path)
    try:
        assert [m.version for m in store.migrated] == list(range(1, SCHEMA_VERSION + 1))
        assert store.schema_version() == SCHEMA_VERSION
        events = store.events_after(0)
        assert [e.kind for e in events] == [Kind.DOOR_OPENED, Kind.FALL_DETECTED, Kind.VISIT]
        assert events[0].location.household == "3-2-502" and events[0].values == {"contact": False}
        assert store.pending_count("influx") == 2
        (alert,) = store.alerts()
        assert alert.id == "a-0001" and alert.state is AlertState.ACKNOWLEDGED and alert.acked_by == "s-day"
        assert alert.message_zh == "3号楼2单元502 跌倒报警"
        assert store.cursor("alerts") == 2
        assert store.cursor("rules") == 2  # migration 4: the rules' state was saved with the alerts
        (visit,) = store.visits()
        assert (visit.household, visit.visitor, visit.note, visit.event_seq) == ("3-2-502", "v-li", "送饭", 3)
        assert store.counters()["accepted"] == 3
        assert store.seen_recently("k1")  # recent_ingest, made again by migration 2
        assert store.first_event_at() == T0  # backfilled by migration 1
        # Tables the release after 2a83890 added (console users) exist and work.
        store.set_password_hash("s-day", "$argon2id$x", T0)
        user = store.user("s-day")
        assert user is not None and user.password_hash == "$argon2id$x"
        # New events continue the old sequence.
        (new,) = store.append([event(t=T0 + 7200)], {"influx": None})
        assert new.seq == 4
    finally:
        store.close()
    again = Store(path)
    assert again.migrated == [] and again.schema_version() == SCHEMA_VERSION
    again.close()


def test_a_store_of_version_1_loses_its_indexes_on_random_keys_and_keeps_its_data(tmp_path: Path) -> None:
    path = v0_store(tmp_path / "v1.db", V1_SQL)
    assert version_of(path) == 1
    assert {"events_device_time", "sqlite_autoindex_recent_ingest_1"} <= indexes(path)
    store = Store(path)
    try:
        assert [m.version for m in store.migrated] == list(range(2, SCHEMA_VERSION + 1))
        # Version 3: device_state is written behind the events; its rows already held all four.
        assert store.meta("device_state.seq") == "4"
        door = store.device_states()["3-2-502-door"]
        assert (door.events, door.last_seen, door.state) == (2, T1 + 60, "door_closed")
        assert [e.kind for e in store.events_after(0)] == [
            Kind.DOOR_OPENED,
            Kind.SMOKE_CLEAR,
            Kind.DOOR_CLOSED,
            Kind.BATTERY,
        ]
        assert store.pending_count("influx") == 4
        assert all(store.seen_recently(k) for k in ("k1", "k2", "k3")) and not store.seen_recently("k4")
        assert store.last_event_at(["3-2-502-door", "3-2-502-sos"], T1, T1 + 80) == T1 + 60
        # The keys kept their order: k1, stored again last, is the newest.
        assert store.forget_ingest_keys(older_than=0.0, keep=1) == 2
        assert store.seen_recently("k1") and not store.seen_recently("k2")
        (new,) = store.append([event(device="3-2-502-door", t=T1 + 120)], {"influx": None}, [("k2", T1 + 120)])
        assert new.seq == 5 and store.seen_recently("k2")
        assert store.last_event_at(["3-2-502-door"], T1, T1 + 200) == T1 + 120
        assert store.device_states()["3-2-502-door"].events == 3
        store.summarise()
        assert store.device_states()["3-2-502-door"].events == 3
    finally:
        store.close()
    found = indexes(path)
    assert "events_received" in found
    assert not {"events_device_time", "sqlite_autoindex_recent_ingest_1"} & found
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'recent_ingest'").fetchone()[0] == 5
    finally:
        db.close()
    again = Store(path)
    assert again.migrated == [] and again.schema_version() == SCHEMA_VERSION
    again.close()


def test_a_store_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this SenseGate"):
        Store(path)
    assert version_of(path) == SCHEMA_VERSION + 1


def test_a_failing_migration_rolls_back_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def add_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT ''")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("UPDATE no_such_table SET x = 1")

    migrations = (*store_schema.MIGRATIONS, Migration(90, "add origin", add_column), Migration(91, "broken", broken))
    monkeypatch.setattr("gateway.store.base.open_schema", _with(migrations))
    path = v0_store(tmp_path / "old.db")
    with pytest.raises(StoreError, match=r"migration to version 91: broken.*the file is unchanged"):
        Store(path)
    assert version_of(path) == 0
    db = sqlite3.connect(path)
    try:
        assert not has_column(db, "events", "origin")  # version 90's change was rolled back too
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_device_time'").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'users'").fetchone()[0] == 0
        assert db.execute("SELECT value FROM meta WHERE key = 'store.first_event_at'").fetchone() is None
    finally:
        db.close()


def test_a_migration_changes_an_existing_table_and_the_version_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT ''")

    migrations = (*store_schema.MIGRATIONS, Migration(SCHEMA_VERSION + 1, "add origin", add_column))
    monkeypatch.setattr("gateway.store.base.open_schema", _with(migrations))
    path = v0_store(tmp_path / "old.db")
    store = Store(path)
    assert [m.version for m in store.migrated] == [*range(1, SCHEMA_VERSION + 1), SCHEMA_VERSION + 1]
    assert store.schema_version() == SCHEMA_VERSION + 1
    store.close()


def test_a_new_aggregate_table_appears_in_an_old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the testmode / device_state aggregates do: CREATE TABLE IF NOT EXISTS in their DDL.
    ddl = "CREATE TABLE IF NOT EXISTS device_state_x (device TEXT PRIMARY KEY, body TEXT NOT NULL);\n"
    monkeypatch.setattr(Store, "_SCHEMA", (*Store._SCHEMA, ddl))
    path = v0_store(tmp_path / "old.db")
    store = Store(path)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'device_state_x'").fetchone()[0] == 1
    db.close()


def _with(migrations: tuple[Migration, ...]):  # type: ignore[no-untyped-def]
    def open_schema(db: sqlite3.Connection, ddl: str, path: object) -> list[Migration]:
        return store_schema.open_schema(db, ddl, path, migrations)

    return open_schema
