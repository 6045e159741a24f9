"""Rows one by one (``executemany``) against many rows a statement (``gateway.store.base.insert_rows``).

    .venv/bin/python bench/bench_rows.py                  # 512 rows, 7 rounds
    .venv/bin/python bench/bench_rows.py --rows 64 --rounds 15

Inserts ``--rows`` rows shaped like a group commit's events (seven columns, a ~300-byte body)
into a table of a WAL database in a temp dir, in a transaction, both ways in turn, each round:
first with no other thread, then beside a thread that computes in Python the whole time (as
paho's network thread, a forwarder's line protocol or the event loop do in the gateway).
sqlite3 lets go of the interpreter for each statement it steps; taking it back waits for the
thread that holds it, up to the interpreter's switch interval (5 ms). Prints the median and the
mean and the range of the wall time of the inserts (not the commit), and the ratio of the
means: beside a thread, a turn is often as quick as alone and now and then very much slower.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.store.base import insert_rows  # noqa: E402

HEAD = "INSERT INTO events(lane, device_id, family, kind, event_time, received_at, body)"
ONE_BY_ONE = HEAD + " VALUES (?, ?, ?, ?, ?, ?, ?)"
Rows = Sequence[tuple[object, ...]]


def rows(count: int) -> list[tuple[object, ...]]:
    body = '{"values":{"contact":true,"battery":87,"linkquality":120},"location":{"building":"3"}}' * 3
    return [
        ("telemetry", f"z2m-{n:05}", "door", "door_opened", 1.7e9 + n, 1.7e9 + n + 0.01, body) for n in range(count)
    ]


def timed(db: sqlite3.Connection, insert: Callable[[sqlite3.Connection, Rows], None], batch: Rows) -> float:
    db.execute("BEGIN")
    started = time.perf_counter()
    insert(db, batch)
    elapsed = time.perf_counter() - started
    db.execute("COMMIT")
    return elapsed * 1000


def one_by_one(db: sqlite3.Connection, batch: Rows) -> None:
    db.executemany(ONE_BY_ONE, batch)


def many_a_statement(db: sqlite3.Connection, batch: Rows) -> None:
    insert_rows(db, HEAD, batch)


class Busy:
    """A thread that computes in Python until stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        n = 0
        while not self._stop.is_set():
            for _ in range(10_000):
                n += 1

    def __enter__(self) -> Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    batch = rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-rows-") as tmp:
        db = sqlite3.connect(Path(tmp) / "rows.sqlite3", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, lane TEXT, device_id TEXT, family TEXT, "
            "kind TEXT, event_time REAL, received_at REAL, body TEXT)"
        )
        print(f"{args.rows} rows a transaction, {args.rounds} rounds, wall ms of the inserts: median, mean (min-max)")
        for label, beside in (("alone", False), ("beside a thread that computes", True)):
            times: dict[str, list[float]] = {"executemany": [], "insert_rows": []}
            for _ in range(args.rounds):
                if beside:
                    with Busy():
                        times["executemany"].append(timed(db, one_by_one, batch))
                        times["insert_rows"].append(timed(db, many_a_statement, batch))
                else:
                    times["executemany"].append(timed(db, one_by_one, batch))
                    times["insert_rows"].append(timed(db, many_a_statement, batch))
            means = {k: statistics.fmean(v) for k, v in times.items()}
            print(f"  {label}:")
            for name, values in times.items():
                spread = f"({min(values):.2f}-{max(values):.2f})"
                print(f"    {name:12s} {statistics.median(values):8.2f} {means[name]:8.2f}  {spread}")
            print(f"    executemany / insert_rows, means: {means['executemany'] / means['insert_rows']:.1f}x")
        db.close()


if __name__ == "__main__":
    main()
