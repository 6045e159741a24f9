"""Logging: one structured line per event of interest, and "log once" for repeated trouble.

Bad input must be logged once with enough context, then only counted: a sensor that sends
garbage every second must not fill the disk with the same warning. ``LogOnce`` remembers the
keys it has logged; ``reset`` re-arms a key when the condition clears (e.g. reconnected).

Everything it keeps is bounded, and so is what it writes, whatever arrives:

- it remembers the ``MAX_KEYS`` keys used most recently (an LRU): a key pushed out by a flood
  of newer ones is logged again when it comes back;
- it logs at most ``MAX_NEW_PER_INTERVAL`` first occurrences per ``SUMMARY_INTERVAL``: a flood
  of distinct keys (random topics from a misbehaving client) is logged up to that, then only
  counted;
- what it did not log is summarised once per interval, one line: "suppressed N more messages
  for M keys". The summary comes with the next warning after the interval, or from
  ``summarise_all`` (the runtime's housekeeping calls it), so a flood that stopped is still told.

Time is the injected clock's (``Clock.monotonic``).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable

from gateway.clock import Clock, SystemClock

MAX_KEYS = 1000
MAX_NEW_PER_INTERVAL = 100
SUMMARY_INTERVAL = 60.0

_instances: weakref.WeakSet[LogOnce] = weakref.WeakSet()


class LogOnce:
    def __init__(
        self,
        logger: logging.Logger,
        clock: Clock | None = None,
        *,
        max_keys: int = MAX_KEYS,
        max_new_per_interval: int = MAX_NEW_PER_INTERVAL,
        interval: float = SUMMARY_INTERVAL,
    ) -> None:
        self._logger = logger
        self._clock: Clock = clock or SystemClock()
        self._max_keys = max_keys
        self._max_new = max_new_per_interval
        self._interval = interval
        # key → the interval in which it was last counted as suppressed (-1: not yet), most
        # recently used last.
        self._seen: OrderedDict[Hashable, int] = OrderedDict()
        self._lock = threading.Lock()  # paho callbacks log from their own thread
        self._window = 0  # number of the current interval
        self._window_start = self._clock.monotonic()
        self._new = 0  # first occurrences logged in this interval
        self._suppressed = 0  # messages not logged in this interval
        self._suppressed_keys = 0  # distinct keys among them
        _instances.add(self)

    def warning(self, key: Hashable, msg: str, *args: object) -> None:
        with self._lock:
            summary = self._roll()
            log = self._first(key)
        if summary is not None:
            self._logger.warning(*summary)
        if log:
            self._logger.warning(msg + " (further occurrences are counted, not logged)", *args)

    def reset(self, key_prefix: tuple[Hashable, ...]) -> None:
        n = len(key_prefix)
        with self._lock:
            for k in [k for k in self._seen if isinstance(k, tuple) and k[:n] == key_prefix]:
                del self._seen[k]

    def summarise(self) -> None:
        """Log the summary of the last interval if it is over and something was suppressed."""
        with self._lock:
            summary = self._roll()
        if summary is not None:
            self._logger.warning(*summary)

    def _first(self, key: Hashable) -> bool:
        """Whether to log this occurrence; counts it otherwise. Under the lock."""
        if key in self._seen:
            self._seen.move_to_end(key)
            self._suppress(key)
            return False
        self._seen[key] = -1
        if len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        if self._new < self._max_new:
            self._new += 1
            return True
        self._suppress(key)
        return False

    def _suppress(self, key: Hashable) -> None:
        self._suppressed += 1
        if self._seen[key] != self._window:
            self._seen[key] = self._window
            self._suppressed_keys += 1

    def _roll(self) -> tuple[str, int, int, float] | None:
        """Start a new interval if the current one is over; its summary, if anything was
        suppressed in it. Under the lock."""
        now = self._clock.monotonic()
        elapsed = now - self._window_start
        if elapsed < self._interval:
            return None
        summary = None
        if self._suppressed:
            summary = (
                "suppressed %d more messages for %d keys in the last %.0f s (counted, not logged)",
                self._suppressed,
                self._suppressed_keys,
                elapsed,
            )
        self._window += 1
        self._window_start = now
        self._new = self._suppressed = self._suppressed_keys = 0
        return summary


def summarise_all() -> None:
    """Every ``LogOnce``'s summary that is due (called every few seconds by the runtime)."""
    for log_once in list(_instances):
        log_once.summarise()


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
