"""Notifications and escalations (docs/alerts.md): the ``escalations`` table (where an open
alert is on its ladder) and the ``notifications`` table (messages queued per channel)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.models import Alert
from gateway.store.alerts import LogRow, _insert_log, _insert_outbox, _upsert_alert
from gateway.store.base import StoreBase

NOTIFICATIONS_DDL = """
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
"""


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


class NotificationsStore(StoreBase):
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
