"""Seeed MR60FDA2 / Hi-Link HLK-LD6002C 60 GHz fall radar, "TinyFrame" over UART 115200 8N1.

Pure codec: no I/O, no clock. Facts from public sources (ESPHome's
``seeed_mr60fda2``, Seeed's mmWave library, the TinyFrame reference for the LD6002B/C)::

    offset  0     1    2     3    4     5    6     7          8 … 7+n    8+n
          ┌─────┬──────────┬──────────┬──────────┬──────────┬─────────┬──────────┐
          │ 01  │ ID (BE)  │ LEN (BE) │ TYPE (BE)│ HEAD_CK  │  DATA   │ DATA_CK  │
          └─────┴──────────┴──────────┴──────────┴──────────┴─────────┴──────────┘
    HEAD_CK = ~(XOR of bytes 0..6)   DATA_CK = ~(XOR of DATA)   (both & 0xFF)
    LEN = 0: no DATA and no DATA_CK (the host's queries look like that)
    numbers in DATA are little-endian (float32, uint32)

    fall detected   01 00 00 00 01 0E 02 F3 01 FE
    person present  01 00 00 00 01 0F 09 F9 01 FE
    get parameters  01 00 00 00 00 0E 06 F6          (host → radar)

The ID changes from frame to frame (the host counts from 0x8000, the radar keeps the MSB
clear); it is ignored on decode.

==========  ==========================================  =======================================
TYPE        meaning                                     observation
==========  ==========================================  =======================================
``0E02``    fall report, 1 byte 00 normal / 01 fall     ``fall_cleared`` / ``fall_detected``
``0F09``    presence, 1 byte 01 someone                 ``presence`` {present}
``0E06``    reply to get-parameters, 28 bytes           ``heartbeat`` {install_height,
            (height f32, threshold f32, sensitivity              fall_threshold, sensitivity}
            u32, alarm area 4 × f32)
==========  ==========================================  =======================================

Height reports (``0E0E``), target lists (``0A04``), point clouds (``0A08``), user log
(``010E``/``0E01``) and the acknowledgements of the host's set commands (``0E04``, ``0E08``,
``0E0A``, ``0E0C``, ``2110``) decode to ``[]``; any other TYPE is ``unknown_code``.

``split`` looks for SOF ``01`` and trusts LEN only once the header checksum is right: ``01`` is
common in noise, so a header that fails its checksum is resync (``skipped``), not a bad frame.
A frame whose *data* checksum is wrong counts in ``bad_checksums``; either way only the SOF
byte is dropped and the search goes on from the next byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from drivers.framing import Split, Status, split_stream
from gateway.errors import PayloadError
from gateway.models import Family, Kind, Observation

NAME = "mr60fda2"
FAMILY = Family.FALL
MODELS: dict[str, str] = {
    "MR60FDA2": "Seeed MR60FDA2 60 GHz fall-detection radar (UART, TinyFrame)",
    "LD6002C": "Hi-Link HLK-LD6002C 60 GHz fall-detection radar (UART, TinyFrame)",
}
EMITS: frozenset[str] = frozenset({Kind.HEARTBEAT, Kind.PRESENCE, Kind.FALL_DETECTED, Kind.FALL_CLEARED})

SOF = 0x01
HEADER_LEN = 8
# Point clouds are the longest frames the radar can send; 1 KiB of data holds dozens of points
# and still refuses a noise-made length before we wait for it.
MAX_DATA = 1024

FALL = 0x0E02
PRESENCE = 0x0F09
SET_HEIGHT = 0x0E04
GET_PARAMETERS = 0x0E06
SET_THRESHOLD = 0x0E08
SET_SENSITIVITY = 0x0E0A
SET_AREA = 0x0E0C
HEIGHT = 0x0E0E
FACTORY_RESET = 0x2110
_IGNORED = frozenset(
    {HEIGHT, 0x0A04, 0x0A08, 0x010E, 0x0E01, SET_HEIGHT, SET_THRESHOLD, SET_SENSITIVITY, SET_AREA, FACTORY_RESET}
)
PARAMETERS = struct.Struct("<ffI4f")  # 28 bytes

# Ranges the firmware accepts, from the LD6002C reference (sensitivity 3–30; threshold default 0.6 m).
SENSITIVITY_RANGE = (3, 30)
HEIGHT_RANGE = (0.5, 5.0)  # metres: a ceiling or wall mount in a flat [I]
THRESHOLD_RANGE = (0.1, 2.0)
SETTINGS = ("install_height", "fall_threshold", "sensitivity")


def _inv_xor(data: bytes | bytearray) -> int:
    x = 0
    for b in data:
        x ^= b
    return ~x & 0xFF


def frame(msg_type: int, data: bytes = b"", frame_id: int = 0) -> bytes:
    """One frame; LEN = 0 frames carry no data checksum."""
    if not (0 <= msg_type <= 0xFFFF and 0 <= frame_id <= 0xFFFF) or len(data) > MAX_DATA:
        raise PayloadError("not_encodable", f"type={msg_type} id={frame_id} len={len(data)} does not fit a frame")
    head = bytes((SOF,)) + frame_id.to_bytes(2, "big") + len(data).to_bytes(2, "big") + msg_type.to_bytes(2, "big")
    out = head + bytes((_inv_xor(head),))
    return out + data + bytes((_inv_xor(data),)) if data else out


def _at(buffer: bytes | bytearray, pos: int) -> tuple[Status, int]:
    """What starts at ``pos`` (an SOF): ``("frame", n)``, ``("partial", 0)``, ``("bad", 0)``
    (data checksum wrong) or ``("resync", 0)`` (header checksum wrong, or an absurd LEN)."""
    end = len(buffer)
    if end - pos < HEADER_LEN:
        return "partial", 0
    length = (buffer[pos + 3] << 8) | buffer[pos + 4]
    if buffer[pos + 7] != _inv_xor(buffer[pos : pos + 7]) or length > MAX_DATA:
        return "resync", 0
    total = HEADER_LEN + (length + 1 if length else 0)
    if end - pos < total:
        return "partial", 0
    if length and buffer[pos + total - 1] != _inv_xor(buffer[pos + HEADER_LEN : pos + total - 1]):
        return "bad", 0
    return "frame", total


def split(buffer: bytes | bytearray) -> Split:
    """Whole frames at the front of ``buffer``; see ``drivers.framing`` for the contract."""
    return split_stream(buffer, bytes((SOF,)), _at)


def parse(frame_bytes: bytes) -> tuple[int, int, bytes]:
    """``(type, id, data)`` of one whole frame, verified."""
    b = bytes(frame_bytes)
    if len(b) < HEADER_LEN or b[0] != SOF:
        raise PayloadError("bad_frame", f"not a TinyFrame frame: {b[:16].hex(' ')}")
    if b[7] != _inv_xor(b[:7]):
        raise PayloadError("bad_checksum", f"header checksum {b[7]:02x}, expected {_inv_xor(b[:7]):02x}")
    length = (b[3] << 8) | b[4]
    if length > MAX_DATA or len(b) != HEADER_LEN + (length + 1 if length else 0):
        raise PayloadError("bad_length", f"LEN {length} does not match a {len(b)}-byte frame")
    data = b[HEADER_LEN : HEADER_LEN + length]
    if length and b[-1] != _inv_xor(data):
        raise PayloadError("bad_checksum", f"data checksum {b[-1]:02x}, expected {_inv_xor(data):02x}")
    return (b[5] << 8) | b[6], (b[1] << 8) | b[2], data


def decode(frame_bytes: bytes) -> list[Observation]:
    msg_type, _, data = parse(frame_bytes)
    if msg_type in (FALL, PRESENCE):
        if len(data) != 1:
            raise PayloadError("bad_length", f"type {msg_type:04x} carries {len(data)} bytes, expected 1")
        if data[0] > 1:
            raise PayloadError("bad_value", f"type {msg_type:04x} value {data[0]:02x}, expected 00 or 01")
        if msg_type == PRESENCE:
            return [Observation(Kind.PRESENCE, {"present": bool(data[0])})]
        return [Observation(Kind.FALL_DETECTED if data[0] else Kind.FALL_CLEARED)]
    if msg_type == GET_PARAMETERS:
        if not data:
            return []  # the host's own query echoed back
        if len(data) != PARAMETERS.size:
            raise PayloadError("bad_length", f"parameters reply of {len(data)} bytes, expected {PARAMETERS.size}")
        height, threshold, sensitivity, *_area = PARAMETERS.unpack(data)
        if not (math.isfinite(height) and math.isfinite(threshold)):
            raise PayloadError("bad_value", f"parameters reply with height {height} threshold {threshold}")
        values = {"install_height": height, "fall_threshold": threshold, "sensitivity": sensitivity}
        return [Observation(Kind.HEARTBEAT, values)]
    if msg_type in _IGNORED:
        return []
    raise PayloadError("unknown_code", f"unknown message type {msg_type:04x}")


def _f32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except (OverflowError, struct.error) as exc:
        raise PayloadError("not_encodable", f"{value!r} is not a float32") from exc


def _is_f32(value: float) -> bool:
    return math.isfinite(value) and float(struct.unpack("<f", _f32(value))[0]) == value


def encode(observation: Observation, frame_id: int = 0) -> bytes:
    """The frame the radar sends for ``observation``; ``decode(encode(o)) == [o]``.

    A heartbeat is the reply to get-parameters: its values must be float32-exact, as a radar's
    are (``struct.unpack("<f", struct.pack("<f", x))``)."""
    o = observation
    v = dict(o.values)
    if o.device_time is not None:
        raise PayloadError("not_encodable", "TinyFrame reports carry no time")
    if o.kind in (Kind.FALL_DETECTED, Kind.FALL_CLEARED) and not v:
        return frame(FALL, bytes((o.kind == Kind.FALL_DETECTED,)), frame_id)
    if o.kind == Kind.PRESENCE and set(v) == {"present"} and isinstance(v["present"], bool):
        return frame(PRESENCE, bytes((v["present"],)), frame_id)
    if o.kind == Kind.HEARTBEAT and set(v) == set(SETTINGS):
        h, t, s = v["install_height"], v["fall_threshold"], v["sensitivity"]
        exact = isinstance(h, float) and isinstance(t, float) and _is_f32(h) and _is_f32(t)
        if exact and isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 0xFFFFFFFF:
            return frame(GET_PARAMETERS, PARAMETERS.pack(h, t, s, 0.0, 0.0, 0.0, 0.0), frame_id)
    raise PayloadError("not_encodable", f"no TinyFrame report says {o.kind.value} {v!r}")


# ------------------------------------------------------------------ host → radar commands


def set_install_height(metres: float, frame_id: int = 0x8000) -> bytes:
    _check_range("install_height", metres, HEIGHT_RANGE)
    return frame(SET_HEIGHT, _f32(metres), frame_id)


def set_fall_threshold(metres: float, frame_id: int = 0x8000) -> bytes:
    _check_range("fall_threshold", metres, THRESHOLD_RANGE)
    return frame(SET_THRESHOLD, _f32(metres), frame_id)


def set_sensitivity(level: int, frame_id: int = 0x8000) -> bytes:
    _check_range("sensitivity", level, SENSITIVITY_RANGE)
    return frame(SET_SENSITIVITY, struct.pack("<I", int(level)), frame_id)


def get_parameters(frame_id: int = 0x8000) -> bytes:
    """``01 80 00 00 00 0E 06 76`` with the host's first id; the radar answers with ``0E06``."""
    return frame(GET_PARAMETERS, b"", frame_id)


def factory_reset(frame_id: int = 0x8000) -> bytes:
    return frame(FACTORY_RESET, b"", frame_id)


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    if isinstance(value, bool) or not (bounds[0] <= value <= bounds[1]):
        raise PayloadError("not_encodable", f"{name} {value!r} outside {bounds[0]}–{bounds[1]}")


def keepalive() -> bytes | None:
    """The radar has no heartbeat: asking for its parameters proves it is alive."""
    return get_parameters(0x8000)


def startup_commands(settings: Mapping[str, float]) -> Sequence[bytes]:
    """What the driver sends after opening the port: the configured settings, in the order
    height, threshold, sensitivity, then get-parameters so the radar's answer confirms them
    (and proves the line works both ways). Host ids count up from 0x8000."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise PayloadError("not_encodable", f"unknown MR60FDA2 settings {sorted(unknown)}")
    out: list[bytes] = []
    if "install_height" in settings:
        out.append(set_install_height(settings["install_height"], 0x8000 + len(out)))
    if "fall_threshold" in settings:
        out.append(set_fall_threshold(settings["fall_threshold"], 0x8000 + len(out)))
    if "sensitivity" in settings:
        out.append(set_sensitivity(int(settings["sensitivity"]), 0x8000 + len(out)))
    out.append(get_parameters(0x8000 + len(out)))
    return out
