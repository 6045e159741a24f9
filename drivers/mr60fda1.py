"""Seeed MR60FDA1 60 GHz fall-detection radar ("Fall Detection Module Pro"), UART 115200 8N1.

Pure codec: no I/O, no clock. Facts from the Seeed wiki page "60GHz mmWave Fall Detection
Sensor Pro" (Radar_MR60FDA1), Seeed's Arduino library for it, and ESPHome's parser for the sister MR24HPC1::

    offset  0    1    2     3     4     5     6 … 5+n   6+n   7+n  8+n
          ┌────┬────┬─────┬─────┬─────┬─────┬─────────┬─────┬────┬────┐
          │ 53 │ 59 │ctrl │ cmd │ len (BE)  │  data   │ sum │ 54 │ 43 │
          └────┴────┴─────┴─────┴─────┴─────┴─────────┴─────┴────┴────┘
    sum = low byte of the sum of every byte from 0x53 to the last data byte

    fall detected      53 59 83 01 00 01 01 32 54 43
    residence present  53 59 83 05 00 01 01 36 54 43

What ``decode`` makes of a frame (one frame → at most one observation):

=========  ====  =====================================  ==========================================
ctrl       cmd   meaning                                observation
=========  ====  =====================================  ==========================================
``01``     01    heartbeat [I for MR60FDA1]             ``heartbeat``
``80``     01    presence 00/01                         ``presence`` {present}
``80``     02    motion 00 none, 01 stationary, 02 mov  ``motion`` {state: none|stationary|moving}
``80``     03    body-movement parameter 0–100 (1/s)    ``motion`` {level}
``83``     01    fall state 00/01 (sent on change)      ``fall_cleared`` / ``fall_detected``
``83``     05    stationary residence 00/01 (on change) ``residence`` {present}
=========  ====  =====================================  ==========================================

A reply to a query carries ``cmd | 0x80`` (``80 81`` = presence) [I, as on the MR24HPC1]; it
decodes like the report. Known frames with nothing to report (product/firmware replies
``02 Ax``, reset ``01 02``, fall switch ``83 00``, sensitivity ``83 0D``, the movement
histogram ``80 0E``, old-firmware ``83 02``–``83 04``) decode to ``[]``; any other
ctrl/cmd is ``PayloadError("unknown_code")``.

``split`` resynchronises on ``53 59``; a candidate whose length exceeds ``MAX_DATA`` or whose
sum or tail is wrong loses only its first byte, so a real frame that started inside it is still
found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drivers.framing import Split, Status, split_stream
from gateway.errors import PayloadError
from gateway.models import Family, Kind, Observation

NAME = "mr60fda1"
FAMILY = Family.FALL
MODELS: dict[str, str] = {"MR60FDA1": "Seeed MR60FDA1 60 GHz fall-detection radar (UART, 53 59 … 54 43 frames)"}
EMITS: frozenset[str] = frozenset(
    {Kind.HEARTBEAT, Kind.PRESENCE, Kind.MOTION, Kind.FALL_DETECTED, Kind.FALL_CLEARED, Kind.RESIDENCE}
)

HEADER = b"\x53\x59"
TAIL = b"\x54\x43"
OVERHEAD = 9  # header 2, ctrl, cmd, length 2, sum, tail 2
# Longest data seen in the sources is the ASCII firmware string (~15 bytes). ESPHome's MR24HPC1
# parser refuses len_H > 4 and frames over 32 bytes; 64 bytes of data leaves room for replies we
# do not decode while refusing a noise-made length at once.
MAX_DATA = 64

HEARTBEAT = (0x01, 0x01)
RESET = (0x01, 0x02)
PRESENCE = (0x80, 0x01)
MOTION_STATE = (0x80, 0x02)
MOTION_LEVEL = (0x80, 0x03)
FALL = (0x83, 0x01)
RESIDENCE = (0x83, 0x05)

MOTION_STATES = ("none", "stationary", "moving")
_IGNORED = frozenset(
    {(0x01, 0x02), (0x02, 0xA1), (0x02, 0xA2), (0x02, 0xA3), (0x02, 0xA4), (0x80, 0x0E), (0x83, 0x00), (0x83, 0x0D)}
    | {(0x83, c) for c in (0x02, 0x03, 0x04)}
)
QUERY_DATA = 0x0F  # the dummy data byte of a query


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def frame(ctrl: int, cmd: int, data: bytes = b"") -> bytes:
    """One frame around ``data``. ``PayloadError("not_encodable")`` for out-of-range fields."""
    if not (0 <= ctrl <= 0xFF and 0 <= cmd <= 0xFF) or len(data) > MAX_DATA:
        raise PayloadError("not_encodable", f"ctrl={ctrl} cmd={cmd} len={len(data)} does not fit a frame")
    body = HEADER + bytes((ctrl, cmd)) + len(data).to_bytes(2, "big") + data
    return body + bytes((checksum(body),)) + TAIL


def _at(buffer: bytes | bytearray, pos: int) -> tuple[Status, int]:
    """What starts at ``pos`` (a header): ``("frame", n)``, ``("partial", 0)``,
    ``("bad", 0)`` (sum or tail wrong) or ``("resync", 0)`` (absurd length)."""
    end = len(buffer)
    if end - pos < 6:
        return "partial", 0
    length = (buffer[pos + 4] << 8) | buffer[pos + 5]
    if length > MAX_DATA:
        return "resync", 0
    total = OVERHEAD + length
    if end - pos < total:
        return "partial", 0
    last = pos + total
    if buffer[last - 3] != checksum(buffer[pos : last - 3]) or buffer[last - 2 : last] != TAIL:
        return "bad", 0
    return "frame", total


def split(buffer: bytes | bytearray) -> Split:
    """Whole frames at the front of ``buffer``; see ``drivers.framing`` for the contract."""
    return split_stream(buffer, HEADER, _at)


def parse(frame_bytes: bytes) -> tuple[int, int, bytes]:
    """``(ctrl, cmd, data)`` of one whole frame, verified."""
    b = bytes(frame_bytes)
    if len(b) < OVERHEAD or b[:2] != HEADER:
        raise PayloadError("bad_frame", f"not an MR60FDA1 frame: {b[:16].hex(' ')}")
    length = (b[4] << 8) | b[5]
    if length > MAX_DATA or len(b) != OVERHEAD + length:
        raise PayloadError("bad_length", f"length field {length} does not match a {len(b)}-byte frame")
    if b[-2:] != TAIL:
        raise PayloadError("bad_frame", f"tail {b[-2:].hex(' ')}, expected 54 43")
    if b[-3] != checksum(b[:-3]):
        raise PayloadError("bad_checksum", f"sum {b[-3]:02x}, expected {checksum(b[:-3]):02x}")
    return b[2], b[3], b[6 : 6 + length]


def decode(frame_bytes: bytes) -> list[Observation]:
    ctrl, cmd, data = parse(frame_bytes)
    if ctrl in (0x80, 0x83) and cmd & 0x80:
        cmd &= 0x7F  # a query's reply reads like the report
    key = (ctrl, cmd)
    if key == HEARTBEAT:
        return [Observation(Kind.HEARTBEAT)]
    if key in _IGNORED:
        return []
    if key not in (PRESENCE, MOTION_STATE, MOTION_LEVEL, FALL, RESIDENCE):
        raise PayloadError("unknown_code", f"unknown control/command word {ctrl:02x} {cmd:02x}")
    if len(data) != 1:
        raise PayloadError("bad_length", f"{ctrl:02x} {cmd:02x} carries {len(data)} data bytes, expected 1")
    value = data[0]
    if key == MOTION_LEVEL:
        if value > 100:
            raise PayloadError("bad_value", f"body-movement parameter {value}, expected 0–100")
        return [Observation(Kind.MOTION, {"level": value})]
    if key == MOTION_STATE:
        if value >= len(MOTION_STATES):
            raise PayloadError("bad_value", f"motion state {value:02x}, expected 00, 01 or 02")
        return [Observation(Kind.MOTION, {"state": MOTION_STATES[value]})]
    if value > 1:
        raise PayloadError("bad_value", f"{ctrl:02x} {cmd:02x} value {value:02x}, expected 00 or 01")
    if key == PRESENCE:
        return [Observation(Kind.PRESENCE, {"present": bool(value)})]
    if key == FALL:
        return [Observation(Kind.FALL_DETECTED if value else Kind.FALL_CLEARED)]
    return [Observation(Kind.RESIDENCE, {"present": bool(value)})]


def encode(observation: Observation) -> bytes:
    """The frame the radar sends for ``observation``; ``decode(encode(o)) == [o]``."""
    o = observation
    v = dict(o.values)
    if o.device_time is not None:
        raise PayloadError("not_encodable", "MR60FDA1 frames carry no time")
    if o.kind == Kind.HEARTBEAT and not v:
        return frame(*HEARTBEAT, bytes((QUERY_DATA,)))
    if o.kind in (Kind.FALL_DETECTED, Kind.FALL_CLEARED) and not v:
        return frame(*FALL, bytes((o.kind == Kind.FALL_DETECTED,)))
    if o.kind in (Kind.PRESENCE, Kind.RESIDENCE) and set(v) == {"present"} and isinstance(v["present"], bool):
        return frame(*(PRESENCE if o.kind == Kind.PRESENCE else RESIDENCE), bytes((v["present"],)))
    if o.kind == Kind.MOTION and set(v) == {"state"} and v["state"] in MOTION_STATES:
        return frame(*MOTION_STATE, bytes((MOTION_STATES.index(str(v["state"])),)))
    if o.kind == Kind.MOTION and set(v) == {"level"}:
        level = v["level"]
        if isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= 100:
            return frame(*MOTION_LEVEL, bytes((level,)))
    raise PayloadError("not_encodable", f"no MR60FDA1 frame says {o.kind.value} {v!r}")


def query(ctrl: int, cmd: int) -> bytes:
    """A host→radar query (``cmd | 0x80`` for reports, e.g. ``query(0x80, 0x81)`` = presence)."""
    return frame(ctrl, cmd, bytes((QUERY_DATA,)))


def reset() -> bytes:
    """Module reset, host→radar: ``53 59 01 02 00 01 0F BF 54 43``."""
    return query(*RESET)


def keepalive() -> bytes | None:
    """Nothing to ask: the radar reports the body-movement parameter every second and heartbeats."""
    return None


def startup_commands(settings: Mapping[str, float]) -> Sequence[bytes]:
    """MR60FDA1 settings commands are not documented in the sources read: nothing to send."""
    if settings:
        raise PayloadError("not_encodable", f"MR60FDA1 takes no settings, got {sorted(settings)}")
    return []
