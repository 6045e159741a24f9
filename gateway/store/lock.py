"""The running gateway's claim on its store: an exclusive ``flock`` on ``<store>.lock``, held for
as long as ``Gateway.run`` runs, with its pid written inside.

``sensegate restore`` takes the same lock, so it refuses while a gateway runs, and a gateway
started during a restore refuses to start; so does a second gateway on one store. The kernel
drops the lock when the process dies, however it dies: no stale lock after a crash or a power
cut. Readers (``status``, ``backup``, the console's CLI commands) never take it: SQLite's WAL
lets them in while the gateway writes.

The MQTT ingest in a process of its own (gateway/ingest/process.py) takes a lock of its own,
``<store>.ingest``, for as long as it runs: one that starts while the last one is still ending
(its gateway was killed; it stops in order) waits for it, so that a message the last one
committed but could not acknowledge is known as stored when the broker delivers it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gateway.errors import StoreError


def lock_path(store_path: Path, suffix: str = ".lock") -> Path:
    return store_path.with_name(store_path.name + suffix)


class StoreLock:
    def __init__(self, store_path: Path, what: str = "gateway", suffix: str = ".lock") -> None:
        # ``suffix``: another lock beside the store's (the ingest process's turn: ".ingest").
        self.path = lock_path(store_path, suffix)
        self.what = what
        self._fd: int | None = None

    def holder(self) -> int | None:
        """The pid that holds the lock now, or None (a free lock, or none yet)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode(errors="replace").split()
                return int(text[0]) if text and text[0].isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise StoreError(f"store {self.path.with_suffix('')} is in use: {text or 'another process'}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.what}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
