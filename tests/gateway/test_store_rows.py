"""``insert_rows`` (gateway/store/base.py): many rows a statement, with exactly what a row-by-row
``executemany`` would leave in the table, in its order."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.store.base import ROWS_PER_STATEMENT, insert_rows


def _table(width: int) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    columns = ", ".join(f"c{i}" for i in range(width))
    db.execute(f"CREATE TABLE t(n INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
    return db


@pytest.mark.parametrize("count", [0, 1, 2, 31, 63, 64, 65, 127, 128, 129, 200, 1_000])
@pytest.mark.parametrize("width", [1, 2, 7, 16, 63, 1_000])
def test_rows_go_in_as_one_by_one_would_in_their_order(count: int, width: int) -> None:
    rows = [tuple(f"{r}.{c}" if c % 2 else r * width + c for c in range(width)) for r in range(count)]
    columns = ", ".join(f"c{i}" for i in range(width))
    many, multi = _table(width), _table(width)
    many.executemany(f"INSERT INTO t({columns}) VALUES ({', '.join('?' * width)})", rows)
    insert_rows(multi, f"INSERT INTO t({columns})", rows)
    table = "SELECT * FROM t ORDER BY n"
    assert multi.execute(table).fetchall() == many.execute(table).fetchall()


def test_a_statement_takes_many_rows() -> None:
    db = _table(2)
    steps: list[str] = []
    db.set_trace_callback(steps.append)
    insert_rows(db, "INSERT INTO t(c0, c1)", [(n, str(n)) for n in range(1_000)])
    # 15 statements of 64 rows, then one of 32 and one of 8 for the 40 left: not a thousand.
    assert len(steps) == 1_000 // ROWS_PER_STATEMENT + 2


def test_an_upsert_takes_a_key_twice_in_one_statement_as_one_by_one_would() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 1)")
    rows = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")]
    insert_rows(db, "INSERT INTO kv(k, v)", rows, " ON CONFLICT(k) DO UPDATE SET v = excluded.v, n = n + 1")
    assert db.execute("SELECT k, v, n FROM kv ORDER BY k").fetchall() == [("a", "3", 2), ("b", "5", 2), ("c", "4", 1)]
