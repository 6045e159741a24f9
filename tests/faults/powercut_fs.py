"""A FUSE filesystem that loses, at a power cut, everything written but not yet fsynced.

    /usr/bin/python3 tests/faults/powercut_fs.py MOUNTPOINT -f -o backing=DIR

It mirrors ``DIR``. What a process writes is kept in this daemon's memory, page by page, and
reads see it (as they would see the page cache); only ``fsync``/``fdatasync`` of a file writes
its pages and its size to ``DIR`` and syncs them there. Killing the daemon (SIGKILL) is the
power cut: whatever was not fsynced is gone, and ``DIR`` holds what a disk would after reboot.

Limitations, stated in docs/reliability.md: directory entries (create, unlink, rename, mkdir)
reach ``DIR`` at once, as on a filesystem that journals its metadata; a write is lost or kept
whole per page (no torn sectors, no reordering among fsynced writes); POSIX locks are left to
the kernel (one host).

It runs under Debian's python3 with its python3-fuse (libfuse 2 API), not the project's venv:
this file is a test helper and imports nothing from the project.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any

import fuse  # type: ignore[import-not-found]  # Debian's python3-fuse

fuse.fuse_python_api = (0, 2)

PAGE = 4096


class Volatile:
    """A file's writes since its last fsync: pages, and its size now."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}


class PowerCutFS(fuse.Fuse):  # type: ignore[misc]
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.backing = ""
        self._lock = threading.Lock()
        self._files: dict[str, Volatile] = {}

    # ------------------------------------------------------------------ helpers

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _volatile(self, path: str) -> Volatile:
        v = self._files.get(path)
        if v is None:
            v = self._files[path] = Volatile(os.stat(self._real(path)).st_size)
        return v

    def _page(self, path: str, v: Volatile, index: int) -> bytearray:
        page = v.pages.get(index)
        if page is None:
            page = bytearray(PAGE)
            if index * PAGE < v.size:
                fd = os.open(self._real(path), os.O_RDONLY)
                try:
                    data = os.pread(fd, PAGE, index * PAGE)
                finally:
                    os.close(fd)
                page[: len(data)] = data
            v.pages[index] = page
        return page

    # ------------------------------------------------------------------ data: volatile until fsync

    def getattr(self, path: str) -> Any:
        try:
            st = os.lstat(self._real(path))
        except OSError as exc:
            return -exc.errno
        with self._lock:
            v = self._files.get(path)
            if v is None:
                return st
            out = fuse.Stat()
            for name in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_atime", "st_mtime"):
                setattr(out, name, getattr(st, name))
            out.st_ctime = st.st_ctime
            out.st_size = v.size
            return out

    def read(self, path: str, size: int, offset: int) -> Any:
        with self._lock:
            v = self._volatile(path)
            end = min(offset + size, v.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, skip = divmod(pos, PAGE)
                take = min(PAGE - skip, end - pos)
                out += self._page(path, v, index)[skip : skip + take]
                pos += take
            return bytes(out)

    def write(self, path: str, buf: bytes, offset: int) -> int:
        with self._lock:
            v = self._volatile(path)
            pos, done = offset, 0
            while done < len(buf):
                index, skip = divmod(pos, PAGE)
                take = min(PAGE - skip, len(buf) - done)
                self._page(path, v, index)[skip : skip + take] = buf[done : done + take]
                pos += take
                done += take
            v.size = max(v.size, offset + len(buf))
            return len(buf)

    def truncate(self, path: str, length: int) -> None:
        with self._lock:
            v = self._volatile(path)
            if length < v.size:
                index, keep = divmod(length, PAGE)
                if keep:
                    page = self._page(path, v, index)
                    page[keep:] = bytes(PAGE - keep)
                for i in [i for i in v.pages if i * PAGE >= length]:
                    del v.pages[i]
            v.size = length

    def fsync(self, path: str, datasync: int) -> None:
        with self._lock:
            v = self._files.pop(path, None)
            fd = os.open(self._real(path), os.O_WRONLY)
            try:
                if v is not None:
                    for index, page in sorted(v.pages.items()):
                        if index * PAGE < v.size:
                            os.pwrite(fd, bytes(page[: min(PAGE, v.size - index * PAGE)]), index * PAGE)
                    os.ftruncate(fd, v.size)
                os.fsync(fd)
            finally:
                os.close(fd)

    def open(self, path: str, flags: int) -> int:
        return 0 if os.path.exists(self._real(path)) else -errno.ENOENT

    def create(self, path: str, flags: int, mode: int) -> int:
        fd = os.open(self._real(path), os.O_CREAT | os.O_WRONLY, stat.S_IMODE(mode))
        os.close(fd)
        with self._lock:
            if flags & os.O_TRUNC:
                self._volatile(path).size = 0
        return 0

    def release(self, path: str, flags: int) -> None:
        """Closing a file is not syncing it: nothing reaches the disk."""

    def flush(self, path: str) -> None:
        """Nor is flushing it."""

    # ------------------------------------------------------------------ metadata: at once

    def readdir(self, path: str, offset: int) -> Iterator[Any]:
        for name in [".", "..", *os.listdir(self._real(path))]:
            yield fuse.Direntry(name)

    def unlink(self, path: str) -> None:
        os.unlink(self._real(path))
        with self._lock:
            self._files.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        os.rename(self._real(old), self._real(new))
        with self._lock:
            v = self._files.pop(old, None)
            self._files.pop(new, None)
            if v is not None:
                self._files[new] = v

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, atime: Any, mtime: Any) -> None:
        os.utime(self._real(path), ns=(atime.tv_sec * 10**9 + atime.tv_nsec, mtime.tv_sec * 10**9 + mtime.tv_nsec))

    def access(self, path: str, mode: int) -> int:
        return 0 if os.access(self._real(path), mode) else -errno.EACCES

    def statfs(self) -> Any:
        return os.statvfs(self.backing)


def main() -> None:
    server = PowerCutFS(usage="powercut_fs.py MOUNTPOINT -f -o backing=DIR", dash_s_do="setsingle")
    server.parser.add_option(mountopt="backing", metavar="DIR", help="where fsynced data lives")
    server.parse(values=server, errex=1)
    if not server.backing or not os.path.isdir(server.backing):
        sys.exit("powercut_fs: -o backing=DIR (an existing directory) is required")
    server.backing = os.path.abspath(server.backing)
    server.main()


if __name__ == "__main__":
    main()
