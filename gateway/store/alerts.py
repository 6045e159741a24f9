"""Alerts: the ``alerts``, ``outbox`` (messages still to be published), ``alert_log`` (each
alert's audit trail) and ``rule_state`` (the rule engine's timers and windows) tables.

The rules' state is in one of two tables, ``rule_state`` and ``rule_state_1``; meta
``rule_state.table`` says which (none: the first). A save of a few entries changes it in place.
A checkpoint of a busy minute (some 20,000 entries at 1,000 msg/s) is instead written into the
other table, a range of keys a transaction (``save_rule_state``): the unchanged rows copied by
SQLite, the changed ones over them. Then one small transaction makes it the state, with its
cursor, and the table it leaves is emptied a range at a time. Each transaction holds the
writers' lock for a few milliseconds; one transaction of the whole held it for 40-80 ms, and an
alarm's commit that came meanwhile waited for it. A rewrite cut short (a crash, a full disk)
before the switch leaves the state as it was: what it wrote is never read, and the next one
empties the table first; cut short after it, the next one empties what is left of the old."""

from __future__ import annotations

import bisect
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.models import Alert
from gateway.store.base import StoreBase, insert_rows, key_bounds
from gateway.store.meta import _set_meta
from gateway.store.visits import VisitRow, _insert_visits

ALERTS_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(dedup_key, state);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_state_1 (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    channel TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_alert ON alert_log(alert_id, id);
"""


# The two tables of the rules' state, by the number meta ``rule_state.table`` holds.
RULE_STATE_TABLES = ("rule_state", "rule_state_1")
# A save of this many entries or more is written into the other table (``save_rule_state``).
# Fewer change in place within a few milliseconds; a rewrite writes every row of the state
# (some 25,000 at 5,000 households), so below this it would cost the SD card more than it saves.
REWRITE_FROM = 4096
# Rows of the table one transaction of such a rewrite copies at most (a few milliseconds).
REWRITE_KEYS = 1024


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    channel: str
    topic: str
    payload: str
    retain: bool


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of an alert's audit trail: who knew, and when (docs/alerts.md)."""

    alert_id: str
    at: float
    action: str  # raised / escalated / paged / delivered / failed / acknowledged / resolved …
    actor: str = "system"  # a person id, "rule:<id>" or "system"
    channel: str = ""
    detail: Mapping[str, Any] | None = None


class AlertsStore(StoreBase):
    def open_alert(self, dedup_key: str) -> Alert | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM alerts WHERE dedup_key = ? AND state != 'resolved' ORDER BY raised_at DESC LIMIT 1",
                (dedup_key,),
            ).fetchone()
        return None if row is None else Alert.from_dict(json.loads(row[0]))

    def raised_since(self, dedup_key: str, since: float) -> int:
        """How many alerts were raised under ``dedup_key`` since ``since`` (flap detection)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM alerts WHERE dedup_key = ? AND raised_at >= ?", (dedup_key, since)
            ).fetchone()
        return int(row[0])

    def alerts_by_prefix(self, prefix: str, limit: int = 10) -> list[Alert]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM alerts WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, prefix + "\uffff", limit),
            ).fetchall()
        return [Alert.from_dict(json.loads(r[0])) for r in rows]

    def alerts(self, open_only: bool = False, limit: int = 1000) -> list[Alert]:
        sql = "SELECT body FROM alerts"
        if open_only:
            sql += " WHERE state != 'resolved'"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY raised_at, id LIMIT ?", (limit,)).fetchall()
        return [Alert.from_dict(json.loads(r[0])) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else Alert.from_dict(json.loads(row[0]))

    def save_alerts(
        self,
        alerts: Sequence[Alert],
        messages: Sequence[tuple[str, str, str, bool]],
        cursor: tuple[str, int] | None = None,
        now: float = 0.0,
        rule_state: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
        visits: Sequence[VisitRow] = (),
        more_cursors: Sequence[tuple[str, int]] = (),
        log: Sequence[LogRow] = (),
        durable: bool = True,
    ) -> list[OutboxMessage]:
        """Store alert states, queue their outbound messages, save rule-engine state and move
        a cursor, atomically; return the queued messages with their outbox ids.

        ``messages`` are ``(channel, topic, payload, retain)``; ``cursor`` is ``(name, seq)``:
        the last event the alert path has fully handled; ``rule_state`` are changed entries
        (``None``: deleted). ``visits`` are visit records (one per causing event: a repeat is
        ignored) and ``more_cursors`` other cursors moved with them (the visit tracker's).
        ``durable=False``: what the rules derived from stored events, replayed to the same end
        after a power cut (``_tx``).
        """
        with self._tx(durable) as db:
            _insert_visits(db, visits)
            for name, position in more_cursors:
                _set_meta(db, f"cursor.{name}", str(position))
            _write_rule_state(db, rule_state_rows(rule_state))
            for alert in alerts:
                _upsert_alert(db, alert)
            _insert_log(db, log)
            queued = _insert_outbox(db, messages, now)
            if cursor is not None:
                _set_meta(db, f"cursor.{cursor[0]}", str(cursor[1]))
        return queued

    def save_rule_state(
        self,
        rows: Sequence[tuple[str, str | None]],
        cursor: tuple[str, int],
        between: Callable[[], None] = lambda: None,
    ) -> None:
        """The rule engine's changed entries as ``rule_state_rows`` made them, and a cursor,
        without an fsync of their own (state derived from stored events): fewer than
        ``REWRITE_FROM`` in one transaction, more into the other table, ``REWRITE_KEYS`` rows a
        transaction, ``between`` called before each (the module's docstring). Only one thread
        may save the rules' state at a time (gateway/alerts/path.py: its state lock). The
        caller serialises the rows first, outside the writers' lock (``checkpoint_behind``)."""
        if len(rows) < REWRITE_FROM:
            with self._tx(durable=False) as db:
                _write_rule_state(db, rows)
                _set_meta(db, f"cursor.{cursor[0]}", str(cursor[1]))
            return
        with self._lock:
            now = _rule_table(self._db)
            edges = key_bounds(self._db, RULE_STATE_TABLES[now], "key", REWRITE_KEYS)
        old, new = RULE_STATE_TABLES[now], RULE_STATE_TABLES[1 - now]
        with self._tx(durable=False) as db:
            db.execute(f"DELETE FROM {new}")  # empty, unless a rewrite was cut short
        rows = sorted(dict(rows).items())  # a key saved twice: the last one stays
        keys = [k for k, _ in rows]
        ranges = list(zip([None, *edges], [*edges, None], strict=True))
        for lo, hi in ranges:
            first = 0 if lo is None else bisect.bisect_left(keys, lo)
            end = len(keys) if hi is None else bisect.bisect_left(keys, hi)
            between()
            with self._tx(durable=False) as db:
                where, bounds = _key_range(lo, hi)
                db.execute(f"INSERT INTO {new}(key, value) SELECT key, value FROM {old}{where}", bounds)
                _write_rule_state(db, rows[first:end], new)
        between()
        with self._tx(durable=False) as db:
            _set_meta(db, "rule_state.table", str(1 - now))
            _set_meta(db, f"cursor.{cursor[0]}", str(cursor[1]))
        for lo, hi in ranges:  # the old table emptied a range at a time too: at once, 20 ms
            between()
            with self._tx(durable=False) as db:
                where, bounds = _key_range(lo, hi)
                db.execute(f"DELETE FROM {old}{where}", bounds)

    def rule_state(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            table = RULE_STATE_TABLES[_rule_table(self._db)]
            rows = self._db.execute(f"SELECT key, value FROM {table} ORDER BY key").fetchall()
        return [(k, json.loads(v)) for k, v in rows]

    # ------------------------------------------------------------------ outbox

    def outbox_batch(self, channel: str, limit: int = 100) -> list[OutboxMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, channel, topic, payload, retain FROM outbox WHERE channel = ? ORDER BY id LIMIT ?",
                (channel, limit),
            ).fetchall()
        return [OutboxMessage(i, c, t, p, bool(r)) for i, c, t, p, r in rows]

    def outbox_done(self, ids: Sequence[int]) -> None:
        # Lost in a power cut, the rows are published again: consumers deduplicate (publisher.py).
        with self._tx(durable=False) as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ audit trail

    def alert_log(self, alert_id: str) -> list[LogRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, at, action, actor, channel, detail FROM alert_log WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            ).fetchall()
        return [LogRow(a, at, act, who, ch, json.loads(d)) for a, at, act, who, ch, d in rows]


def rule_state_rows(entries: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[tuple[str, str | None]]:
    """Rule-engine entries as ``rule_state`` rows: JSON by orjson (None: deleted)."""
    return [(k, None if v is None else orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()) for k, v in entries]


def _rule_table(db: sqlite3.Connection) -> int:
    """Which of ``RULE_STATE_TABLES`` holds the rules' state."""
    row = db.execute("SELECT value FROM meta WHERE key = 'rule_state.table'").fetchone()
    return 1 if row is not None and row[0] == "1" else 0


def _key_range(lo: str | None, hi: str | None) -> tuple[str, list[str]]:
    """A WHERE clause for ``lo <= key < hi`` (None: unbounded) and its parameters."""
    terms, args = [], []
    if lo is not None:
        terms.append("key >= ?")
        args.append(lo)
    if hi is not None:
        terms.append("key < ?")
        args.append(hi)
    return (" WHERE " + " AND ".join(terms) if terms else ""), args


def _write_rule_state(db: sqlite3.Connection, rows: Sequence[tuple[str, str | None]], table: str = "") -> None:
    """Rows into ``table`` (default: the one holding the state): None deletes its key; of a key
    given twice, the last row stays."""
    table = table or RULE_STATE_TABLES[_rule_table(db)]
    latest = dict(rows)
    db.executemany(f"DELETE FROM {table} WHERE key = ?", [(k,) for k, v in latest.items() if v is None])
    insert_rows(
        db,
        f"INSERT INTO {table}(key, value)",
        [row for row in latest.items() if row[1] is not None],
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )


def _upsert_alert(db: sqlite3.Connection, alert: Alert) -> None:
    db.execute(
        "INSERT INTO alerts(id, dedup_key, state, raised_at, body) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
        (
            alert.id,
            alert.dedup_key,
            alert.state.value,
            alert.raised_at,
            json.dumps(alert.to_dict(), ensure_ascii=False),
        ),
    )


def _insert_outbox(
    db: sqlite3.Connection, messages: Iterable[tuple[str, str, str, bool]], now: float
) -> list[OutboxMessage]:
    """Queue messages; return them with their ids (a few per transition: one insert each)."""
    queued = []
    for c, t, p, r in messages:
        cur = db.execute(
            "INSERT INTO outbox(channel, topic, payload, retain, created_at) VALUES (?, ?, ?, ?, ?)",
            (c, t, p, int(r), now),
        )
        queued.append(OutboxMessage(int(cur.lastrowid or 0), c, t, p, bool(r)))
    return queued


def _insert_log(db: sqlite3.Connection, rows: Iterable[LogRow]) -> None:
    db.executemany(
        "INSERT INTO alert_log(alert_id, at, action, actor, channel, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (r.alert_id, r.at, r.action, r.actor, r.channel, json.dumps(dict(r.detail or {}), ensure_ascii=False))
            for r in rows
        ],
    )
