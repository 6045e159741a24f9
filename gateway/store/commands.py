"""Commands (ack / resolve) queued for the running gateway, the one writer of alert state: the
``commands`` table. The CLI queues them here; MQTT commands arrive with the ingest's events."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.store.base import StoreBase

# A command's row is kept this long once it is done: the CLI that queued it reads its result
# within seconds, and who did what is in the alert's and the test mode's own logs. Without a
# bound, every acknowledgement ever made over MQTT stayed on the SD card.
COMMANDS_KEEP = 7 * 86_400.0

COMMANDS_DDL = """
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    at: float
    body: dict[str, Any]
    done_at: float | None
    result: dict[str, Any] | None


class CommandsStore(StoreBase):
    def add_command(self, body: Mapping[str, Any], at: float) -> int:
        """Queue a command (ack / resolve) for the running gateway, the one writer of alert state."""
        with self._tx() as db:
            return _insert_command(db, body, at)

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

    def forget_commands(self, older_than: float) -> int:
        """Forget the commands done before ``older_than`` (never one still pending); how many."""
        # Housekeeping: a power cut that loses it loses nothing (docs/store.md, "What is fsync'd").
        with self._tx(durable=False) as db:
            return int(db.execute("DELETE FROM commands WHERE done_at < ?", (older_than,)).rowcount)

    def command_done(self, command_id: int, at: float, result: Mapping[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET done_at = ?, result = ? WHERE id = ?",
                (at, json.dumps(result, ensure_ascii=False), command_id),
            )


def _insert_command(db: sqlite3.Connection, body: Mapping[str, Any], at: float) -> int:
    cur = db.execute("INSERT INTO commands(at, body) VALUES (?, ?)", (at, json.dumps(body, ensure_ascii=False)))
    return int(cur.lastrowid or 0)
