"""Visits (探访记录): the ``visits`` table, one record per causing event (``event_seq``), see
docs/visits.md. Never pruned. The visit tracker's records are saved with the alerts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.models import Event
from gateway.store.base import StoreBase
from gateway.store.events import _insert_event

VISITS_DDL = """
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
"""


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


class VisitsStore(StoreBase):
    def append_visit(self, event: Event, visit: VisitRow) -> VisitRow:
        """Store a check-in event and its visit record in one transaction (the CLI's path)."""
        with self._tx() as db:
            visit = replace(visit, event_seq=_insert_event(db, event))
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
