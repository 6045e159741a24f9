"""A small filesystem for disk-full tests: a tmpfs of a few MiB mounted for one test, and a
filler file that takes what is left of it.

Mounting needs root (CI's container runs the suite as root). Without it, or where the mount is
refused (no CAP_SYS_ADMIN), the test is skipped with the reason, never passed in silence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the block (lazily unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("a disk-full test mounts a small tmpfs, which needs root (CI runs the fault suite as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path} (no CAP_SYS_ADMIN in this container?): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0, name: str = "filler") -> Path:
    """Take the filesystem's free space but ``leave`` bytes with a file; return the file."""
    filler = path / name
    with open(filler, "ab", buffering=0) as f:
        block = bytes(4096)
        try:
            while free(path) > leave:
                f.write(block[: max(1, min(len(block), free(path) - leave))])
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
