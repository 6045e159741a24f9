"""The store's disk: the bound on its files, the reserve, and a full filesystem.

**The bound.** ``max_bytes`` bounds the store's files: the database and its WAL. SQLite
checkpoints the WAL once it holds ``wal_bytes`` (``wal_autocheckpoint``) and cuts the file back
to that size (``journal_size_limit``), so live data may use ``max_bytes - wal_bytes``. (In the
gateway a thread checkpoints sooner, beside the writers: checkpoint.py; SQLite's own stays the
bound's guarantee.) That is
checked before every write of events (``_make_room``, inside the transaction that writes them,
from the page counts SQLite keeps in memory) and gives way in this order, oldest first, counting
each step: (1) events delivered everywhere and already seen by the alert path (``pruned``);
(2) undelivered telemetry already seen by the alert path (``dropped``); never alarm-lane events
or alerts. Housekeeping (``enforce_bound``, every 10 s) does the same, also finds delivered
events among undelivered ones (an output that takes some families only), and truncates a WAL
that a long reader let grow.

**The reserve.** ``<store>.reserve``: ``reserve_bytes`` allocated on the store's filesystem when
the gateway starts (``manage_disk``; a CLI command never touches it). Before every write
transaction the gateway's store looks at the filesystem's free space (one ``statvfs``). Below
``wal_bytes`` — or when a write fails with SQLITE_FULL — the disk is *full*:

1. half the reserve is released (the rest at the next shortage), which leaves room to
2. checkpoint the WAL (RESTART: the WAL file keeps its size and is written again from its start,
   so later commits need no new space), and
3. telemetry's room is frozen at the database file's size then: eviction (delivered history,
   then undelivered telemetry) frees pages inside the file, which SQLite reuses without growing
   it. Alarm-lane events, alerts, pages and everything else may grow the file into the released
   reserve.
4. When eviction finds nothing more to remove, the store *refuses telemetry*
   (``refusing_telemetry``): the MQTT ingest leaves telemetry-only messages unacknowledged (the
   broker keeps them) and commits every alarm.

Once the filesystem has room for the whole reserve again and twice ``wal_bytes`` more, the
reserve is refilled and the store is back to normal. ``on_change`` tells the gateway each time
the disk becomes full, starts or stops refusing telemetry, or has room again: it raises and
resolves the ``gateway_disk_full`` alert (gateway/alerts/system.py).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.models import Event, Lane
from gateway.store.base import StoreBase, is_full
from gateway.store.checkpoint import Checkpointer

log = logging.getLogger("sensegate.store")

MIB = 1024 * 1024
# One event as stored, less what it carries: its row's columns, its index entries, a pending row
# per output, page slack. Sizes an eviction step and the room a batch needs (``_bytes``); pages
# are measured again after every step.
ROW_BYTES = 1024
# The WAL's index in shared memory: one 32 KiB block per 4096 frames; the WAL holds fewer.
SHM_BYTES = 32 * 1024
# One eviction step removes this many rows at least and at most.
_STEP_MIN, _STEP_MAX = 20, 5000
# A full disk: whether the room is back is looked at most this often.
RECHECK_SECONDS = 1.0

_PRUNE_OLD = "SELECT seq FROM events WHERE seq < ? ORDER BY seq LIMIT ?"
_PRUNE_ANY = (
    "SELECT seq FROM events WHERE seq <= ? AND NOT EXISTS "
    "(SELECT 1 FROM pending p WHERE p.seq = events.seq) ORDER BY seq LIMIT ?"
)
_DROP = "SELECT seq FROM events WHERE seq <= ? AND lane = ? ORDER BY seq LIMIT ?"


def default_reserve(max_bytes: int) -> int:
    """The reserve when ``store.reserve_bytes`` is not set: 1/16 of the bound, within 1–8 MiB."""
    return min(8 * MIB, max(MIB, max_bytes // 16))


def wal_budget(max_bytes: int, reserve_bytes: int) -> int:
    """The WAL's size: 1/16 of the bound and at most a quarter of the reserve (a checkpoint of a
    whole WAL must fit in the half of the reserve released first), within 64 KiB – 4 MiB."""
    cap = max_bytes // 16
    if reserve_bytes:
        cap = min(cap, reserve_bytes // 4)
    return max(64 * 1024, min(4 * MIB, cap))


def free_bytes(directory: Path) -> int:
    """Free space on the filesystem of ``directory`` for an unprivileged user."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True, slots=True)
class DiskState:
    """What ``sensegate status`` and the gateway's disk watch show."""

    managed: bool  # this process keeps the disk (the gateway), not a CLI command
    full: bool  # the filesystem is full: the reserve is (partly) released
    refusing: bool  # no room left for telemetry: it is not acknowledged
    store_bytes: int  # the database, its WAL and shared memory on disk
    wal_bytes: int  # the WAL file now
    live_bytes: int  # pages in use
    max_bytes: int
    free_bytes: int  # on the filesystem
    reserve_bytes: int  # held now
    reserve_target: int  # configured

    def to_dict(self) -> dict[str, int | bool]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, int | bool]) -> DiskState:
        """What ``to_dict`` gave (the ingest process tells the gateway its disk state so)."""
        return cls(**{name: data[name] for name in cls.__slots__})  # type: ignore[arg-type]


class Reserve:
    """``<store>.reserve``: space held on the store's filesystem for the day it fills up."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def held(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def fill(self) -> bool:
        """Allocate the whole reserve (0600). False, holding no more than before, if it does not fit."""
        before = self.held()
        if before >= self.size:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                _write_zeros(fd, before, self.size)  # a filesystem without fallocate
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, before)
            if exc.errno != errno.ENOSPC:
                raise
            return False
        finally:
            os.close(fd)
        return True

    def release(self) -> int:
        """Give back half of the reserve, or the rest when half is gone already; the bytes freed."""
        held = self.held()
        keep = held // 2 if held > self.size // 2 else 0
        if keep:
            os.truncate(self.path, keep)
        elif held or self.path.exists():
            self.path.unlink()
        return held - keep


def _write_zeros(fd: int, start: int, end: int) -> None:
    chunk = bytes(min(MIB, end - start))
    os.lseek(fd, start, os.SEEK_SET)
    while start < end:
        start += os.write(fd, chunk[: end - start])


class DiskStore(StoreBase):
    """The bound, the reserve and a full disk (module docstring). ``reserve_bytes``: ``None``
    for the default, 0 for none (a full disk is then met by eviction alone)."""

    def __init__(
        self,
        path: str | Path,
        max_bytes: int = 512 * MIB,
        synchronous: str = "full",
        reserve_bytes: int | None = None,
    ) -> None:
        self.reserve_bytes = default_reserve(max_bytes) if reserve_bytes is None else reserve_bytes
        self.wal_bytes = wal_budget(max_bytes, self.reserve_bytes)
        file = Path(path)
        self.reserve = Reserve(file.with_name(file.name + ".reserve"), self.reserve_bytes)
        try:
            super().__init__(path, max_bytes, synchronous)
        except StoreError as exc:
            # A store opened on a full disk needs room for its WAL and shared memory, which the
            # last close removed: that is what the reserve is for (whoever opens it).
            if not _out_of_space(exc, file.parent, self.wal_bytes) or not (freed := self.reserve.release()):
                raise
            log.warning("store %s: no room to open it (%s); released %d bytes of the reserve", file, exc, freed)
            super().__init__(path, max_bytes, synchronous)
        with self._lock:
            self._db.execute(f"PRAGMA wal_autocheckpoint = {max(1, self.wal_bytes // self._page_size)}")
            self._db.execute(f"PRAGMA journal_size_limit = {self.wal_bytes}")
        self.refusing_telemetry = False  # read by the ingest without the lock: one bool
        self._managed = False
        self._full = False
        self._frozen = 0  # telemetry's room while the disk is full
        self._processed: Callable[[], int] | None = None
        self._on_change: Callable[[], None] | None = None
        self._recheck_at = 0.0
        self._recovering = False
        self._checkpointer: Checkpointer | None = None

    # ------------------------------------------------------------------ the gateway's side

    def manage_disk(self, processed_seq: Callable[[], int], on_change: Callable[[], None] | None = None) -> DiskState:
        """Keep the disk from now on (the gateway; a CLI command does not): fill the reserve,
        check the filesystem before every write, evict as writes need. ``processed_seq`` is the
        alert path's ``replay_from`` (read from the store's thread: an int); ``on_change`` is called on
        each change of ``full`` or ``refusing``, from the store's thread with its lock held: it
        must not call the store (the gateway's only wakes its disk watch)."""
        with self._lock:
            self._processed = processed_seq
            self._on_change = on_change
            self._managed = True
            if self._checkpointer is None:
                self._checkpointer = Checkpointer(self.path, "full" if self._full_sync else "normal")
                self._checkpointer.start()
                weakref.finalize(self, self._checkpointer.abandon)  # a store dropped unclosed
            free = free_bytes(self.path.parent)
            missing = self.reserve_bytes - self.reserve.held()
            if free - missing < 2 * self.wal_bytes or not self.reserve.fill():
                self._enter_full(f"{free} bytes free at start, the reserve needs {missing}")
            return self._state()

    def check_disk(self) -> DiskState:
        """Look at the filesystem now (the gateway's disk watch, when nothing is written)."""
        with self._lock:
            if self._managed:
                self._recheck_at = 0.0
                self._before_write()
            return self._state()

    def disk_state(self) -> DiskState:
        with self._lock:
            return self._state()

    # ------------------------------------------------------------------ sizes

    def used_bytes(self) -> int:
        """Pages in use (live data), whatever the files' size."""
        with self._lock:
            return self._live(self._db)

    def disk_bytes(self) -> int:
        """The database, its WAL and its shared memory on disk."""
        return sum(_size(self.path.with_name(self.path.name + suffix)) for suffix in ("", "-wal", "-shm"))

    def _live(self, db: sqlite3.Connection) -> int:
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _room(self) -> int:
        """What live data may use: the bound less twice the WAL's size (SQLite checkpoints it
        once it holds ``wal_bytes``, after the transaction that took it there: one more batch, or
        one eviction step, each smaller than ``wal_bytes``) and its shared memory; on a full disk,
        what the database file held then (the WAL file is written again from its start)."""
        room = max(self.max_bytes - 2 * self.wal_bytes - SHM_BYTES, self.max_bytes // 2)
        return min(room, self._frozen) if self._full else room

    def _slack(self, room: int) -> int:
        # Evict a little below the mark, so that not every batch has to.
        return max(16 * 1024, room // 64)

    def _state(self) -> DiskState:
        directory = self.path.parent
        return DiskState(
            managed=self._managed,
            full=self._full,
            refusing=self.refusing_telemetry,
            store_bytes=self.disk_bytes(),
            wal_bytes=_size(self.path.with_name(self.path.name + "-wal")),
            live_bytes=self._live(self._db),
            max_bytes=self.max_bytes,
            free_bytes=free_bytes(directory) if directory.is_dir() else 0,
            reserve_bytes=self.reserve.held(),
            reserve_target=self.reserve_bytes,
        )

    # ------------------------------------------------------------------ on every write

    def _before_write(self) -> None:
        if not self._managed or self._recovering:
            return
        free = free_bytes(self.path.parent)
        if free < self.wal_bytes and (not self._full or self.reserve.held()):
            self._enter_full(f"{free} bytes free")
        elif self._full:
            self._leave_full(free)

    def _on_full(self) -> None:
        if self._managed and not self._recovering:
            self._enter_full("a write failed: database or disk is full")

    def _make_room(self, events: Sequence[Event]) -> None:
        """Before ``events`` are written (their transaction not begun): room for them within the
        bound — on a full disk, within the database file — by eviction. Only in the gateway."""
        if not self._managed or not events:
            return
        with self._lock:
            self._before_write()
            room = self._room()
            need = _bytes(events)
            live = self._live(self._db)
            if live + need > room:
                self._evict_steps(room - need - self._slack(room), self._processed_seq())
                live = self._live(self._db)
            if self._full:
                # Refuse telemetry once its room is gone; take it again once there is some slack.
                if live + need > room:
                    self._set_refusing(True)
                elif live + self._slack(room) <= room:
                    self._set_refusing(False)

    def _processed_seq(self) -> int:
        """The alert path's ``replay_from``: no event after it is evicted, so none is thinned
        before the rules have seen it and saved their state past it (0, nothing evictable, until
        the gateway says)."""
        return self._processed() if self._processed is not None else 0

    # ------------------------------------------------------------------ a full disk

    def _enter_full(self, why: str) -> None:
        """Release (part of) the reserve, fold the WAL into the database, freeze telemetry's room
        at the file's size (the first time) and evict below it. Lock held, no transaction open."""
        self._recovering = True
        try:
            first = not self._full
            freed = self.reserve.release()
            self._full = True
            self._checkpoint("RESTART")
            if first:
                self._frozen = _size(self.path)
            room = self._room()
            removed = self._evict_steps(room - self._slack(room), self._processed_seq())
            # Once the reserve is gone every failed write comes here: say it when something changed.
            log.log(
                logging.WARNING if first or freed or any(removed.values()) else logging.DEBUG,
                "store %s: the disk is full (%s): released %d bytes of the reserve, removed %s; "
                "telemetry may use %d bytes, alarms are always stored",
                self.path,
                why,
                freed,
                removed,
                room,
            )
            if self._live(self._db) + self._slack(room) > room:
                self._set_refusing(True)
        finally:
            self._recovering = False
        if first:
            self._changed()

    def _leave_full(self, free: int) -> None:
        """Refill the reserve once the filesystem has room for it and twice the WAL more."""
        now = time.monotonic()
        if now < self._recheck_at:
            return
        self._recheck_at = now + RECHECK_SECONDS
        if free < self.reserve_bytes - self.reserve.held() + 2 * self.wal_bytes or not self.reserve.fill():
            return
        self._full = False
        self._frozen = 0
        self.refusing_telemetry = False
        log.warning("store %s: the disk has room again (%d bytes free); the reserve is back", self.path, free)
        self._changed()

    def _set_refusing(self, refusing: bool) -> None:
        if refusing != self.refusing_telemetry:
            self.refusing_telemetry = refusing
            log.warning("store %s: %s telemetry", self.path, "refusing" if refusing else "taking")
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _checkpoint(self, mode: str) -> None:
        # The checkpoint thread's lock: SQLite would answer a second checkpointer with BUSY.
        with self._checkpointer.lock if self._checkpointer is not None else contextlib.nullcontext():
            try:
                self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            except sqlite3.Error as exc:
                log.warning("store %s: checkpoint (%s) failed: %s", self.path, mode, exc)

    def _wrote(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        super().close()

    def _evict_steps(self, target: int, processed: int, general: bool = False) -> dict[str, int]:
        """``_evict`` one step per transaction (the lock held, no transaction open). Before each
        step the WAL is checkpointed, so that the step's pages — a deletion touches pages all over
        the indexes — are written over the WAL's start instead of growing it past the bound. A
        failure (the disk still full) stops it, logged."""
        removed = {"pruned": 0, "dropped": 0}
        rows = max(_STEP_MIN, min(_STEP_MAX, self.wal_bytes // ROW_BYTES))
        while self._live(self._db) > target:
            self._checkpoint("PASSIVE")
            step = {"pruned": 0, "dropped": 0}
            # An event not yet in the summaries written behind it (device_state) is their log:
            # none is removed before they are written, here and now if that is what it takes.
            summarised = min(processed, self._summarised_seq())
            with self._tx_quiet() as db:
                if db is not None:
                    step = self._evict(db, target, summarised, general, max_rows=rows)
            removed = {k: removed[k] + step[k] for k in removed}
            if not any(step.values()):
                if summarised < processed and self._summarise_all() and self._summarised_seq() > summarised:
                    continue
                break
        return removed

    def _summarised_seq(self) -> int:
        """The last event whose summaries are written (events.py); no event after it is evicted."""
        return 1 << 62

    def _summarise_all(self) -> bool:
        """Write the summaries up to the newest event (events.py); False if they were not."""
        return False

    def _tx_quiet(self, durable: bool = True) -> _QuietTx:
        return _QuietTx(self, durable)

    # ------------------------------------------------------------------ eviction

    def _evict(
        self, db: sqlite3.Connection, target: int, processed: int, general: bool = False, max_rows: int = 1 << 62
    ) -> dict[str, int]:
        """Remove events until live data is under ``target``: delivered history, then undelivered
        telemetry, oldest first, none after ``processed``, at most ``max_rows``. ``general``: also
        delivered events newer than an undelivered one (a scan; housekeeping only). Counted, in
        ``db``'s transaction."""
        removed = {"pruned": 0, "dropped": 0}
        oldest_pending = db.execute("SELECT MIN(seq) FROM pending").fetchone()[0]
        below = min(processed + 1, oldest_pending if oldest_pending is not None else processed + 1)
        steps: list[tuple[str, str, tuple[object, ...]]] = [("pruned", _PRUNE_OLD, (below,))]
        if general:
            steps.append(("pruned", _PRUNE_ANY, (processed,)))
        steps.append(("dropped", _DROP, (processed, Lane.TELEMETRY.value)))
        for step, sql, args in steps:
            while (live := self._live(db)) > target and (left := max_rows - sum(removed.values())) > 0:
                chunk = min(_STEP_MAX, left, max(_STEP_MIN, (live - target) // ROW_BYTES + 1))
                seqs = [r[0] for r in db.execute(sql, (*args, chunk)).fetchall()]
                if not seqs:
                    break
                marks = ",".join("?" * len(seqs))
                if step == "dropped":
                    db.execute(f"DELETE FROM pending WHERE seq IN ({marks})", seqs)
                db.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs)
                self._bump(db, {step: len(seqs)})
                removed[step] += len(seqs)
        return removed

    def enforce_bound(self, processed_seq: int) -> dict[str, int]:
        """Bring live data under the bound (housekeeping); returns what was removed.

        ``processed_seq`` is the alert path's ``replay_from``: nothing after it is removed, so no
        event is thinned before the rules have seen it and saved their state past it. Unlike the
        check on every write it also finds delivered events among undelivered ones (a scan). A
        WAL grown past twice its size (a reader held it) is truncated. ``over_bound``: only
        protected rows are left above it."""
        with self._lock:
            if self._managed:
                self._before_write()
            room = self._room()
            removed = {"pruned": 0, "dropped": 0}
            if self._live(self._db) > room:
                removed = self._evict_steps(room - self._slack(room), processed_seq, general=True)
            live = self._live(self._db)
            if self._full and live + self._slack(room) <= room:
                self._set_refusing(False)
            self.over_bound = live > room and not self._full  # a full disk is the disk watch's to say
            if _size(self.path.with_name(self.path.name + "-wal")) > 2 * self.wal_bytes:
                self._checkpoint("TRUNCATE")
        return removed


class _QuietTx:
    """A transaction for the store's own work inside a write (the lock is held already): its
    room-making, the summaries' passes (events.py). ``None`` when it cannot begin; a failure
    (the disk still full) rolls back and is logged, and ``failed`` says so. ``durable=False``:
    committed without an fsync, as ``_Tx``'s."""

    def __init__(self, store: DiskStore, durable: bool = True) -> None:
        self._store = store
        self._relaxed = not durable
        self.failed = False

    def __enter__(self) -> sqlite3.Connection | None:
        if self._relaxed:
            self._store._relax_sync(True)
        try:
            self._store._begin()
        except sqlite3.Error as exc:
            self._restore()
            self.failed = True
            log.warning("store %s: %s", self._store.path, exc)
            return None
        return self._store._db

    def _restore(self) -> None:
        if self._relaxed:
            self._store._relax_sync(False)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        db = self._store._db
        try:
            try:
                if db.in_transaction:
                    db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            except sqlite3.Error as err:
                exc = exc or err
            if db.in_transaction:
                db.execute("ROLLBACK")
        finally:
            self._store._end()
            self._restore()
        if isinstance(exc, sqlite3.Error):
            self.failed = True
            log.log(logging.WARNING if is_full(exc) else logging.ERROR, "store %s: %s", self._store.path, exc)
            return True
        return False


def _out_of_space(exc: StoreError, directory: Path, low: int) -> bool:
    cause = exc.__cause__
    code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) and free_bytes(directory) < low


def _bytes(events: Sequence[Event]) -> int:
    """What a batch of events takes in the store, roughly (UTF-8 and JSON escaping: twice what
    they carry)."""
    carried = 0
    for e in events:
        carried += len(e.raw)
        for v in e.values.values():
            carried += len(str(v))
    return ROW_BYTES * len(events) + 2 * carried


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
