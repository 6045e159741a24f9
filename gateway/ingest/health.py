"""Whether ingest is failing, and since when, kept in the store's meta so that ``sensegate
status`` (another process) can tell: ``ingest.<part>`` = ``{"error", "since", "last"}`` while a
part fails, deleted when it works again.

Parts: ``mqtt`` (the broker refused the connection or a subscription — Mosquitto 2.0 grants
subscriptions its ACL denies and delivers nothing, which no client can see —, cannot be
reached, or dropped the link), ``store`` (a batch of messages could not be committed) and
``lane`` (the alarm lane, gateway/ingest/lane.py: failing from a refusal or a lost link until
its fence is committed again). The meta row is
written only when the state or the error changes, never per message; a failing part keeps its
first ``since`` across a restart of the gateway until it works again. Writing it is
best-effort: with the store itself failing, the log says what the row cannot.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.errors import StoreError
from gateway.store import Store

log = logging.getLogger("sensegate.ingest")

PREFIX = "ingest."


@dataclass(frozen=True, slots=True)
class Failure:
    part: str
    error: str
    since: float  # when it started failing
    last: float  # when the error was last seen changing

    @classmethod
    def from_meta(cls, key: str, value: str) -> Failure | None:
        try:
            data: Any = json.loads(value)
            return cls(key.removeprefix(PREFIX), str(data["error"]), float(data["since"]), float(data["last"]))
        except (ValueError, KeyError, TypeError):
            return None


def failures(store: Store) -> list[Failure]:
    """What is failing now, as the running gateway last recorded it."""
    found = (Failure.from_meta(k, v) for k, v in store.metas(PREFIX).items())
    return [f for f in found if f is not None]


class IngestHealth:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()  # paho's callbacks report from its thread
        # part → the error recorded (None: recorded as working); a part not here is unknown
        # (at start: a row left by the last run is cleared once the part works).
        self._state: dict[str, str | None] = {}

    def failing(self, part: str, error: str) -> None:
        with self._lock:
            if self._state.get(part, "") == error:
                return
            self._state[part] = error
        now = self.clock.now()
        try:
            earlier = Failure.from_meta(PREFIX + part, self.store.meta(PREFIX + part) or "")
            since = earlier.since if earlier is not None else now
            self.store.set_meta(PREFIX + part, json.dumps({"error": error, "since": since, "last": now}))
        except StoreError as exc:
            log.warning("cannot record that %s ingest is failing in the store: %s", part, exc)

    def ok(self, part: str) -> None:
        with self._lock:
            if part in self._state and self._state[part] is None:
                return
            self._state[part] = None
        try:
            self.store.delete_meta(PREFIX + part)
        except StoreError as exc:
            log.warning("cannot record that %s ingest works again in the store: %s", part, exc)
