"""SenseGate's one error tree. Library exceptions are mapped onto it at the boundary.

::

    SenseGateError
    ├── ConfigError          a config file is wrong; carries every problem found (file, line, field, expected, found)
    ├── PayloadError         one payload or frame cannot be decoded; counted, logged once, skipped
    │   ├── UnknownDeviceError   well-formed, but from a device the registry does not know
    │   └── UnauthenticatedError an alert command over MQTT without a valid signature; refused
    ├── TransportError       a broker, serial port or socket failed; the supervisor retries
    ├── SinkError            an output could not take a batch
    │   ├── RetryableSinkError   try again later (timeout, connection refused, 5xx)
    │   └── RejectedBatchError   the database says the data is malformed; retrying will not help
    └── StoreError           the local durable store failed (corrupt file, I/O error)
        └── StoreFullError   its filesystem is full: the store made what room it could; try once more

Rule: an input problem never escapes as anything but ``PayloadError``; codecs raise nothing
else, whatever bytes they are given.
"""

from __future__ import annotations

from dataclasses import dataclass


class SenseGateError(Exception):
    """Base of every error SenseGate raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a config file, located precisely enough to fix it."""

    file: str
    path: str  # dotted field path, e.g. "devices['3-2-502-smoke'].household" (an item by its id)
    expected: str
    found: str
    line: int | None = None  # where the field (or the table it is in) is written, 1-based

    def __str__(self) -> str:
        file = f"{self.file}:{self.line}" if self.line is not None else self.file
        where = f"{file}: {self.path}" if self.path else file
        return f"{where}: expected {self.expected}, found {self.found}"


class ConfigError(SenseGateError):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PayloadError(SenseGateError):
    """A payload or frame that cannot be decoded.

    ``reason`` is a short stable tag used as a counter name (``bad_json``, ``wrong_type`` …);
    the message says what was wrong in words.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class UnknownDeviceError(PayloadError):
    def __init__(self, message: str) -> None:
        super().__init__("unknown_device", message)


class UnauthenticatedError(PayloadError):
    """An alert command whose sender is not proved (gateway/alerts/commands.py): unsigned, an
    unknown or revoked key, a wrong MAC, a time too far from the gateway's clock, a replayed
    nonce. ``why`` is that, as a short tag; the reason is always ``unauthenticated``."""

    def __init__(self, why: str, message: str) -> None:
        self.why = why
        super().__init__("unauthenticated", message)


class TransportError(SenseGateError):
    pass


class SinkError(SenseGateError):
    pass


class RetryableSinkError(SinkError):
    pass


class RejectedBatchError(SinkError):
    """The output rejected the data itself (e.g. HTTP 400 from InfluxDB)."""


class StoreError(SenseGateError):
    pass


class StoreFullError(StoreError):
    """A write failed because the store's filesystem is full (SQLITE_FULL). By the time it is
    raised the store has rolled the transaction back and made what room it could (its reserve,
    eviction: docs/store.md, "A full disk"), so the same write is worth trying once more."""
