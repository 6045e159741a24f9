"""Backup and restore of the store file (``sensegate backup`` / ``sensegate restore``).

``backup`` uses SQLite's online backup API (``sqlite3.Connection.backup``): a consistent copy
while the gateway keeps writing (WAL: it is not blocked; the copy is the state of one moment).
The copy is a single file (journal mode DELETE), checked with ``PRAGMA quick_check``, 0600.

``restore`` refuses while a gateway runs (it takes the gateway's store lock, lock.py), checks the
backup first (``PRAGMA integrity_check``, a schema version this release knows), keeps the store
it replaces beside it, and gives the restored file the owner and mode of the one it replaces
(run as root, it must still belong to the gateway's user). The gateway migrates it when it
starts, if it is from an older release.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.lock import StoreLock
from gateway.store.schema import SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class StoreFacts:
    path: Path
    events: int
    schema_version: int


def check_file(path: Path, full: bool = True) -> StoreFacts:
    """Integrity and schema version of a store file, opened read-only; ``StoreError`` if it is not
    a sound SenseGate store this release can open."""
    if not path.is_file():
        raise StoreError(f"no such file: {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open: {exc}") from exc
    try:
        rows = db.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            detail = "; ".join(str(r[0]) for r in rows[:5])
            raise StoreError(f"{path}: the file is damaged ({detail})")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "events" not in tables:
            raise StoreError(f"{path}: not a SenseGate store (no events table)")
        events = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise StoreError(f"{path}: the file is damaged or not a store: {exc}") from exc
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version}, newer than this SenseGate knows ({SCHEMA_VERSION}): "
            "restore it with the release that made it"
        )
    return StoreFacts(path, events, version)


def backup(store_path: Path, to: Path) -> StoreFacts:
    """Copy the store, online, to ``to`` (written beside it under a temporary name, then renamed)."""
    if not store_path.is_file():
        raise StoreError(f"no store at {store_path}: nothing to back up")
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{store_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst, pages=1024)  # in steps: the gateway's writers get the lock in between
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        facts = check_file(tmp, full=False)
        os.replace(tmp, to)
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {store_path} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return StoreFacts(to, facts.events, facts.schema_version)


def restore(backup_file: Path, store_path: Path, stamp: str) -> tuple[StoreFacts, Path | None]:
    """Put ``backup_file`` in place of the store. Returns the facts of what was restored and where
    the replaced store was kept (None if there was none)."""
    facts = check_file(backup_file)  # before touching anything
    lock = StoreLock(store_path, "sensegate restore")
    holder = lock.holder()
    if holder is not None:
        raise StoreError(
            f"the gateway is running on {store_path} (pid {holder}): stop it first (systemctl stop sensegate)"
        )
    try:
        lock.acquire()
    except StoreError as exc:
        raise StoreError(f"{exc}: stop the gateway first (systemctl stop sensegate)") from None
    try:
        owner = store_path if store_path.exists() else store_path.parent
        st = owner.stat() if owner.exists() else None
        kept: Path | None = None
        if store_path.exists():
            # Fold the WAL into the file so the kept copy is whole on its own.
            with contextlib.closing(sqlite3.connect(store_path)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            kept = store_path.with_name(f"{store_path.name}.before-restore-{stamp}")
            os.replace(store_path, kept)
        for suffix in ("-wal", "-shm"):
            Path(f"{store_path}{suffix}").unlink(missing_ok=True)
        store_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = store_path.with_name(f".{store_path.name}.restoring")
        tmp.unlink(missing_ok=True)
        with (
            contextlib.closing(sqlite3.connect(f"{backup_file.resolve().as_uri()}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(tmp)) as dst,
        ):
            src.backup(dst)
        os.chmod(tmp, 0o600)
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, store_path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"restore into {store_path} failed: {exc}") from exc
    finally:
        lock.release()
    return StoreFacts(store_path, facts.events, facts.schema_version), kept
