"""The systemd notify protocol (sd_notify(3)): ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and
``STATUS=…`` as datagrams to the AF_UNIX socket named by ``$NOTIFY_SOCKET``.

The protocol is one ``sendto`` of ``KEY=value`` lines; the stdlib ``socket`` module does it in a
few lines, so no dependency (``sdnotify``, ``systemd-python``; the latter needs libsystemd's
headers to build on the Pi). Without ``$NOTIFY_SOCKET`` (not under systemd, or a unit without
``Type=notify``) every call is a no-op.

``WatchdogSec=`` in the unit reaches the service as ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``):
the gateway pings every half of it from a task on its event loop (runtime.py), so a loop that
hangs — a blocking call, a deadlock — stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("sensegate.systemd")


class SystemdNotify:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotify:
        env = os.environ if environ is None else environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process meant to ping; a child that inherited it is not.
        if env.get("WATCHDOG_USEC", "").isdigit() and (pid is None or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WatchdogSec``), or None without a watchdog."""
        return None if self.watchdog_usec is None or not self.enabled else self.watchdog_usec / 2e6

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"`` …) in one datagram; False if not sent."""
        if self.address is None:
            return False
        # "@name" is a socket in the abstract namespace (a leading NUL byte on the wire).
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(states).encode(), target)
        except OSError as exc:
            if not self._failed:  # once: a watchdog ping every few seconds must not flood the journal
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._failed = True
            return False
        self._failed = False
        return True
