"""Checkpoints beside the writers: a thread with its own connection folds the WAL into the
database while the gateway commits, so that a commit (an alarm's) does not wait for one.

SQLite checkpoints a WAL that holds ``wal_autocheckpoint`` pages in the commit that fills it:
that commit returns only after the WAL's pages are copied into the database and the database is
fsync'd (tens of milliseconds for 4 MiB). The thread copies them first, after the commits that
wrote them (``PASSIVE``: a writer is never blocked by it, and it copies only what no reader
still needs), and again for what came meanwhile, so that the automatic checkpoint finds the WAL
copied already, or SQLite begins it anew at the next write. The automatic checkpoint stays as it
is: when the thread lags (the disk, the scheduler) the WAL still ends at ``wal_bytes`` plus one
transaction, the disk bound's budget (disk.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("sensegate.store")

# At most one checkpoint round this often while commits come: each round syncs the WAL and the
# database once (two fsyncs); at 1,000 msg/s the WAL takes some 2 MiB in this time.
SPACING = 0.25
# Passes in a round: the first copies what the commits before it wrote, the next what came
# meanwhile; the round ends when a pass found nothing new.
PASSES = 3


class Checkpointer:
    """The thread (``start``/``stop``). ``lock``: one checkpoint at a time in this process: the
    store's own (``DiskStore._checkpoint``: a full disk, eviction) take it too, since SQLite
    answers a second checkpointer with SQLITE_BUSY at once."""

    def __init__(self, path: Path, synchronous: str, spacing: float = SPACING) -> None:
        self.path = path
        self.synchronous = "FULL" if synchronous == "full" else "NORMAL"
        self.spacing = spacing
        self.lock = threading.Lock()
        self.passes = 0  # checkpoints that found frames in the WAL
        self._written = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sensegate-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the thread (its round finished first) and close its connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.abandon()
            thread.join()

    def abandon(self) -> None:
        """Let the thread end by itself, closing its connection (``stop`` waits for it; a store
        dropped unclosed does not)."""
        self._stopping.set()
        self._written.set()

    def wrote(self) -> None:
        """A transaction ended (the store's writer, after COMMIT or ROLLBACK): a round is due."""
        self._written.set()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            log.error("store %s: checkpoints beside the writers cannot start: %s", self.path, exc)
            return
        try:
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            while True:
                self._written.wait()
                if self._stopping.is_set():
                    return
                self._written.clear()
                self.round(db)
                # Pacing the disk's work in real time, as the group-commit window does: no rule timer.
                if self._stopping.wait(self.spacing):
                    return
        finally:
            db.close()

    def round(self, db: sqlite3.Connection) -> None:
        """Checkpoint (PASSIVE) until a pass finds no frame written since the one before it."""
        last = 0
        for _ in range(PASSES):
            with self.lock:
                try:
                    frames = int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
                except sqlite3.Error as exc:
                    if not self._failing:
                        log.warning("store %s: checkpoint beside the writers failed: %s", self.path, exc)
                    self._failing = True
                    return
            if self._failing:
                log.warning("store %s: checkpoints beside the writers work again", self.path)
                self._failing = False
            if frames <= 0 or frames == last:
                return  # nothing new since the pass before (a new WAL begins with frame 1)
            self.passes += 1
            last = frames
