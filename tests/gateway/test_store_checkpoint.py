"""The checkpoint thread (gateway/store/checkpoint.py): what a commit wrote to the WAL reaches the
database from the thread, not in a later commit; with the thread held up, SQLite's own checkpoint
still keeps the WAL within the disk bound's budget; the thread ends with the store."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

from gateway.store import Store
from tests.gateway.factories import event

PAD = "x" * 400
INFLUX: dict[str, frozenset[str] | None] = {"influx": None}


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sensegate-checkpoint"]


def until(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_commits_pages_reach_the_database_from_the_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.manage_disk(lambda: 0)
    try:
        before = os.path.getsize(store.path)
        store.append([event(pad=PAD) for _ in range(300)], INFLUX)
        wal = os.path.getsize(tmp_path / "s.db-wal")
        assert 100_000 < wal < store.wal_bytes  # under SQLite's own mark: no commit checkpoints
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert until(lambda: checkpointer.passes >= 1)
        assert os.path.getsize(store.path) > before + 100_000
    finally:
        store.close()


def test_a_held_up_thread_leaves_the_wal_within_its_budget(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", max_bytes=32 * 1024 * 1024)
    store.manage_disk(lambda: 1 << 62)
    assert store._checkpointer is not None
    try:
        with store._checkpointer.lock:  # the thread cannot checkpoint: SQLite's own must
            for _ in range(40):
                store.append([event(pad=PAD) for _ in range(100)], {})
                assert os.path.getsize(tmp_path / "s.db-wal") <= 2 * store.wal_bytes
            assert os.path.getsize(store.path) > 2 * store.wal_bytes
    finally:
        store.close()


def test_the_thread_ends_with_the_store_and_the_wal_with_its_last_connection(tmp_path: Path) -> None:
    before = set(checkpoint_threads())
    store = Store(tmp_path / "s.db")
    store.manage_disk(lambda: 0)
    store.append([event(pad=PAD) for _ in range(50)], INFLUX)
    assert len(set(checkpoint_threads()) - before) == 1
    store.close()
    assert set(checkpoint_threads()) <= before
    assert not (tmp_path / "s.db-wal").exists()  # SQLite removes it when the last connection closes


def test_a_store_dropped_unclosed_ends_its_thread(tmp_path: Path) -> None:
    before = set(checkpoint_threads())
    store = Store(tmp_path / "s.db")
    store.manage_disk(lambda: 0)
    mine = set(checkpoint_threads()) - before
    assert len(mine) == 1
    del store
    gc.collect()
    assert until(lambda: not any(t.is_alive() for t in mine))
