"""The durable store: SQLite in WAL mode, the single place where durability lives.

``Store`` (``gateway/store/store.py``) is one class composed from one part per aggregate; the
parts share this module's connection, lock and transaction helper. Each table's DDL and SQL
is in its aggregate's module (see docs/store.md for the full picture):

- ``events.py``: ``events``, every accepted event, in ``seq`` order. An event is *accepted*
  when the transaction that inserted it has committed; only then does the ingest acknowledge
  it. ``pending(output, seq)``: one row per event still to be delivered to an output; the
  forwarder deletes the row once the database confirmed the write. ``dead_letter``: events
  an output rejected as malformed, with the reason, and payloads the ingest could not decode.
  ``recent_ingest``: keys of recently accepted MQTT messages, to recognise a broker's
  redelivery (DUP) of a message whose PUBACK was lost in a crash. Only messages inside the
  broker's in-flight window can be redelivered, so the newest ``INGEST_KEYS_KEEP`` keys are
  enough (Mosquitto's ``max_inflight_messages`` is 20 by default, 1000 in our advice). No
  index on the key: a lookup happens only for a redelivery (see ``seen_recently``).
  ``last_payload(topic, digest)``: the last MQTT message handled on each topic, to tell a
  retained message replayed on subscribe from one never seen (gateway/ingest/retained.py);
  one row per topic the ingest decodes (unknown devices leave none), never pruned; written
  behind ``payload_log``, where ``append`` adds each message's digest (events.py).
- ``disk.py``: no table; the disk bound (``enforce_bound``, ``_make_room`` on every write of
  events), the reserve file and a full filesystem (docs/store.md, "A full disk"); in the
  gateway, ``checkpoint.py``'s thread folds the WAL into the database beside the writers.
- ``alerts.py``: ``alerts`` and ``outbox``, alerts and the messages about them still to be
  published; ``alert_log``, each alert's audit trail; ``rule_state`` (or ``rule_state_1``),
  the rule engine's timers, windows and open-alert bookkeeping, saved behind the alerts with a
  cursor of its own, so a restart resumes every timer.
- ``notifications.py``: ``escalations`` (where an open alert is on its ladder) and
  ``notifications`` (messages queued per channel, with their retries).
- ``visits.py``: ``visits``, 探访记录 (who, household, residents, when, how: access | mqtt |
  cli, note), one per causing event (``event_seq``), see docs/visits.md. Never pruned.
- ``commands.py``: ``commands``, acknowledgements / resolutions queued for the running gateway.
- ``users.py``: ``users`` (argon2 password hashes of the people who sign in to the console),
  ``sessions`` (signed-in browsers, by the SHA-256 of their id) and ``api_tokens`` (one per
  integration, by the SHA-256 of the token; revocable). See docs/console.md.
- ``testmode.py``: ``test_modes`` (测试模式: scope, who, until when), the devices each covers,
  their audit trail, ``would_have`` (what events in test mode would have raised) and walk
  tests (``commissions``, the devices heard during each, the finished report). It also marks
  events from devices in test mode inside ``append``'s transaction (docs/installer.md).
- ``devices.py``: ``device_state``, one row per device: its last report, battery, link quality,
  tamper, state and last sign of activity, so the console reads devices without scanning
  ``events``; written behind the events in passes, read with the events after each row folded
  in. Never pruned.
- ``history.py``: no table of its own: indexes on ``alerts`` (time, device, resident) and the
  console's search of past alerts.
- ``meta.py``: ``meta``, cursors and visit-plan start times; this module: ``counters``,
  lifetime counters, bumped inside every aggregate's transactions.

The schema has a version (``PRAGMA user_version``); opening an older store migrates it in one
transaction, a store from a newer release is refused (``schema.py``: where a new table and where
a change to an existing one go).

Disk use is bounded by ``max_bytes``, the WAL counted (disk.py). Before events are written,
room is made in this order, counting each step: (1) events already delivered everywhere and
already seen by the alert path (``pruned``), oldest first; (2) telemetry events not yet
delivered (``dropped``), oldest first. Alarm-lane events and alerts are never removed to
make room: when only they are left the store grows past the bound and says so. A full
filesystem releases a reserve file and refuses telemetry before it refuses an alarm.

All methods are synchronous and thread-safe (one connection behind a lock); async callers
run them with ``asyncio.to_thread``.

The store holds names, phone numbers and credentials: it is its owner's alone. Its directory is
created 0700, the database file 0600 before SQLite opens it (SQLite gives the ``-wal`` and
``-shm`` files the database file's mode), and a store an older version left readable by others
is narrowed to 0600 when opened. A directory that already exists is left as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from gateway.errors import StoreError, StoreFullError
from gateway.store.schema import Migration, open_schema, user_version

COUNTERS_DDL = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class StoreBase:
    """The connection, its lock and the transaction helper every aggregate's part shares."""

    # The DDL run at open: the composed ``Store`` lists every aggregate's.
    _SCHEMA: ClassVar[tuple[str, ...]] = (COUNTERS_DDL,)

    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        on_disk = str(path) != ":memory:"  # SQLite's in-memory database: no file to make private
        try:
            if on_disk:
                _private_file(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            for companion in ("-wal", "-shm") if on_disk else ():
                _private_file(self.path.with_name(self.path.name + companion), create=False)
            # Derived-state commits drop to NORMAL for their own transaction (``_tx(durable=False)``).
            self._full_sync = synchronous == "full"
            self._db.execute(f"PRAGMA synchronous={'FULL' if self._full_sync else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self.migrated: list[Migration] = open_schema(self._db, "".join(self._SCHEMA), self.path)
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        except (sqlite3.Error, OSError) as exc:
            self._db_close_quietly()
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        except StoreError:
            self._db_close_quietly()
            raise
        self.over_bound = False  # true while only protected rows are left above the bound (enforce_bound)
        self._writer: int | None = None  # coordinate_writers

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None

    def coordinate_writers(self) -> None:
        """Queue this store's write transactions behind other processes' in the kernel, with an
        exclusive ``flock`` on ``<store>.writer`` around each, instead of in SQLite's busy
        handler, which polls with sleeps of 1, 2, 5, 10 … ms: a commit then waits for the one
        before it and no longer. For the gateway and its ingest process, which both write all
        the time (gateway/ingest/process.py); a CLI command writes as before."""
        with self._lock:
            if self._writer is None:
                self._writer = os.open(
                    self.path.with_name(self.path.name + ".writer"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, the writers' lock taken first when there is one (lock held)."""
        if self._writer is not None:
            fcntl.flock(self._writer, fcntl.LOCK_EX)
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._end()
            raise

    def _end(self) -> None:
        """After COMMIT or ROLLBACK: let the next writer in."""
        if self._writer is not None:
            fcntl.flock(self._writer, fcntl.LOCK_UN)
        self._wrote()

    def _wrote(self) -> None:
        """After a write transaction ended (disk.py: a checkpoint is due)."""

    def _db_close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def schema_version(self) -> int:
        with self._lock:
            return user_version(self._db)

    # ------------------------------------------------------------------ helpers

    def _tx(self, durable: bool = True) -> _Tx:
        """A write transaction. ``durable=False`` for state derived from what is stored already
        (the rules' saves, a forwarder's or the publisher's bookkeeping): committed without an
        fsync, on disk with the next commit that has one (see ``_Tx``)."""
        return _Tx(self, durable)

    def _relax_sync(self, relaxed: bool) -> None:
        """On a ``synchronous = "full"`` store, commit without an fsync (``relaxed``) or with one
        again: around one transaction of state derived from what is stored (``_Tx``)."""
        if self._full_sync:
            self._db.execute(f"PRAGMA synchronous={'NORMAL' if relaxed else 'FULL'}")

    def _before_write(self) -> None:
        """Called with the lock held, before a write transaction begins (disk.py: the disk's room)."""

    def _on_full(self) -> None:
        """Called with the lock held, after a write failed with SQLITE_FULL and was rolled back
        (disk.py: release the reserve, evict, checkpoint)."""

    @staticmethod
    def _bump(db: sqlite3.Connection, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            if n:
                db.execute(
                    "INSERT INTO counters(name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, n),
                )

    # ------------------------------------------------------------------ counters

    def count(self, names: dict[str, int]) -> None:
        """Commit counter increments on their own (e.g. malformed payloads with no event)."""
        with self._tx() as db:
            self._bump(db, names)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {n: int(v) for n, v in self._db.execute("SELECT name, value FROM counters ORDER BY name")}


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _private_file(path: Path, *, create: bool = True) -> None:
    """Make ``path`` readable and writable by its owner only: create it (and its directory, 0700)
    with that mode, or narrow the mode of one that exists."""
    if create and not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        if create:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE))
        return
    if mode & 0o077:
        path.chmod(mode & 0o700)


class _Tx:
    """``with store._tx() as db``: hold the lock, BEGIN IMMEDIATE … COMMIT (or ROLLBACK).

    Before BEGIN the store looks at its disk (``_before_write``); a write that fails with
    SQLITE_FULL is rolled back, the store makes room (``_on_full``) and ``StoreFullError`` says
    that the same write is worth trying once more (gateway/store/disk.py).

    ``durable=False`` (on a ``synchronous = "full"`` store): the transaction commits with
    ``synchronous=NORMAL``, its WAL frames written but not fsync'd. A power cut may then lose
    it, but only with every commit after it: the WAL is one log, replayed up to its last whole
    commit, and the next fsync'd commit (the ingest's, within a group-commit window while events
    arrive) makes all before it durable. A power cut can therefore leave only what a SIGKILL at
    some earlier moment would have left, which the gateway recovers from (docs/store.md, "What
    is fsync'd")."""

    def __init__(self, store: StoreBase, durable: bool = True) -> None:
        self._store = store
        self._relaxed = not durable

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        store._lock.acquire()
        try:
            store._before_write()
            if self._relaxed:
                store._relax_sync(True)
            store._begin()
        except sqlite3.Error as exc:
            self._restore()
            store._lock.release()
            raise StoreError(f"store {store.path}: {exc}") from exc
        except BaseException:
            self._restore()
            store._lock.release()
            raise
        return store._db

    def _restore(self) -> None:
        if self._relaxed:
            self._store._relax_sync(False)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        store = self._store
        db = store._db
        failed = exc if isinstance(exc, sqlite3.Error) else None
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as err:
                    failed = err
            # SQLite rolls a transaction back itself after some failures (a full disk at COMMIT).
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._restore()
            store._end()
            if failed is not None and is_full(failed):
                store._on_full()
        except sqlite3.Error as err:
            with contextlib.suppress(sqlite3.Error):
                self._restore()
            store._end()
            raise StoreError(f"store {store.path}: {err}") from err
        finally:
            store._lock.release()
        if failed is not None:
            error = StoreFullError if is_full(failed) else StoreError
            raise error(f"store {store.path}: {failed}") from failed


# Rows one INSERT takes at most (``insert_rows``): a power of two, its parameters within the
# limit of SQLite before 3.32 (999).
ROWS_PER_STATEMENT = 64
_OLD_PARAMETER_LIMIT = 999


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]], tail: str = "") -> None:
    """``db.executemany(f"{head} VALUES (?, …){tail}", rows)``, in the same order, with many rows
    a statement. sqlite3 lets go of the interpreter for each statement it steps and must take it
    again behind whichever thread computes: 512 rows one at a time beside a thread that
    computes took 157-239 ms on average (up to 1.8 s), 64 a statement 14-18 ms, and 1.8x less
    alone (bench/bench_rows.py). The statements come in a few sizes (a power of two each), so
    that the connection's statement cache keeps them. ``tail`` follows the rows: an ``ON
    CONFLICT`` clause (it cannot name a row's own parameters)."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"

    def statement(count: int) -> str:
        return f"{head} VALUES {','.join([one] * count)}{tail}"

    size = ROWS_PER_STATEMENT
    while size > 1 and size * width > _OLD_PARAMETER_LIMIT:
        size //= 2
    whole = len(rows) - len(rows) % size
    if whole:
        db.executemany(statement(size), [[v for row in rows[i : i + size] for v in row] for i in range(0, whole, size)])
    start = whole
    while start < len(rows):
        size //= 2  # the rest, in halves: 32, 16 … 1 rows a statement, as it needs
        if len(rows) - start >= size:
            db.execute(statement(size), [v for row in rows[start : start + size] for v in row])
            start += size


def key_bounds(db: sqlite3.Connection, table: str, key: str, size: int) -> list[str]:
    """Every ``size``-th key of a table, in order: where its ranges of ``size`` keys start (a
    summaries' pass, a rewrite of the rules' state). Each is found from the one before by
    SQLite stepping over ``size`` keys of the table's b-tree (``OFFSET``): not read into Python
    (tens of thousands of keys took milliseconds while a commit waited), nor all numbered (a
    window function took 10 ms for 18,000 rows, while the next commit waited; this 0.4 ms)."""
    first = f"SELECT {key} FROM {table} ORDER BY {key} LIMIT 1 OFFSET ?"
    after = f"SELECT {key} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT 1 OFFSET ?"
    out: list[str] = []
    row = db.execute(first, (size,)).fetchone()
    while row is not None:
        out.append(row[0])
        row = db.execute(after, (row[0], size)).fetchone()
    return out


def is_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: the filesystem refused to grow the database or its WAL (ENOSPC)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
