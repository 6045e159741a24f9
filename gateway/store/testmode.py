"""Test mode (测试模式) and walk tests (现场调试): the ``test_modes``, ``test_mode_devices``,
``test_mode_log``, ``would_have``, ``commissions`` and ``commission_devices`` tables.
See docs/installer.md.

- ``test_modes``: one row per test mode — its scope (``site``, ``building`` …, and the label
  people read: 3号楼), who set it, when it started and when it ends by itself (``ends_at``);
  ``ended_at`` / ``ended_by`` once a person ended it, or the gateway noticed it had expired
  (``system``). ``test_mode_devices``: the devices the scope covered when it was set.
- ``test_mode_log``: each test mode's audit trail (started, ended, expired, overrun …) with
  time, actor and channel.
- ``would_have``: what an event in test mode would have raised (the alert path's shadow
  engine), one row per decision, idempotent on its ``key`` (a replay after a crash adds none).
- ``commissions``: walk tests (who, when, their test mode) and, once finished, the report
  (HTML and CSV) and its summary. ``commission_devices``: per device of a walk test, when it
  was first and last heard during it, how often, which kinds, and its latest link quality,
  RSSI and battery.

**Marking happens at acceptance.** ``mark_tests`` runs inside ``EventsStore.append``'s
transaction: an event from a device covered by a test mode that is running at its
``received_at`` (started, not past ``ends_at``, not ended) gets ``values["test"] = True`` and
``values["test_mode"] = <id>`` before it is written, and a walk test's devices are ticked off
in the same transaction. Every writer goes through ``append`` (MQTT, serial, the CLI's
check-ins, scenarios), and a test mode a person ends in one transaction can never half-mark
a batch committed in another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.models import TEST, TEST_MODE, Event, Kind
from gateway.store.base import StoreBase

TESTMODE_DDL = """
CREATE TABLE IF NOT EXISTS test_modes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    started_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    started_by TEXT NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL,
    ended_at REAL,
    ended_by TEXT,
    commission INTEGER
);
CREATE INDEX IF NOT EXISTS test_modes_open ON test_modes(ended_at, ends_at);
CREATE TABLE IF NOT EXISTS test_mode_devices (
    device_id TEXT NOT NULL,
    test_mode INTEGER NOT NULL,
    PRIMARY KEY (device_id, test_mode)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS test_mode_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    test_mode INTEGER NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    via TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS test_mode_log_mode ON test_mode_log(test_mode, id);
CREATE TABLE IF NOT EXISTS would_have (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    test_mode INTEGER,
    device_id TEXT NOT NULL,
    at REAL NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    severity INTEGER NOT NULL,
    message_zh TEXT NOT NULL,
    message_en TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS would_have_device ON would_have(device_id, at);
CREATE TABLE IF NOT EXISTS commissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    started_at REAL NOT NULL,
    started_by TEXT NOT NULL,
    test_mode INTEGER NOT NULL,
    finished_at REAL,
    finished_by TEXT,
    summary TEXT,
    report_html TEXT,
    report_csv TEXT
);
CREATE TABLE IF NOT EXISTS commission_devices (
    commission INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    events INTEGER NOT NULL,
    kinds TEXT NOT NULL,
    linkquality REAL,
    rssi REAL,
    battery REAL,
    battery_low INTEGER NOT NULL,
    PRIMARY KEY (commission, device_id)
) WITHOUT ROWID;
"""

# Kinds a walk test lists per device at most (a chatty radar says "presence" a hundred times).
_MAX_KINDS = 12


@dataclass(frozen=True, slots=True)
class TestModeRow:
    __test__ = False  # a row, not a pytest class
    id: int
    scope: str  # site | building | unit | household | device
    target: str  # "3", "3-2", "3-2-502", a device id; "" for the site
    label: str  # 3号楼, 3号楼2单元502室 …: what people read
    started_at: float
    ends_at: float
    started_by: str
    via: str  # cli | console | scenario
    note: str = ""
    ended_at: float | None = None
    ended_by: str | None = None  # a person, or "system" when it ran out
    commission: int | None = None

    def running(self, at: float) -> bool:
        return self.ended_at is None and self.started_at <= at < self.ends_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "target": self.target,
            "label": self.label,
            "started_at": self.started_at,
            "ends_at": self.ends_at,
            "started_by": self.started_by,
            "via": self.via,
            "note": self.note,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "commission": self.commission,
        }


@dataclass(frozen=True, slots=True)
class TestModeLogRow:
    __test__ = False
    test_mode: int
    at: float
    action: str  # started / ended / expired / overrun / daily_limit …
    actor: str
    via: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WouldHave:
    """What an event in test mode would have raised: the shadow engine's decision."""

    key: str
    test_mode: int | None
    device_id: str
    at: float
    rule: str
    action: str  # raise | update (an escalation)
    severity: int
    message_zh: str
    message_en: str
    evidence: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CommissionRow:
    id: int
    scope: str
    target: str
    label: str
    started_at: float
    started_by: str
    test_mode: int
    finished_at: float | None = None
    finished_by: str | None = None
    summary: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SeenRow:
    """A device heard during a walk test."""

    device_id: str
    first_seen: float
    last_seen: float
    events: int
    kinds: tuple[str, ...]
    linkquality: float | None
    rssi: float | None
    battery: float | None
    battery_low: bool


_MODE_COLUMNS = "id, scope, target, label, started_at, ends_at, started_by, via, note, ended_at, ended_by, commission"
_COMMISSION_COLUMNS = "id, scope, target, label, started_at, started_by, test_mode, finished_at, finished_by, summary"


class TestModeStore(StoreBase):
    __test__ = False
    # ------------------------------------------------------------------ test modes

    def start_test_mode(
        self,
        scope: str,
        target: str,
        label: str,
        devices: Iterable[str],
        started_at: float,
        ends_at: float,
        by: str,
        via: str,
        note: str = "",
        *,
        commission: bool = False,
    ) -> TestModeRow:
        """A new test mode over ``devices``, with its ``started`` line in the trail; with
        ``commission`` a walk test is opened with it in the same transaction."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO test_modes(scope, target, label, started_at, ends_at, started_by, via, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, target, label, started_at, ends_at, by, via, note),
            )
            mode_id = int(cur.lastrowid or 0)
            ids = sorted(set(devices))
            db.executemany(
                "INSERT OR IGNORE INTO test_mode_devices(device_id, test_mode) VALUES (?, ?)",
                [(d, mode_id) for d in ids],
            )
            commission_id: int | None = None
            if commission:
                cur = db.execute(
                    "INSERT INTO commissions(scope, target, label, started_at, started_by, test_mode) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (scope, target, label, started_at, by, mode_id),
                )
                commission_id = int(cur.lastrowid or 0)
                db.execute("UPDATE test_modes SET commission = ? WHERE id = ?", (commission_id, mode_id))
            detail = {"ends_at": ends_at, "devices": len(ids), "note": note}
            if commission_id is not None:
                detail["commission"] = commission_id
            _log(db, mode_id, started_at, "started", by, via, detail)
            self._bump(db, {"test_modes.started": 1})
        row = self.test_mode(mode_id)
        assert row is not None
        return row

    def end_test_mode(
        self,
        mode_id: int,
        at: float,
        by: str,
        via: str,
        action: str = "ended",
        detail: Mapping[str, Any] | None = None,
    ) -> TestModeRow | None:
        """End it (a person: ``ended``; the gateway noticing it ran out: ``expired``, ``by =
        "system"``, ``at`` its ``ends_at``). None if it was already ended."""
        with self._tx() as db:
            done = db.execute(
                "UPDATE test_modes SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL",
                (at, by, mode_id),
            ).rowcount
            if not done:
                return None
            _log(db, mode_id, at, action, by, via, dict(detail or {}))
        return self.test_mode(mode_id)

    def log_test_mode(
        self, mode_id: int, at: float, action: str, actor: str, via: str, detail: Mapping[str, Any]
    ) -> None:
        """A line in a test mode's trail (an alert about it, a refused command …)."""
        with self._tx() as db:
            _log(db, mode_id, at, action, actor, via, dict(detail))

    def test_mode(self, mode_id: int) -> TestModeRow | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_MODE_COLUMNS} FROM test_modes WHERE id = ?", (mode_id,)).fetchone()
        return None if row is None else TestModeRow(*row)

    def test_modes(
        self, *, open_only: bool = False, since: float | None = None, limit: int = 1000
    ) -> list[TestModeRow]:
        """Newest first. ``open_only``: not ended yet (running, or run out and not yet noticed);
        ``since``: those that ran at any time after it."""
        sql = f"SELECT {_MODE_COLUMNS} FROM test_modes"
        where: list[str] = []
        args: list[Any] = []
        if open_only:
            where.append("ended_at IS NULL")
        if since is not None:
            where.append("(ended_at IS NULL OR ended_at > ?) AND ends_at > ?")
            args += [since, since]
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [TestModeRow(*r) for r in rows]

    def test_mode_devices(self, mode_id: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id FROM test_mode_devices WHERE test_mode = ? ORDER BY device_id", (mode_id,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def test_mode_log(self, mode_id: int) -> list[TestModeLogRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT test_mode, at, action, actor, via, detail FROM test_mode_log WHERE test_mode = ? ORDER BY id",
                (mode_id,),
            ).fetchall()
        return [TestModeLogRow(m, at, a, who, via, json.loads(d)) for m, at, a, who, via, d in rows]

    def last_event_at(self, devices: Sequence[str], since: float, until: float) -> float | None:
        """When the latest event of any of ``devices`` was received in [since, until).

        Newest first through ``events_received`` (received_at, device_id), which the index
        answers alone, stopping at the first event of one of the devices: the index is the
        reason events carry no index per device, which would cost a page per event's device in
        every commit. The devices go in as one JSON array, for one walk of the window however many."""
        if not devices:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT received_at FROM events INDEXED BY events_received "
                "WHERE received_at >= ? AND received_at < ? AND device_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY received_at DESC LIMIT 1",
                (since, until, json.dumps(list(devices))),
            ).fetchone()
        return None if row is None else float(row[0])

    # ------------------------------------------------------------------ would have raised

    def add_would_have(self, rows: Sequence[WouldHave]) -> int:
        """Record decisions an event in test mode would have made; a key already there is kept."""
        if not rows:
            return 0
        with self._tx() as db:
            added = 0
            for r in rows:
                added += db.execute(
                    "INSERT OR IGNORE INTO would_have(key, test_mode, device_id, at, rule, action, severity, "
                    "message_zh, message_en, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.key,
                        r.test_mode,
                        r.device_id,
                        r.at,
                        r.rule,
                        r.action,
                        r.severity,
                        r.message_zh,
                        r.message_en,
                        json.dumps(list(r.evidence)),
                    ),
                ).rowcount
            self._bump(db, {"test_modes.would_have": added})
        return added

    def would_haves(
        self, *, devices: Sequence[str] | None = None, since: float | None = None, limit: int = 10_000
    ) -> list[WouldHave]:
        """Oldest first; of ``devices`` (all if None), at or after ``since``."""
        sql = (
            "SELECT key, test_mode, device_id, at, rule, action, severity, message_zh, message_en, evidence "
            "FROM would_have"
        )
        args: tuple[Any, ...] = ()
        if since is not None:
            sql, args = sql + " WHERE at >= ?", (since,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY at, id", args).fetchall()
        wanted = None if devices is None else set(devices)
        out = [
            WouldHave(k, m, d, at, rule, action, sev, zh, en, tuple(json.loads(ev)))
            for k, m, d, at, rule, action, sev, zh, en, ev in rows
            if wanted is None or d in wanted
        ]
        return out[:limit]

    # ------------------------------------------------------------------ walk tests

    def commission(self, commission_id: int) -> CommissionRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COMMISSION_COLUMNS} FROM commissions WHERE id = ?", (commission_id,)
            ).fetchone()
        return None if row is None else _commission(row)

    def commissions(self, *, open_only: bool = False, limit: int = 1000) -> list[CommissionRow]:
        """Newest first."""
        sql = f"SELECT {_COMMISSION_COLUMNS} FROM commissions"
        if open_only:
            sql += " WHERE finished_at IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_commission(r) for r in rows]

    def commission_seen(self, commission_id: int) -> dict[str, SeenRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, first_seen, last_seen, events, kinds, linkquality, rssi, battery, battery_low "
                "FROM commission_devices WHERE commission = ?",
                (commission_id,),
            ).fetchall()
        return {
            d: SeenRow(d, first, last, n, tuple(json.loads(kinds)), lq, rssi, battery, bool(low))
            for d, first, last, n, kinds, lq, rssi, battery, low in rows
        }

    def finish_commission(
        self, commission_id: int, at: float, by: str, summary: Mapping[str, Any], html: str, csv: str
    ) -> CommissionRow | None:
        """Keep the report; None if it was finished already."""
        with self._tx() as db:
            done = db.execute(
                "UPDATE commissions SET finished_at = ?, finished_by = ?, summary = ?, report_html = ?, "
                "report_csv = ? WHERE id = ? AND finished_at IS NULL",
                (at, by, json.dumps(summary, ensure_ascii=False), html, csv, commission_id),
            ).rowcount
        return self.commission(commission_id) if done else None

    def commission_report(self, commission_id: int) -> tuple[str, str] | None:
        """(HTML, CSV) of a finished walk test."""
        with self._lock:
            row = self._db.execute(
                "SELECT report_html, report_csv FROM commissions WHERE id = ? AND finished_at IS NOT NULL",
                (commission_id,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))


def _commission(row: Sequence[Any]) -> CommissionRow:
    ident, scope, target, label, started_at, started_by, mode, finished_at, finished_by, summary = row
    return CommissionRow(
        ident,
        scope,
        target,
        label,
        started_at,
        started_by,
        mode,
        finished_at,
        finished_by,
        None if summary is None else json.loads(summary),
    )


def _log(
    db: sqlite3.Connection, mode_id: int, at: float, action: str, actor: str, via: str, detail: Mapping[str, Any]
) -> None:
    db.execute(
        "INSERT INTO test_mode_log(test_mode, at, action, actor, via, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (mode_id, at, action, actor, via, json.dumps(dict(detail), ensure_ascii=False)),
    )


def mark_tests(db: sqlite3.Connection, events: Sequence[Event]) -> list[Event]:
    """``events`` with those from devices in a running test mode marked (``values["test"]``,
    ``values["test_mode"]``), and walk tests' devices ticked off; inside ``append``'s
    transaction. A device in two test modes gets the one of a walk test, else the newest."""
    if not events:
        return []
    first = min(e.received_at for e in events)
    anything = db.execute("SELECT 1 FROM test_modes WHERE ended_at IS NULL AND ends_at > ? LIMIT 1", (first,))
    if anything.fetchone() is None:
        return list(events)  # the usual case: nothing in test mode
    devices = sorted({e.device_id for e in events})
    modes: dict[str, list[tuple[int, float, float, int | None]]] = {}
    for start in range(0, len(devices), 500):
        chunk = devices[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT d.device_id, m.id, m.started_at, m.ends_at, m.commission FROM test_mode_devices d "
            f"JOIN test_modes m ON m.id = d.test_mode WHERE d.device_id IN ({marks}) "
            "AND m.ended_at IS NULL AND m.ends_at > ?",
            (*chunk, first),
        ).fetchall()
        for device, mode, started, ends, commission in rows:
            modes.setdefault(device, []).append((int(mode), float(started), float(ends), commission))
    out: list[Event] = []
    for ev in events:
        running = [m for m in modes.get(ev.device_id, ()) if m[1] <= ev.received_at < m[2]]
        if not running:
            out.append(ev)
            continue
        mode, _, _, commission = max(running, key=lambda m: (m[3] is not None, m[0]))
        out.append(replace(ev, values={**ev.values, TEST: True, TEST_MODE: mode}))
        if commission is not None:
            _tick_off(db, int(commission), ev)
    return out


def _tick_off(db: sqlite3.Connection, commission: int, ev: Event) -> None:
    """The device was heard during the walk test: when, what, and its signal and battery."""
    values = ev.values
    lq = _number(values.get("linkquality"))
    rssi = _number(values.get("rssi"))
    battery = _number(values.get("battery")) if ev.kind is Kind.BATTERY else None
    low = 1 if ev.kind is Kind.BATTERY_LOW else 0
    row = db.execute(
        "SELECT kinds FROM commission_devices WHERE commission = ? AND device_id = ?", (commission, ev.device_id)
    ).fetchone()
    if row is None:
        first = (commission, ev.device_id, ev.received_at, ev.received_at, json.dumps([ev.kind.value]))
        db.execute(
            "INSERT INTO commission_devices(commission, device_id, first_seen, last_seen, events, kinds, "
            "linkquality, rssi, battery, battery_low) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            (*first, lq, rssi, battery, low),
        )
        return
    kinds = list(json.loads(row[0]))
    if ev.kind.value not in kinds and len(kinds) < _MAX_KINDS:
        kinds.append(ev.kind.value)
    db.execute(
        "UPDATE commission_devices SET last_seen = MAX(last_seen, ?), events = events + 1, kinds = ?, "
        "linkquality = COALESCE(?, linkquality), rssi = COALESCE(?, rssi), battery = COALESCE(?, battery), "
        "battery_low = MAX(battery_low, ?) WHERE commission = ? AND device_id = ?",
        (ev.received_at, json.dumps(kinds), lq, rssi, battery, low, commission, ev.device_id),
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
