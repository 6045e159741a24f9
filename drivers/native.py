"""SenseGate's own JSON payload: for devices and access controllers that publish directly.

The schema is documented for device makers in ``docs/payloads-native.md``; this module is its
reference implementation. The topic is ``<base>/<device_id>`` (the runtime handles topics); the
payload is one event object, or a batch — a JSON array of up to ``MAX_BATCH`` event objects::

    {"v": 1, "kind": "access_granted", "time": "2026-11-22T08:00:00+08:00",
     "device": "3-2-unit-door", "values": {"credential": "card:123-4567", "person": "张三",
     "direction": "in", "method": "card"}}

=========  ========  =====================================================================
field      required  meaning
=========  ========  =====================================================================
v          no        schema version; only ``1`` exists (absent means 1)
kind       yes       a ``gateway.models.Kind`` value
time       no        ISO-8601 *with* an offset, or epoch seconds (number); 2000 ≤ t < 2100
values     no        object of scalars (string, integer, number, boolean); no nesting, no null
device     no        the publishing device's id; the runtime checks it against the topic
=========  ========  =====================================================================

``access_granted`` / ``access_denied`` require ``values.credential`` (a string) and restrict
``direction`` to ``in``/``out`` and ``method`` to card/face/pin/qr/remote. Unknown top-level
fields are an error (a typo such as ``"valeus"`` must not silently drop the values).

This module also holds the few helpers the other codecs of the package share (the size guard,
strict JSON loading, the time window): they live here because the native schema is the one
the project owns, and this keeps the package to one module per format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, NoReturn

import msgspec

from gateway.errors import PayloadError
from gateway.models import Kind, Observation, Scalar

__all__ = ["MAX_BATCH", "MAX_PAYLOAD", "NativeMessage", "decode", "encode"]

MAX_PAYLOAD = 64 * 1024  # bytes; checked before anything else so garbage is rejected cheaply
MAX_BATCH = 100
MAX_KEY_LEN = 64  # a values key becomes a database field name
MAX_TEXT_LEN = 1024  # a string value; a longer one is a bug or an attack, never data

VERSION = 1
ACCESS_KINDS = frozenset({Kind.ACCESS_GRANTED, Kind.ACCESS_DENIED})
DIRECTIONS = frozenset({"in", "out"})
METHODS = frozenset({"card", "face", "pin", "qr", "remote"})
_FIELDS = frozenset({"v", "kind", "time", "values", "device"})

# Device clocks outside this window are not clocks worth trusting (an unset RTC says 1970 or
# 2000-01-01 00:00 exactly; a corrupted one says 2106). Kept tight so that every accepted time
# converts to and from local calendar time exactly.
MIN_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_TIME = 4_102_444_800.0  # 2100-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)
_MIN_US = int(MIN_TIME) * 1_000_000
_MAX_US = int(MAX_TIME) * 1_000_000
INT64 = 2**63


@dataclass(frozen=True, slots=True)
class NativeMessage:
    """One native payload: the ``device`` it names (``None`` if it names none) and what it says."""

    device: str | None
    observations: tuple[Observation, ...]


# --------------------------------------------------------------------------------------------
# Helpers shared by the codecs of this package


def snippet(value: object, limit: int = 60) -> str:
    """``repr`` of a seen value, truncated, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # json turns 1e400 into inf; no sensor means that
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; we do not


# json.loads(text, parse_float=…, parse_constant=…) builds a decoder per call: one does.
_JSON = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)
_FAST_JSON = msgspec.json.Decoder()
_FAST_MAX = 1000  # characters


def load_json(payload: bytes, what: str) -> Any:
    """Parse ``payload`` as strict JSON after the size, emptiness and UTF-8 checks.

    Raises ``PayloadError`` only: ``wrong_type`` (not bytes), ``too_large``, ``empty``,
    ``bad_utf8``, ``bad_json`` (including NaN/Infinity, overflowing numbers, absurd nesting).
    """
    if isinstance(payload, memoryview):
        if payload.nbytes > MAX_PAYLOAD:
            raise PayloadError("too_large", f"{what}: {payload.nbytes} bytes > {MAX_PAYLOAD}")
        payload = payload.tobytes()
    if not isinstance(payload, bytes | bytearray):
        raise PayloadError("wrong_type", f"{what}: payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError("too_large", f"{what}: {len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("bad_utf8", f"{what}: invalid UTF-8 at byte {exc.start}") from None
    text = text.removeprefix("\ufeff").strip()
    if not text:
        raise PayloadError("empty", f"{what}: empty payload")
    # msgspec reads JSON as json does, to the same values (integers of any size up to Python's
    # digit limit, floats correctly rounded, the last of duplicate keys), four times faster. Its
    # nesting limit is not quite json's (both count against the recursion limit, each in its own
    # way), so deep texts stay away from it: 1,000 characters nest 500 levels at most. Anything it
    # refuses goes to json as well, so an error is json's, in json's words.
    if len(text) <= _FAST_MAX:
        try:
            return _FAST_JSON.decode(text)
        except (msgspec.DecodeError, RecursionError):
            pass
    try:
        if text.startswith("\ufeff"):  # a second BOM: json.loads refuses it in words of its own
            return json.loads(text)
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise PayloadError("bad_json", f"{what}: {exc.msg} at char {exc.pos}: {snippet(text)}") from None
    except (ValueError, RecursionError) as exc:  # int digit limit, inf, NaN, deep nesting
        raise PayloadError("bad_json", f"{what}: {snippet(str(exc))}") from None


def dump_json(data: object) -> bytes:
    """Compact UTF-8 JSON, as the devices publish it (Chinese text stays readable)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def micros(moment: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime (no float rounding on the way)."""
    return (moment - EPOCH) // _ONE_MICRO


def to_micros(seconds: float | int | str) -> int:
    """Epoch seconds (a number, or a decimal string) rounded to whole microseconds, exactly.

    Exact arithmetic matters: ``round(t * 1e6)`` can be off by one near 2100, which would make
    an encoded time decode to a different float.
    """
    return round(Fraction(seconds) * 1_000_000)


def from_micros(count: int) -> float:
    return count / 1_000_000


def moment_of(count: int) -> datetime:
    """The aware UTC datetime of a microsecond count."""
    return EPOCH + timedelta(microseconds=count)


def in_window(seconds: float) -> bool:
    return MIN_TIME <= seconds < MAX_TIME


def seconds_in_window(count: int) -> float | None:
    """A microsecond count as epoch seconds, or None outside 2000–2100 (compared as integers:
    a 400-digit JSON number must not overflow the float conversion)."""
    return from_micros(count) if _MIN_US <= count < _MAX_US else None


def is_text(value: object) -> bool:
    """A str that is valid Unicode: JSON escapes can smuggle in lone surrogates."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# The native schema


def decode(payload: bytes) -> NativeMessage:
    """Decode one native payload (an event object or a batch array)."""
    data = load_json(payload, "native")
    if isinstance(data, dict):
        items: list[Any] = [data]
        prefix = ""
    elif isinstance(data, list):
        if not data:
            raise PayloadError("empty", "native: empty batch []")
        if len(data) > MAX_BATCH:
            raise PayloadError("too_large", f"native: batch of {len(data)} events > {MAX_BATCH}")
        items = data
        prefix = "[{}]."
    else:
        raise PayloadError("not_object", f"native: expected an object or an array, got {snippet(data)}")
    device: str | None = None
    observations = []
    for index, item in enumerate(items):
        where = prefix.format(index)
        observation, item_device = _decode_item(item, where)
        if item_device is not None:
            if device is not None and item_device != device:
                raise PayloadError(
                    "bad_value",
                    f"native: {where}device {snippet(item_device)} differs from {snippet(device)}",
                )
            device = item_device
        observations.append(observation)
    return NativeMessage(device, tuple(observations))


def encode(observations: Sequence[Observation], device: str | None = None) -> bytes:
    """The payload a native device would publish: one object, or a batch for several."""
    if not observations:
        raise PayloadError("empty", "native: nothing to encode")
    if len(observations) > MAX_BATCH:
        raise PayloadError("too_large", f"native: {len(observations)} events > {MAX_BATCH}")
    items = []
    for index, observation in enumerate(observations):
        item: dict[str, Any] = {"v": VERSION, "kind": str(observation.kind)}
        if device is not None:
            item["device"] = device
        if observation.device_time is not None:
            item["time"] = observation.device_time
        if observation.values:
            item["values"] = dict(observation.values)
        # The decoder's validator is the single definition of "valid", so encode can never
        # produce a payload the gateway would reject.
        _decode_item(item, f"[{index}]." if len(observations) > 1 else "")
        items.append(item)
    try:
        raw = dump_json(items if len(items) > 1 else items[0])
    except (TypeError, ValueError) as exc:
        raise PayloadError("not_encodable", f"native: {snippet(str(exc))}") from None
    if len(raw) > MAX_PAYLOAD:
        raise PayloadError("too_large", f"native: encoded {len(raw)} bytes > {MAX_PAYLOAD}")
    return raw


def _decode_item(item: object, where: str) -> tuple[Observation, str | None]:
    if not isinstance(item, dict):
        raise PayloadError("not_object", f"native: {where or 'payload'} is not an object: {snippet(item)}")
    unknown = sorted(str(key) for key in item if key not in _FIELDS)
    if unknown:
        raise PayloadError("unknown_field", f"native: {where}unknown field(s) {snippet(unknown)}")
    version = item.get("v", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise PayloadError("wrong_type", f"native: {where}v must be an integer, got {snippet(version)}")
    if version != VERSION:
        raise PayloadError("unsupported_version", f"native: {where}v={version}, this gateway reads v=1")
    kind = _kind(item.get("kind"), where)
    device_time = _time(item.get("time"), where)
    values = _values(item.get("values"), where)
    if kind in ACCESS_KINDS:
        _check_access(values, where, kind)
    device = item.get("device")
    if device is not None and (not is_text(device) or not device):
        raise PayloadError("wrong_type", f"native: {where}device must be a non-empty string, got {snippet(device)}")
    return Observation(kind, values, device_time), device


def _kind(value: object, where: str) -> Kind:
    if value is None:
        raise PayloadError("missing_field", f"native: {where}kind is missing")
    if not isinstance(value, str):
        raise PayloadError("wrong_type", f"native: {where}kind must be a string, got {snippet(value)}")
    try:
        return Kind(value)
    except ValueError:
        raise PayloadError("unknown_kind", f"native: {where}kind {snippet(value)} is not a known kind") from None


def _time(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError("wrong_type", f"native: {where}time must be ISO-8601 or epoch seconds, got {snippet(value)}")
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise PayloadError("bad_time", f"native: {where}time {snippet(value)} is not ISO-8601") from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            # A device that omits the offset could mean UTC or Beijing time; guessing shifts
            # every event by 8 h, so the schema demands it.
            raise PayloadError("bad_time", f"native: {where}time {snippet(value)} has no UTC offset")
        try:
            seconds = micros(moment) / 1_000_000
        except OverflowError:
            raise PayloadError("bad_time", f"native: {where}time {snippet(value)} out of range") from None
    elif isinstance(value, int):
        if not MIN_TIME <= value < MAX_TIME:  # compare before float(): 10**400 would overflow
            raise PayloadError("bad_time", f"native: {where}time {snippet(value)} is outside 2000–2100")
        seconds = float(value)
    else:
        seconds = value
    if not in_window(seconds):
        raise PayloadError("bad_time", f"native: {where}time {snippet(value)} is outside 2000–2100")
    return seconds


def _values(value: object, where: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError("wrong_type", f"native: {where}values must be an object, got {snippet(value)}")
    values: dict[str, Scalar] = {}
    for key, item in value.items():
        if not is_text(key) or not key or len(key) > MAX_KEY_LEN:
            raise PayloadError("bad_value", f"native: {where}values key {snippet(key)} must be 1–{MAX_KEY_LEN} chars")
        values[key] = _scalar(item, f"{where}values.{key}")
    return values


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -INT64 <= value < INT64:  # the time-series store holds 64-bit integers
            raise PayloadError("bad_value", f"native: {where} integer out of 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError("bad_value", f"native: {where} must be a finite number")
        return value
    if isinstance(value, str):
        if not is_text(value) or len(value) > MAX_TEXT_LEN:
            raise PayloadError("bad_value", f"native: {where} must be valid text of ≤ {MAX_TEXT_LEN} chars")
        return value
    raise PayloadError("wrong_type", f"native: {where} must be a string, number or boolean, got {snippet(value)}")


def _check_access(values: Mapping[str, Scalar], where: str, kind: Kind) -> None:
    credential = values.get("credential")
    if credential is None:
        raise PayloadError("missing_field", f"native: {where}{kind} requires values.credential")
    if not isinstance(credential, str) or not credential:
        raise PayloadError("wrong_type", f"native: {where}values.credential must be a non-empty string")
    person = values.get("person")
    if person is not None and not isinstance(person, str):
        raise PayloadError("wrong_type", f"native: {where}values.person must be a string, got {snippet(person)}")
    direction = values.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise PayloadError("bad_value", f"native: {where}values.direction must be in/out, got {snippet(direction)}")
    method = values.get("method")
    if method is not None and method not in METHODS:
        raise PayloadError(
            "bad_value",
            f"native: {where}values.method must be one of {sorted(METHODS)}, got {snippet(method)}",
        )
