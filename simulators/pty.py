"""A pseudo-terminal that plays a device's serial port, for the serial simulators.

The gateway opens the slave side by a stable path, as installers configure
``/dev/serial/by-id/…``: here a symlink the simulator controls. ``vanish`` (unplugged: the
node disappears, the open side gets a read error) and ``reappear`` (plugged back in: a new
/dev/pts number behind the same symlink) are what the driver must survive. Subclasses say what
the device does with what it is sent (``received``) and write to ``self._master``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path


class PtyPort:
    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.opens = 0
        self._master = -1
        self._slave = -1

    @property
    def is_open(self) -> bool:
        return self._master >= 0

    @property
    def device(self) -> str:
        return os.ttyname(self._slave) if self._slave >= 0 else ""

    def open(self) -> str:
        """Make a pty pair and point the symlink at it. Returns the /dev/pts path."""
        if self.is_open:
            return self.device
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: a UART is 8-bit clean
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self.device, tmp)
        os.replace(tmp, self.link)
        self.opens += 1
        self.opened()
        with contextlib.suppress(RuntimeError):  # no running loop: what the gateway sends is not read
            asyncio.get_running_loop().add_reader(master, self._on_readable)
        return self.device

    def vanish(self) -> None:
        """Unplugged: the port's node disappears and the open side sees a read error."""
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self._close_fds()

    def reappear(self) -> str:
        """Plugged back in: a new pty (another /dev/pts number), the same stable symlink."""
        self._close_fds()
        return self.open()

    def close(self) -> None:
        self.vanish()

    def opened(self) -> None:
        """Called on every (re)open, before reading starts: reset per-connection state."""

    def received(self, data: bytes) -> None:
        """Bytes the gateway wrote to the port."""

    def _close_fds(self) -> None:
        if self._master >= 0:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
        if self._slave >= 0:
            os.close(self._slave)
        self._master = self._slave = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while nobody has the slave side open
        self.received(data)
