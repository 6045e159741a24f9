"""Meta and cursors: the ``meta`` table, key → text (``cursor.<name>`` positions, visit-plan
start times, channel health, ingest failures: ``ingest.<part>``, gateway/ingest/health.py).
The ``counters`` table is in ``base.py``, with ``_bump``."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from gateway.store.base import StoreBase

META_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class MetaStore(StoreBase):
    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            _set_meta(db, key, value)

    def delete_meta(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

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

    def first_event_at(self) -> float | None:
        """When this store first accepted an event (its gateway's first day), if it has."""
        value = self.meta("store.first_event_at")
        return None if value is None else float(value)

    def cursor(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"cursor.{name}",)).fetchone()
        return int(row[0]) if row else 0


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )
