"""The durable store: SQLite in WAL mode, the single place where durability lives.

Tables (see docs/store.md for the full picture):

- ``events``: every accepted event, in ``seq`` order. An event is *accepted* when the
  transaction that inserted it has committed; only then does the ingest acknowledge it.
- ``pending(output, seq)``: one row per event still to be delivered to an output. The
  forwarder deletes the row once the database confirmed the write.
- ``dead_letter``: events an output rejected as malformed, with the reason.
- ``alerts`` and ``outbox``: alerts and the messages about them still to be published.
- ``rule_state``: the rule engine's timers, windows and open-alert bookkeeping, saved in the
  same transaction as the alerts and the event cursor, so a restart resumes every timer.
- ``recent_ingest``: keys of recently accepted MQTT messages, to recognise a broker's
  redelivery (DUP) of a message whose PUBACK was lost in a crash. Only messages inside the
  broker's in-flight window can be redelivered, so the newest ``INGEST_KEYS_KEEP`` keys are
  enough (Mosquitto's ``max_inflight_messages`` is 20 by default, 1000 in our advice).
- ``visits``: 探访记录 (who, household, residents, when, how: access | mqtt | cli, note),
  one per causing event (``event_seq``), see docs/visits.md. Never pruned.
- ``meta`` and ``counters``: cursors, visit-plan start times and lifetime counters.

Disk use is bounded by ``max_bytes``. When the live data grows past it, ``enforce_bound``
gives way in this order, counting each step: (1) events already delivered everywhere and
already seen by the alert path (``pruned``), oldest first; (2) telemetry events not yet
delivered (``dropped``), oldest first. Alarm-lane events and alerts are never removed to
make room: when only they are left the store grows past the bound and says so.

All methods are synchronous and thread-safe (one connection behind a lock); async callers
run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import StoreError
from gateway.models import Alert, Event, Lane

if TYPE_CHECKING:
    from gateway.config import SiteConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    lane TEXT NOT NULL,
    device_id TEXT NOT NULL,
    family TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_device_time ON events(device_id, event_time);
CREATE TABLE IF NOT EXISTS pending (
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (output, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_seq ON pending(seq);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
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
CREATE TABLE IF NOT EXISTS recent_ingest (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER,
    household TEXT NOT NULL,
    residents TEXT NOT NULL,
    visitor TEXT NOT NULL,
    at REAL NOT NULL,
    method TEXT NOT NULL,
    note TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (event_seq, household)
);
CREATE INDEX IF NOT EXISTS visits_at ON visits(at);
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
CREATE TABLE IF NOT EXISTS escalations (
    alert_id TEXT PRIMARY KEY,
    ladder TEXT NOT NULL,
    severity INTEGER NOT NULL,
    step INTEGER NOT NULL,
    next_at REAL,
    paged_at REAL NOT NULL,
    channels TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    done_at REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(channel, state, due_at);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# One pruning step removes about as many rows as the excess needs (by average row size),
# within these limits, then re-measures: dropping more telemetry than needed loses data.
_PRUNE_MIN, _PRUNE_MAX = 20, 5000
# Keys of accepted MQTT messages kept for recognising redeliveries (see recent_ingest).
INGEST_KEYS_KEEP = 20_000
# Dead letters kept for inspection; older ones go first when the table is longer.
_DEAD_LETTER_KEEP = 10_000
# Of a payload that could not be decoded, this much is kept for inspection.
_REJECTED_KEEP_BYTES = 4096


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    channel: str
    topic: str
    payload: str
    retain: bool


@dataclass(frozen=True, slots=True)
class VisitRow:
    """One 探访记录. ``residents`` are the covered residents of the household at the time."""

    household: str
    residents: tuple[str, ...]
    visitor: str
    at: float
    method: str  # "access" | "mqtt" | "cli"
    note: str = ""
    event_seq: int | None = None
    visitor_name: str = ""
    role: str = ""
    device_id: str = ""
    id: int = 0


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of an alert's audit trail: who knew, and when (docs/alerts.md)."""

    alert_id: str
    at: float
    action: str  # raised / escalated / paged / delivered / failed / acknowledged / resolved …
    actor: str = "system"  # a person id, "rule:<id>" or "system"
    channel: str = ""
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    """Where an open alert is on its ladder. ``step`` counts tiers notified (then repeats of
    the top tier); ``next_at`` is when the next step is due (None: stopped)."""

    alert_id: str
    ladder: str
    severity: int
    step: int
    next_at: float | None
    paged_at: float = 0.0  # when people were last paged about it
    channels: tuple[str, ...] = ()  # every channel used so far (they hear of ack / resolve)


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    id: int
    key: str
    channel: str
    alert_id: str
    due_at: float
    attempts: int
    state: str  # pending / sent / rejected
    last_error: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    at: float
    body: dict[str, Any]
    done_at: float | None
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    output: str
    seq: int
    reason: str
    at: float
    event: Event


class Store:
    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.executescript(_SCHEMA)
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self.over_bound = False  # true while only protected rows are left above the bound

    @classmethod
    def of_site(cls, config: SiteConfig) -> Store:
        """The site's store, with its configured bound and durability."""
        return cls(config.store_path, int(config.store.max_bytes), config.store.synchronous)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers

    def _tx(self) -> _Tx:
        return _Tx(self)

    @staticmethod
    def _bump(db: sqlite3.Connection, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            if n:
                db.execute(
                    "INSERT INTO counters(name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, n),
                )

    # ------------------------------------------------------------------ ingest

    def seen_recently(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM recent_ingest WHERE key = ?", (key,)).fetchone()
        return row is not None

    def append(
        self,
        events: Sequence[Event],
        outputs: dict[str, frozenset[str] | None],
        ingest_keys: Iterable[tuple[str, float]] = (),
        counts: dict[str, int] | None = None,
        rejected: Sequence[tuple[str, str, str, bytes]] = (),
        now: float = 0.0,
        commands: Sequence[Mapping[str, Any]] = (),
    ) -> list[Event]:
        """Insert events in one transaction; return them with ``seq`` set.

        ``outputs`` maps each output name to the families it takes (``None`` = all); a
        pending row is made for each output that takes the event. ``counts`` are counter
        increments committed in the same transaction (malformed, duplicates …).
        ``rejected`` are payloads that could not be decoded, ``(topic, reason, message,
        payload)``: kept in the dead-letter table (output ``ingest``) so nothing received is
        lost without a trace. ``commands`` are acknowledgements / resolutions that arrived
        over MQTT, queued for the alert path in the same transaction.
        """
        stored: list[Event] = []
        with self._tx() as db:
            for ev in events:
                body = ev.to_dict()
                del body["seq"]
                cur = db.execute(
                    "INSERT INTO events(lane, device_id, family, kind, event_time, received_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        ev.lane.value,
                        ev.device_id,
                        ev.family.value,
                        ev.kind.value,
                        ev.event_time,
                        ev.received_at,
                        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                    ),
                )
                seq = int(cur.lastrowid or 0)
                stored.append(replace(ev, seq=seq))
                for name, families in outputs.items():
                    if families is None or ev.family.value in families:
                        db.execute("INSERT INTO pending(output, seq) VALUES (?, ?)", (name, seq))
            db.executemany("INSERT OR REPLACE INTO recent_ingest(key, at) VALUES (?, ?)", ingest_keys)
            for topic, reason, message, payload in rejected:
                body = {
                    "topic": topic,
                    "message": message,
                    "payload_bytes": len(payload),
                    "payload": payload[:_REJECTED_KEEP_BYTES].decode("utf-8", errors="replace"),
                }
                db.execute(
                    "INSERT INTO dead_letter(output, seq, reason, at, body) VALUES ('ingest', 0, ?, ?, ?)",
                    (reason, now, json.dumps(body, ensure_ascii=False)),
                )
            db.executemany(
                "INSERT INTO commands(at, body) VALUES (?, ?)",
                [(now, json.dumps(c, ensure_ascii=False)) for c in commands],
            )
            self._bump(db, {"accepted": len(stored), **(counts or {})})
        return stored

    def count(self, names: dict[str, int]) -> None:
        """Commit counter increments on their own (e.g. malformed payloads with no event)."""
        with self._tx() as db:
            self._bump(db, names)

    def forget_ingest_keys(self, older_than: float, keep: int = INGEST_KEYS_KEEP) -> int:
        """Forget keys older than ``older_than`` and all but the newest ``keep``."""
        with self._tx() as db:
            old = db.execute("DELETE FROM recent_ingest WHERE at < ?", (older_than,)).rowcount
            extra = db.execute(
                "DELETE FROM recent_ingest WHERE id <= (SELECT MAX(id) FROM recent_ingest) - ?", (keep,)
            ).rowcount
        return int(old + extra)

    # ------------------------------------------------------------------ forwarding

    def pending_batch(self, output: str, limit: int) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT e.seq, e.body FROM pending p JOIN events e ON e.seq = p.seq "
                "WHERE p.output = ? ORDER BY p.seq LIMIT ?",
                (output, limit),
            ).fetchall()
        return [_event(seq, body) for seq, body in rows]

    def pending_count(self, output: str | None = None) -> int:
        with self._lock:
            if output is None:
                row = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM pending WHERE output = ?", (output,)).fetchone()
        return int(row[0])

    def delivered(self, output: str, seqs: Sequence[int]) -> None:
        """The output confirmed these events: forget them for that output."""
        with self._tx() as db:
            db.executemany("DELETE FROM pending WHERE output = ? AND seq = ?", [(output, s) for s in seqs])
            self._bump(db, {f"forwarded.{output}": len(seqs)})

    def dead_letter(self, output: str, events: Sequence[Event], reason: str, at: float) -> None:
        with self._tx() as db:
            for ev in events:
                db.execute("DELETE FROM pending WHERE output = ? AND seq = ?", (output, ev.seq))
                db.execute(
                    "INSERT INTO dead_letter(output, seq, reason, at, body) VALUES (?, ?, ?, ?, ?)",
                    (output, ev.seq, reason[:2000], at, json.dumps(ev.to_dict(), ensure_ascii=False)),
                )
            self._bump(db, {f"dead_lettered.{output}": len(events)})
            db.execute(
                "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                (_DEAD_LETTER_KEEP,),
            )

    def dead_letters(self, output: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Events an output rejected (not the ``ingest`` records: see ``rejected_payloads``)."""
        sql = "SELECT output, seq, reason, at, body FROM dead_letter WHERE output != 'ingest'"
        args: tuple[object, ...] = ()
        if output is not None:
            sql += " AND output = ?"
            args = (output,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [DeadLetter(o, s, r, a, Event.from_dict(json.loads(b))) for o, s, r, a, b in rows]

    def rejected_payloads(self, limit: int = 100) -> list[dict[str, object]]:
        """The most recent payloads the ingest could not decode, newest last."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, at, body FROM dead_letter WHERE output = 'ingest' ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"reason": r, "at": a, **json.loads(b)} for r, a, b in reversed(rows)]

    # ------------------------------------------------------------------ reading events

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [_event(s, b) for s, b in rows]

    def event_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    # ------------------------------------------------------------------ alerts and outbox

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

    def save_alerts(
        self,
        alerts: Sequence[Alert],
        messages: Sequence[tuple[str, str, str, bool]],
        cursor: tuple[str, int] | None = None,
        now: float = 0.0,
        rule_state: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
        replace_rule_state: bool = False,
        visits: Sequence[VisitRow] = (),
        more_cursors: Sequence[tuple[str, int]] = (),
        log: Sequence[LogRow] = (),
    ) -> None:
        """Store alert states, queue their outbound messages, save rule-engine state and move
        a cursor, atomically.

        ``messages`` are ``(channel, topic, payload, retain)``; ``cursor`` is ``(name, seq)``:
        the last event the alert path has fully handled; ``rule_state`` are changed entries
        (``None``: deleted), or with ``replace_rule_state`` the whole state. ``visits`` are
        visit records (one per causing event: a repeat is ignored) and ``more_cursors`` other
        cursors moved with them (the visit tracker's).
        """
        with self._tx() as db:
            _insert_visits(db, visits)
            for name, position in more_cursors:
                _set_meta(db, f"cursor.{name}", str(position))
            if replace_rule_state:
                db.execute("DELETE FROM rule_state")
            for key, value in rule_state:
                if value is None:
                    db.execute("DELETE FROM rule_state WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO rule_state(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value, ensure_ascii=False, separators=(",", ":"))),
                    )
            for alert in alerts:
                _upsert_alert(db, alert)
            _insert_log(db, log)
            _insert_outbox(db, messages, now)
            if cursor is not None:
                db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (f"cursor.{cursor[0]}", str(cursor[1])),
                )

    # ------------------------------------------------------------------ visits (探访)

    def append_visit(self, event: Event, visit: VisitRow) -> VisitRow:
        """Store a check-in event and its visit record in one transaction (the CLI's path)."""
        with self._tx() as db:
            body = event.to_dict()
            del body["seq"]
            cur = db.execute(
                "INSERT INTO events(lane, device_id, family, kind, event_time, received_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.lane.value,
                    event.device_id,
                    event.family.value,
                    event.kind.value,
                    event.event_time,
                    event.received_at,
                    json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                ),
            )
            visit = replace(visit, event_seq=int(cur.lastrowid or 0))
            _insert_visits(db, [visit])
            self._bump(db, {"accepted": 1, "visits": 1})
        return visit

    def visits(self, since: float | None = None, until: float | None = None) -> list[VisitRow]:
        """Visit records with ``since <= at < until``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM visits WHERE at >= ? AND at < ? ORDER BY at, id",
                (float("-inf") if since is None else since, float("inf") if until is None else until),
            ).fetchall()
        return [_visit(i, b) for i, b in rows]

    def last_visits(self) -> dict[str, float]:
        """Per resident, the time of the latest recorded visit."""
        out: dict[str, float] = {}
        for v in self.visits():
            for r in v.residents:
                out[r] = max(out.get(r, v.at), v.at)
        return out

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            _set_meta(db, key, value)

    def metas(self, prefix: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix + "\uffff")
            ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def set_meta_default(self, items: Mapping[str, str]) -> None:
        """Set meta keys that have no value yet (visit-plan start times)."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", list(items.items()))

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else Alert.from_dict(json.loads(row[0]))

    def rule_state(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM rule_state ORDER BY key").fetchall()
        return [(k, json.loads(v)) for k, v in rows]

    def cursor(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"cursor.{name}",)).fetchone()
        return int(row[0]) if row else 0

    def outbox_batch(self, channel: str, limit: int = 100) -> list[OutboxMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, channel, topic, payload, retain FROM outbox WHERE channel = ? ORDER BY id LIMIT ?",
                (channel, limit),
            ).fetchall()
        return [OutboxMessage(i, c, t, p, bool(r)) for i, c, t, p, r in rows]

    def outbox_done(self, ids: Sequence[int]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ notifications (docs/alerts.md)

    def save_notify(
        self,
        *,
        alerts: Sequence[Alert] = (),
        escalations: Sequence[Escalation] = (),
        drop_escalations: Sequence[str] = (),
        notifications: Sequence[tuple[str, str, str, float, Mapping[str, Any]]] = (),
        log: Sequence[LogRow] = (),
        messages: Sequence[tuple[str, str, str, bool]] = (),
        now: float = 0.0,
    ) -> int:
        """Alert states, ladder positions, queued notifications ``(key, channel, alert_id,
        due_at, body)``, audit lines and MQTT messages in one transaction. A notification whose
        key is already queued is not queued again (a step replayed after a crash). Returns the
        number of notifications queued."""
        with self._tx() as db:
            for alert in alerts:
                _upsert_alert(db, alert)
            for e in escalations:
                db.execute(
                    "INSERT INTO escalations(alert_id, ladder, severity, step, next_at, paged_at, channels) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(alert_id) DO UPDATE SET ladder = excluded.ladder, "
                    "severity = excluded.severity, step = excluded.step, next_at = excluded.next_at, "
                    "paged_at = excluded.paged_at, channels = excluded.channels",
                    (e.alert_id, e.ladder, e.severity, e.step, e.next_at, e.paged_at, json.dumps(list(e.channels))),
                )
            db.executemany("DELETE FROM escalations WHERE alert_id = ?", [(a,) for a in drop_escalations])
            queued = 0
            for key, channel, alert_id, due_at, body in notifications:
                cur = db.execute(
                    "INSERT OR IGNORE INTO notifications(key, channel, alert_id, due_at, state, body) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)",
                    (key, channel, alert_id, due_at, json.dumps(body, ensure_ascii=False)),
                )
                queued += cur.rowcount
            _insert_log(db, log)
            _insert_outbox(db, messages, now)
        return queued

    def alert_log(self, alert_id: str) -> list[LogRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, at, action, actor, channel, detail FROM alert_log WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            ).fetchall()
        return [LogRow(a, at, act, who, ch, json.loads(d)) for a, at, act, who, ch, d in rows]

    def escalation(self, alert_id: str) -> Escalation | None:
        found = self.escalations(alert_id)
        return found[0] if found else None

    def escalations(self, alert_id: str | None = None) -> list[Escalation]:
        """Every open alert's ladder position, or the one of ``alert_id``."""
        sql = "SELECT alert_id, ladder, severity, step, next_at, paged_at, channels FROM escalations"
        args: tuple[str, ...] = ()
        if alert_id is not None:
            sql, args = sql + " WHERE alert_id = ?", (alert_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY alert_id", args).fetchall()
        return [Escalation(a, lad, sev, st, nx, pg, tuple(json.loads(ch))) for a, lad, sev, st, nx, pg, ch in rows]

    def notifications_due(self, channel: str, now: float, limit: int = 50) -> list[QueuedNotification]:
        return self._notifications(
            "WHERE channel = ? AND state = 'pending' AND due_at <= ? ORDER BY id LIMIT ?", (channel, now, limit)
        )

    def sent_since(self, since: float) -> list[QueuedNotification]:
        """Notifications delivered since ``since`` (by when they were due), oldest first."""
        return self._notifications("WHERE state = 'sent' AND due_at >= ? ORDER BY due_at, id", (since,))

    def notifications(self, alert_id: str | None = None, limit: int = 1000) -> list[QueuedNotification]:
        if alert_id is None:
            return self._notifications("ORDER BY id LIMIT ?", (limit,))
        return self._notifications("WHERE alert_id = ? ORDER BY id LIMIT ?", (alert_id, limit))

    def notification_counts(self) -> dict[tuple[str, str], int]:
        """(channel, state) → how many notifications (for ``sensegate status``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT channel, state, COUNT(*) FROM notifications GROUP BY channel, state"
            ).fetchall()
        return {(c, st): int(n) for c, st, n in rows}

    def next_notification_due(self, channel: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(due_at) FROM notifications WHERE channel = ? AND state = 'pending'", (channel,)
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def _notifications(self, where: str, args: tuple[Any, ...]) -> list[QueuedNotification]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, channel, alert_id, due_at, attempts, state, last_error, body FROM notifications "
                + where,
                args,
            ).fetchall()
        return [
            QueuedNotification(i, k, ch, a, due, n, st, err, json.loads(b)) for i, k, ch, a, due, n, st, err, b in rows
        ]

    def notification_result(
        self,
        note_id: int,
        state: str,
        at: float,
        error: str = "",
        due_at: float | None = None,
        log: LogRow | None = None,
    ) -> None:
        """``sent`` / ``rejected`` (done), or ``pending`` again with a later ``due_at`` (retry)."""
        with self._tx() as db:
            db.execute(
                "UPDATE notifications SET state = ?, attempts = attempts + 1, last_error = ?, "
                "done_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END, due_at = COALESCE(?, due_at) WHERE id = ?",
                (state, error[:500], state, at, due_at, note_id),
            )
            if log is not None:
                _insert_log(db, [log])

    def merge_summary(self, key: str, channel: str, alert_id: str, due_at: float, body: Mapping[str, Any]) -> None:
        """Queue a summary notification, or replace the body of the one still pending under
        ``key`` (messages over a person's hourly cap are gathered into it, never dropped)."""
        with self._tx() as db:
            data = json.dumps(body, ensure_ascii=False)
            cur = db.execute("UPDATE notifications SET body = ? WHERE key = ? AND state = 'pending'", (data, key))
            if cur.rowcount == 0:
                db.execute(
                    "INSERT OR IGNORE INTO notifications(key, channel, alert_id, due_at, state, body) "
                    "VALUES (?, ?, ?, ?, 'pending', ?)",
                    (key, channel, alert_id, due_at, data),
                )

    def notification(self, key: str) -> QueuedNotification | None:
        found = self._notifications("WHERE key = ?", (key,))
        return found[0] if found else None

    def add_command(self, body: Mapping[str, Any], at: float) -> int:
        """Queue a command (ack / resolve) for the running gateway, the one writer of alert state."""
        with self._tx() as db:
            cur = db.execute("INSERT INTO commands(at, body) VALUES (?, ?)", (at, json.dumps(body, ensure_ascii=False)))
            return int(cur.lastrowid or 0)

    def commands(self, pending_only: bool = True, command_id: int | None = None) -> list[Command]:
        sql = "SELECT id, at, body, done_at, result FROM commands"
        args: tuple[Any, ...] = ()
        if command_id is not None:
            sql, args = sql + " WHERE id = ?", (command_id,)
        elif pending_only:
            sql += " WHERE done_at IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [Command(i, at, json.loads(b), d, None if r is None else json.loads(r)) for i, at, b, d, r in rows]

    def command_done(self, command_id: int, at: float, result: Mapping[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET done_at = ?, result = ? WHERE id = ?",
                (at, json.dumps(result, ensure_ascii=False), command_id),
            )

    # ------------------------------------------------------------------ counters and size

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {n: int(v) for n, v in self._db.execute("SELECT name, value FROM counters ORDER BY name")}

    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes()

    def _used_bytes(self) -> int:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def enforce_bound(self, processed_seq: int) -> dict[str, int]:
        """Bring live data under ``max_bytes``; returns what was removed.

        ``processed_seq`` is the alert path's cursor: nothing after it is removed, so no event
        is thinned before the rules have seen it.
        """
        removed = {"pruned": 0, "dropped": 0}
        with self._lock:
            if self._used_bytes() <= self.max_bytes:
                self.over_bound = False
                return removed
        for step, sql in (
            (
                "pruned",
                "SELECT seq FROM events WHERE seq <= ? AND NOT EXISTS "
                "(SELECT 1 FROM pending p WHERE p.seq = events.seq) ORDER BY seq LIMIT ?",
            ),
            ("dropped", "SELECT seq FROM events WHERE seq <= ? AND lane = ? ORDER BY seq LIMIT ?"),
        ):
            while True:
                with self._tx() as db:
                    used = self._used_bytes()
                    if used <= self.max_bytes:
                        break
                    rows = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0]) or 1
                    chunk = min(_PRUNE_MAX, max(_PRUNE_MIN, (used - self.max_bytes) * rows // used + 1))
                    args: tuple[object, ...] = (
                        (processed_seq, chunk) if step == "pruned" else (processed_seq, Lane.TELEMETRY.value, chunk)
                    )
                    seqs = [r[0] for r in db.execute(sql, args).fetchall()]
                    if not seqs:
                        break
                    marks = ",".join("?" * len(seqs))
                    if step == "dropped":
                        db.execute(f"DELETE FROM pending WHERE seq IN ({marks})", seqs)
                    db.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs)
                    self._bump(db, {step: len(seqs)})
                    removed[step] += len(seqs)
        with self._lock:
            self.over_bound = self._used_bytes() > self.max_bytes
        return removed


class _Tx:
    """``with store._tx() as db``: hold the lock, BEGIN IMMEDIATE … COMMIT (or ROLLBACK)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        try:
            self._store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._store._lock.release()
            raise StoreError(f"store {self._store.path}: {exc}") from exc
        return self._store._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self._store._db
        try:
            if exc_type is None:
                db.execute("COMMIT")
            else:
                db.execute("ROLLBACK")
        except sqlite3.Error as err:
            raise StoreError(f"store {self._store.path}: {err}") from err
        finally:
            self._store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"store {self._store.path}: {exc}") from exc


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


def _insert_outbox(db: sqlite3.Connection, messages: Iterable[tuple[str, str, str, bool]], now: float) -> None:
    db.executemany(
        "INSERT INTO outbox(channel, topic, payload, retain, created_at) VALUES (?, ?, ?, ?, ?)",
        [(c, t, p, int(r), now) for c, t, p, r in messages],
    )


def _insert_log(db: sqlite3.Connection, rows: Iterable[LogRow]) -> None:
    db.executemany(
        "INSERT INTO alert_log(alert_id, at, action, actor, channel, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (r.alert_id, r.at, r.action, r.actor, r.channel, json.dumps(dict(r.detail or {}), ensure_ascii=False))
            for r in rows
        ],
    )


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )


def _insert_visits(db: sqlite3.Connection, visits: Iterable[VisitRow]) -> None:
    for v in visits:
        body = {
            "household": v.household,
            "residents": list(v.residents),
            "visitor": v.visitor,
            "visitor_name": v.visitor_name,
            "role": v.role,
            "at": v.at,
            "method": v.method,
            "note": v.note,
            "event_seq": v.event_seq,
            "device_id": v.device_id,
        }
        db.execute(
            "INSERT OR IGNORE INTO visits(event_seq, household, residents, visitor, at, method, note, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v.event_seq,
                v.household,
                ",".join(v.residents),
                v.visitor,
                v.at,
                v.method,
                v.note,
                json.dumps(body, ensure_ascii=False),
            ),
        )


def _visit(row_id: int, body: str) -> VisitRow:
    d = json.loads(body)
    return VisitRow(
        household=d["household"],
        residents=tuple(d["residents"]),
        visitor=d["visitor"],
        at=float(d["at"]),
        method=d["method"],
        note=d.get("note", ""),
        event_seq=d.get("event_seq"),
        visitor_name=d.get("visitor_name", ""),
        role=d.get("role", ""),
        device_id=d.get("device_id", ""),
        id=row_id,
    )


def _event(seq: int, body: str) -> Event:
    return replace(Event.from_dict(json.loads(body)), seq=seq)
