"""Logging: one structured line per event of interest, and "log once" for repeated trouble.

Bad input must be logged once with enough context, then only counted: a sensor that sends
garbage every second must not fill the disk with the same warning. ``LogOnce`` remembers the
keys it has logged; ``reset`` re-arms a key when the condition clears (e.g. reconnected).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Hashable

# More distinct keys than this and LogOnce stops remembering new ones (it still logs them once
# more each): a flood of random topics must not grow memory without bound.
_MAX_KEYS = 10_000


class LogOnce:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()  # paho callbacks log from their own thread

    def _first(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) < _MAX_KEYS:
                self._seen.add(key)
            return True

    def warning(self, key: Hashable, msg: str, *args: object) -> None:
        if self._first(key):
            self._logger.warning(msg + " (further occurrences are counted, not logged)", *args)

    def reset(self, key_prefix: tuple[Hashable, ...]) -> None:
        n = len(key_prefix)
        with self._lock:
            self._seen = {k for k in self._seen if not (isinstance(k, tuple) and k[:n] == key_prefix)}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (it is replaced under test runners
    and daemon wrappers; a handler bound to the old one would write to a closed file)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """``time level logger: message`` on stderr; alerts go to stdout separately."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho and amqtt are chatty at INFO; their problems surface through our own messages. uvicorn's
    # "started server process" is wrong here (the console is a task of this process).
    for noisy in ("amqtt", "transitions", "urllib3", "influxdb_client", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
