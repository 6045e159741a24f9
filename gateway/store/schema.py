"""Schema versions: ``PRAGMA user_version`` and the ordered migrations that bring an older store
to this release's shape.

Opening a store (``StoreBase.__init__``) runs, in one ``BEGIN IMMEDIATE`` transaction:

1. refuse a store whose version is newer than ``SCHEMA_VERSION`` (written by a newer SenseGate:
   this code does not know its tables' shape; upgrade SenseGate or restore a backup);
2. each migration after the store's version, in order (a store made before versions existed
   is version 0);
3. every aggregate's ``CREATE TABLE IF NOT EXISTS`` DDL: tables new in this release appear in
   their newest shape;
4. ``PRAGMA user_version = SCHEMA_VERSION``.

If any step fails the transaction rolls back and the file is as it was. A brand-new file runs
no migration: its tables are created from the DDL directly.

Where a change goes:

- a new table (a new aggregate: testmode, device_state …): its ``CREATE TABLE IF NOT EXISTS``
  in its module's DDL, listed in ``Store._SCHEMA``. No migration, no version bump: step 3
  creates it in old stores too.
- a change to an existing table or its rows (a column, an index on a new column, a backfill):
  change the aggregate's DDL to the new shape *and* append a migration here that brings an
  existing table to it. A released migration is never edited or reordered. Migrations run
  before the DDL, so one that touches a table must allow that the table does not exist yet
  (``has_table``): the DDL then creates it in the new shape.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int  # the store's version once it has run
    what: str
    apply: Callable[[sqlite3.Connection], None]


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _first_event_at(db: sqlite3.Connection) -> None:
    """Record when the store first accepted an event (``meta store.first_event_at``), from the
    oldest row kept: events are pruned, visits and alerts are not. New stores record it as the
    first event is inserted. A visit report for a month before it says so instead of 0 %."""
    sources = [("events", "received_at"), ("visits", "at"), ("alerts", "raised_at")]
    times = [
        row[0]
        for table, column in sources
        if has_table(db, table)
        for row in db.execute(f"SELECT MIN({column}) FROM {table}")
        if row[0] is not None
    ]
    if times and has_table(db, "meta"):
        db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('store.first_event_at', ?)", (repr(min(times)),))


def _fewer_random_pages(db: sqlite3.Connection) -> None:
    """Drop the two indexes on random keys that cost a commit a page per event or message
    (docs/store.md, "What a batch costs"): ``events_device_time`` (device, time), whose one
    reader (``last_event_at``) now walks ``events_received`` (received_at, device_id), which
    the DDL then builds; and the UNIQUE index on ``recent_ingest.key``, which SQLite cannot
    drop: the table is made again without it, its keys copied in order."""
    db.execute("DROP INDEX IF EXISTS events_device_time")
    if has_table(db, "recent_ingest"):
        db.execute(
            "CREATE TABLE recent_ingest_new (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, at REAL NOT NULL)"
        )
        db.execute("INSERT INTO recent_ingest_new(id, key, at) SELECT id, key, at FROM recent_ingest ORDER BY id")
        db.execute("DROP TABLE recent_ingest")
        db.execute("ALTER TABLE recent_ingest_new RENAME TO recent_ingest")


def _summaries_behind(db: sqlite3.Connection) -> None:
    """``device_state`` is written behind the events (gateway/store/devices.py): each row gets
    ``seq``, the last event folded into it, and meta ``device_state.seq`` says every event up to
    it is folded. Until now every event was folded as it was stored: the mark is the newest
    event. (``payload_log``, last_payload's log, is a new table: the DDL makes it.)"""
    if has_table(db, "device_state") and not has_column(db, "device_state", "seq"):
        db.execute("ALTER TABLE device_state ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    if has_table(db, "meta") and has_table(db, "events"):
        db.execute(
            "INSERT OR IGNORE INTO meta(key, value) SELECT 'device_state.seq', coalesce(MAX(seq), 0) FROM events"
        )


def _rules_behind(db: sqlite3.Connection) -> None:
    """The rule engine's state (``rule_state``) is saved behind the alerts, with a cursor of its
    own, meta ``cursor.rules`` (gateway/alerts/path.py). Until now it was saved with the alert
    cursor: it includes every event up to ``cursor.alerts``."""
    if has_table(db, "meta"):
        db.execute(
            "INSERT OR IGNORE INTO meta(key, value) SELECT 'cursor.rules', value FROM meta WHERE key = 'cursor.alerts'"
        )


def _rule_state_compact(db: sqlite3.Connection) -> None:
    """``rule_state`` values are written without what their key says (edge_rules/engine.py
    ``_stored``), and the state may be in ``rule_state_1`` (a new table: gateway/store/alerts.py).
    Nothing to change: this release reads the rows written before as they are, and the version
    keeps an older release, which would drop the new rows (every rule timer started again) and
    does not read that table, from opening the store."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "meta store.first_event_at from the oldest event, visit or alert", _first_event_at),
    Migration(2, "no index on a device or an ingest key: events_received instead", _fewer_random_pages),
    Migration(3, "device_state and last_payload written behind the events: device_state.seq", _summaries_behind),
    Migration(4, "the rules' state saved behind the alerts: cursor.rules", _rules_behind),
    Migration(5, "the rules' state without what its keys say (older releases would drop it)", _rule_state_compact),
)
SCHEMA_VERSION = MIGRATIONS[-1].version if MIGRATIONS else 0


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def open_schema(
    db: sqlite3.Connection, ddl: str, path: object, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """Bring the store on ``db`` (autocommit mode) to the newest version; return the migrations
    that ran. Raises ``StoreError`` for a store from a newer release or a failed migration."""
    latest = migrations[-1].version if migrations else 0
    found = user_version(db)
    if found > latest:  # before taking the write lock: a read of the header is enough to refuse
        raise _newer(path, found, latest)
    ran: list[Migration] = []
    step = ""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(db)  # another process may have migrated it while we waited
        if found > latest:
            raise _newer(path, found, latest)
        fresh = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        if not fresh:
            for migration in migrations:
                if migration.version > found:
                    step = f" (migration to version {migration.version}: {migration.what})"
                    migration.apply(db)
                    ran.append(migration)
        step = " (creating tables)"
        # executescript would COMMIT first: run the DDL statement by statement in this transaction.
        for statement in _statements(ddl):
            db.execute(statement)
        if found != latest:
            db.execute(f"PRAGMA user_version = {int(latest)}")
        db.execute("COMMIT")
    except BaseException as exc:
        db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot open store {path}{step}: {exc}; the file is unchanged") from exc
        raise
    return ran


def _newer(path: object, found: int, latest: int) -> StoreError:
    return StoreError(
        f"store {path} has schema version {found}, newer than this SenseGate knows ({latest}): it was written "
        f"by a newer release. Upgrade SenseGate, or restore a backup made by this one (sensegate restore)"
    )


def _statements(script: str) -> list[str]:
    """Split DDL into statements (``sqlite3.complete_statement`` decides where one ends)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out
