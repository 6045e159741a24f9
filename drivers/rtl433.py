"""rtl_433 ``…/events`` JSON: 315/345/433 MHz security sensors received by an SDR.

rtl_433 publishes one JSON object per decoded transmission on ``rtl_433/<host>/events``
(PROTOCOLS.md §3): ``time``, ``model`` ("Maker-Model"), ``id`` and, per decoder, ``channel``,
``subtype``, ``cmd``, ``battery_ok`` … Integers are printed in decimal whatever the decoder's
display format, so ``id`` 0x1e240 arrives as ``123456``; a few decoders (Interlogix, Visonic)
print the id as a hex *string*. A device is keyed by ``device_key(msg)`` = (model, id, channel).

The runtime calls ``parse`` → ``device_key`` (look the device up; most messages on a busy band
are a neighbour's weather station) → ``decode`` with that device's code table.

Three kinds of model, declared as data in ``MODELS``:

* **code** models (EV1527/PT2262 style: Kerui, Chuango, Generic-Remote): each transmission
  carries a small event code (``cmd`` / ``cmd_id``) whose meaning is vendor-specific. A table
  maps the code to a kind; the model may have built-in entries, the device's ``codes`` override
  them key by key. A code with no entry is ``PayloadError("unknown_code")`` — an unread button
  on an SOS pendant must be loud, never silent. ``values[<code field>]`` keeps the code.
* **flag** models (Honeywell, Interlogix, DSC, Visonic): each message repeats the sensor's
  state in fields such as ``contact_open``, ``tamper``, ``battery_ok``, ``switch1``. The table
  maps a field to the kind for its *active* state (``1``, ``"open"``); the idle state gives the
  counterpart (``door_closed``, ``smoke_clear``, ``tamper_clear`` …) or nothing when there is
  none (``battery_ok: 1``, an SOS). A flag whose meaning depends on what the sensor is
  (Honeywell ``alarm``) must be given one in the device's table when it is active.
* **implicit** models (Smoke-GS558): the transmission itself is the event.

Order: primary states, then ``BATTERY_LOW``, then ``TAMPER``/``TAMPER_CLEAR``. A message that
maps to nothing (a supervision message from a sensor whose switches we were not told about)
decodes to ``[HEARTBEAT]``: the device is alive.

``time`` becomes ``device_time``. rtl_433 prints it in the *local time of the host running it*
("2026-05-01 08:00:00", no offset), so naive times are read in ``tz`` — by default
Asia/Shanghai (UTC+8, no DST), where the product is deployed; pass the receiver's zone if it
runs elsewhere, or run rtl_433 with ``-M time:iso:utc`` / ``-M time:unix``, both of which are
read exactly. ISO-8601 with an offset and epoch seconds (number or digit string) are accepted.
A time that is unreadable or outside 2000–2100 is ignored: ``device_time`` is None and the
runtime uses the receive time (an unset receiver clock must not cost us an alarm).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone, tzinfo
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drivers.native import (
    dump_json,
    from_micros,
    in_window,
    is_text,
    load_json,
    micros,
    moment_of,
    seconds_in_window,
    snippet,
    to_micros,
)
from gateway.errors import PayloadError
from gateway.models import Family, Kind, Observation, Scalar

__all__ = [
    "DEFAULT_TZ",
    "MODELS",
    "Flag",
    "RtlModel",
    "decode",
    "device_key",
    "encode",
    "normalise_codes",
    "parse",
]


def _default_tz() -> tzinfo:
    try:
        return ZoneInfo("Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError, OSError):  # no tzdata on a minimal image
        return timezone(timedelta(hours=8), "CST")  # China has had no DST since 1991


DEFAULT_TZ: tzinfo = _default_tz()

IGNORE = ""  # a table value: the code or field is known and means nothing
_EPOCH_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")  # rtl_433 -M time:unix[:usec]
_HEX_KEY = re.compile(r"0[xX][0-9a-fA-F]{1,8}")
_DEC_KEY = re.compile(r"[0-9]{1,10}")

# The idle counterpart of an active kind, both ways (a table may name either side). Falls have
# none: a flag mapped to a fall kind is idle in every supervision transmission, which says the
# input is at rest, not that a fallen person got up (drivers/README.md, "Fall states"). An idle
# fall flag therefore says nothing; only a code or flag the table maps to ``fall_cleared`` clears.
_COUNTERPART: dict[Kind, Kind] = {
    Kind.DOOR_OPENED: Kind.DOOR_CLOSED,
    Kind.DOOR_CLOSED: Kind.DOOR_OPENED,
    Kind.SMOKE_ALARM: Kind.SMOKE_CLEAR,
    Kind.SMOKE_CLEAR: Kind.SMOKE_ALARM,
    Kind.GAS_ALARM: Kind.GAS_CLEAR,
    Kind.GAS_CLEAR: Kind.GAS_ALARM,
    Kind.WATER_LEAK: Kind.WATER_CLEAR,
    Kind.WATER_CLEAR: Kind.WATER_LEAK,
    Kind.TAMPER: Kind.TAMPER_CLEAR,
    Kind.TAMPER_CLEAR: Kind.TAMPER,
}
# Kinds whose state lives in a value rather than in a second kind.
_STATE_VALUE = {Kind.MOTION: "moving", Kind.PRESENCE: "present", Kind.RESIDENCE: "present"}
_RANK = {Kind.BATTERY_LOW: 1, Kind.TAMPER: 2, Kind.TAMPER_CLEAR: 2}


@dataclass(frozen=True, slots=True)
class Flag:
    """A level field: ``on`` is its active wire value, ``off`` its idle one."""

    name: str
    on: int | str
    off: int | str
    legacy: bool = False  # read from older rtl_433, never printed by encode


@dataclass(frozen=True, slots=True)
class RtlModel:
    """An rtl_433 model (the ``model`` string) as data.

    ``table`` maps a code (decimal string) or a flag field to a ``Kind`` value; ``subtypes``
    adds entries by the message's ``subtype`` (Interlogix). ``must_map`` flags are an error
    when active and unmapped. ``wire`` adds the fields a real decoder prints with a code, for
    ``encode``. ``channel_field`` is the field that tells apart devices sharing an id.
    """

    family: Family
    description: str
    code_field: str | None = None
    flags: tuple[Flag, ...] = ()
    table: Mapping[str, str] = field(default_factory=dict)
    subtypes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    must_map: Collection[str] = frozenset()
    implicit: Kind | None = None
    id_text: bool = False
    channel_field: str = "channel"
    wire: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    needs_codes: bool = False

    @property
    def emits(self) -> frozenset[Kind]:
        """Every kind the model decodes to with its built-in tables (a device table adds more)."""
        # A flag message that maps to nothing, or a GS558 pairing, is a heartbeat; a code
        # model says "heartbeat" only when its table maps a code to it (or to "").
        kinds: set[Kind] = set() if self.code_field else {Kind.HEARTBEAT}
        for table in (self.table, *self.subtypes.values()):
            for value in table.values():
                if not value:
                    kinds |= {Kind.HEARTBEAT} if self.code_field else set()
                    continue
                kind = Kind(value)
                kinds.add(kind)
                if self.flags and kind in _COUNTERPART:
                    kinds.add(_COUNTERPART[kind])
        if self.implicit is not None:
            kinds.add(self.implicit)
        return frozenset(kinds)


# --------------------------------------------------------------------------------------------
# Models. Facts from the rtl_433 decoders (PROTOCOLS.md §3); [I] marks an inference.

_BATTERY_OK = Flag("battery_ok", 0, 1)  # 1 = OK, 0 = LOW
_TAMPER = Flag("tamper", 1, 0)
_SUPERVISION = {"tamper": "tamper", "battery_ok": "battery_low"}

# Kerui (kerui.c): 20-bit id + 4-bit cmd. The decoder reports only these six codes, each with
# a named field; cmd alone is authoritative (older rtl_433 prints only cmd and state).
_KERUI = {
    "10": "motion",
    "14": "door_opened",
    "7": "door_closed",
    "11": "tamper",
    "5": "water_leak",
    "15": "battery_low",
}
_KERUI_WIRE: dict[int, dict[str, Any]] = {
    0xA: {"motion": 1, "state": "motion"},
    0xE: {"opened": 1, "state": "open"},
    0x7: {"opened": 0, "state": "close"},
    0xB: {"tamper": 1, "state": "tamper"},
    0x5: {"water": 1, "state": "water"},
    0xF: {"battery_ok": 0, "state": "battery"},
}
# Chuango (chuango.c): cmd is text, cmd_id the 4-bit code. Zone codes are each device's default
# zone [I]: "Normal Zone" (7) is the DWC-100 door contact, "Home Mode Zone" (6) the PIR-900;
# "24H Zone" (11) is both the SMK-500 smoke and the WI-200 water sensor, so it needs a table.
# Code 0 is "Test" (chuango.c): the sensor's own test transmission. Which Chuango sensors send it
# is not documented; whichever does, it is a test, never an alarm (a device table may say
# smoke_test for an SMK-500).
_CHUANGO = {
    "0": "self_test",
    "2": "sos_pressed",
    "3": "tamper",
    "13": "battery_low",
    "7": "door_opened",
    "6": "motion",
}
_CHUANGO_NAMES = [
    "Test", "Disarm", "Alarm", "Tamper", "Home Mode", "On", "Home Mode Zone", "Normal Zone",
    "Arm", "?", "Single Delay Zone", "24H Zone", "?", "Low Battery", "?", "?",
]  # fmt: skip
_CHUANGO_WIRE = {code: {"cmd": name} for code, name in enumerate(_CHUANGO_NAMES)}
# Honeywell 5800 (honeywell.c): one event byte, every bit printed. What "alarm" means depends
# on the sensor (door, smoke, panic), so a device must say it in its table when it fires.
_HONEYWELL_FLAGS = (
    Flag("contact_open", 1, 0),
    Flag("reed_open", 1, 0),
    Flag("alarm", 1, 0),
    _TAMPER,
    _BATTERY_OK,
    Flag("heartbeat", 1, 0),
)
_HONEYWELL = {"contact_open": "door_opened", **_SUPERVISION}
# Interlogix (interlogix.c): switch1..5 are the latches F1..F5, "open"/"closed". F3 is the
# cover latch of contact sensors [S]; switch1 as the reed and as the PIR trigger is [I]. Which
# switch a smoke, heat or panic device uses is not documented (rtl_433 #1856, PR #3163): they
# need a device table, and until then they only report supervision (HEARTBEAT).
_INTERLOGIX_FLAGS = (
    *(Flag(f"switch{n}", "open", "closed") for n in range(1, 6)),
    _BATTERY_OK,
    Flag("battery", "low", "ok", legacy=True),  # before battery_ok existed
)
_INTERLOGIX = {"battery_ok": "battery_low", "battery": "battery_low"}
_INTERLOGIX_SUBTYPES: dict[str, dict[str, str]] = {
    "contact": {"switch1": "door_opened", "switch3": "tamper"},
    "motion": {"switch1": "motion"},
    **{subtype: {} for subtype in ("smoke", "heat", "panic", "keyfob", "glass", "freeze", "unknown")},
}
# DSC (dsc.c): "closed" is 1 when the magnet is near.
_DSC_FLAGS = (Flag("closed", 0, 1), _TAMPER, _BATTERY_OK)
_DSC = {"closed": "door_opened", **_SUPERVISION}
# Visonic PowerCode (visonic_powercode.c), tested with an MCT-302 contact: alarm = magnet away.
_VISONIC_FLAGS = (Flag("alarm", 1, 0), _TAMPER, _BATTERY_OK, Flag("supervised", 1, 0), Flag("restore", 1, 0))
_VISONIC = {"alarm": "door_opened", **_SUPERVISION}


def _codes(family: Family, about: str, code_field: str, table: dict[str, str], **kw: Any) -> RtlModel:
    return RtlModel(family, about, code_field=code_field, table=table, needs_codes=not table, **kw)


def _flags(family: Family, about: str, flags: tuple[Flag, ...], table: dict[str, str], **kw: Any) -> RtlModel:
    return RtlModel(family, about, flags=flags, table=table, **kw)


MODELS: dict[str, RtlModel] = {
    "Kerui-Security": _codes(Family.DOOR, "Kerui PIR / door / water (EV1527)", "cmd", _KERUI, wire=_KERUI_WIRE),
    "Chuango-Security": _codes(Family.DOOR, "Chuango door, PIR, smoke, panic", "cmd_id", _CHUANGO, wire=_CHUANGO_WIRE),
    "Generic-Remote": _codes(Family.SOS, "PT2262 / EV1527 fixed code: device table only", "cmd", {}),
    "Honeywell-Security": _flags(
        Family.DOOR, "Honeywell 5800 / 2GIG", _HONEYWELL_FLAGS, _HONEYWELL, must_map=frozenset({"alarm"})
    ),
    "Interlogix-Security": _flags(
        Family.DOOR,
        "GE / Interlogix",
        _INTERLOGIX_FLAGS,
        _INTERLOGIX,
        subtypes=_INTERLOGIX_SUBTYPES,
        id_text=True,
    ),
    "DSC-Security": _flags(Family.DOOR, "DSC door contact", _DSC_FLAGS, _DSC),
    "Visonic-Powercode": _flags(Family.DOOR, "Visonic PowerCode (MCT-302)", _VISONIC_FLAGS, _VISONIC, id_text=True),
    "Smoke-GS558": RtlModel(
        Family.SMOKE, "Siterwell GS558 smoke / heat", implicit=Kind.SMOKE_ALARM, channel_field="unit"
    ),
}


# --------------------------------------------------------------------------------------------
# Parsing and identity


def _fail(reason: str, model: object, text: str) -> PayloadError:
    return PayloadError(reason, f"rtl_433 {model}: {text}")


def parse(payload: bytes) -> Mapping[str, Any]:
    """One ``…/events`` payload: a JSON object with a string ``model``."""
    msg = load_json(payload, "rtl_433")
    if not isinstance(msg, dict):
        raise PayloadError("not_object", f"rtl_433: expected a JSON object, got {snippet(msg)}")
    _model_name(msg)
    return msg


def _model_name(msg: Mapping[str, Any]) -> str:
    if not isinstance(msg, Mapping):
        raise PayloadError("not_object", f"rtl_433: expected a JSON object, got {snippet(msg)}")
    model = msg.get("model")
    if model is None:
        raise PayloadError("missing_field", f"rtl_433: no model in {snippet(msg)}")
    if not is_text(model) or not model:
        raise PayloadError("wrong_type", f"rtl_433: model must be a non-empty string, got {snippet(model)}")
    return str(model)


def device_key(msg: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(model, id, channel)``; ids as rtl_433 prints them (decimal, or the decoder's string).

    For Smoke-GS558 the third part is the ``unit``: interconnected detectors share a learned
    group id and differ only by unit.
    """
    model = _model_name(msg)
    spec = MODELS.get(model)
    channel_field = spec.channel_field if spec is not None else "channel"
    return model, _key_part(msg, "id", model), _key_part(msg, channel_field, model)


def _key_part(msg: Mapping[str, Any], name: str, model: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if is_text(value) and len(value) <= 64:
        return str(value)
    raise _fail("wrong_type", model, f"{name} must be an integer or a short string, got {snippet(value)}")


def _model(model: str) -> RtlModel:
    spec = MODELS.get(model)
    if spec is None:
        raise PayloadError("unknown_model", f"rtl_433: no model {snippet(model)}; known: {sorted(MODELS)}")
    return spec


def normalise_codes(model: str, codes: Mapping[str, str] | None) -> dict[str, str]:
    """A device's table with its keys normalised: ``"0x0e"``, ``"0X0E"`` and ``"014"`` all become ``"14"``.

    Keys are codes (decimal or ``0x`` hex) for code models and field names for flag models;
    values are ``Kind`` values, or ``""`` for "known, means nothing". Config validation can
    call this at start-up; a bad table is ``PayloadError`` (``unknown_kind``, ``bad_value``).
    """
    spec = _model(model)
    if codes is None:
        return {}
    if not isinstance(codes, Mapping):
        raise _fail("wrong_type", model, "the code table must be a mapping")
    flag_names = {flag.name for flag in spec.flags}
    table: dict[str, str] = {}
    for key, kind in codes.items():
        if not isinstance(kind, str) or (kind != IGNORE and kind not in Kind._value2member_map_):
            raise _fail("unknown_kind", model, f"code table maps {snippet(key)} to {snippet(kind)}, not a kind")
        if not isinstance(key, str):
            raise _fail("bad_value", model, f"code table key {snippet(key)} must be a string")
        if spec.code_field is not None and _HEX_KEY.fullmatch(key.strip()):
            key = str(int(key.strip(), 16))
        elif spec.code_field is not None and _DEC_KEY.fullmatch(key.strip()):
            key = str(int(key.strip()))
        elif key not in flag_names:
            raise _fail("bad_value", model, f"code table key {snippet(key)} is neither a code nor a field of it")
        table[key] = kind
    return table


def _table(spec: RtlModel, msg: Mapping[str, Any], codes: Mapping[str, str] | None) -> dict[str, str]:
    """Built-in entries, then the subtype's, then the device's: later ones win key by key."""
    model = _model_name(msg)
    table = dict(spec.table)
    if spec.subtypes:
        subtype = msg.get("subtype")
        if subtype is not None and not isinstance(subtype, str):
            raise _fail("wrong_type", model, f"subtype must be a string, got {snippet(subtype)}")
        table.update(spec.subtypes.get(subtype or "", {}))
    table.update(normalise_codes(model, codes))
    return table


# --------------------------------------------------------------------------------------------
# Decoding


def decode(
    msg: Mapping[str, Any], codes: Mapping[str, str] | None = None, tz: tzinfo | None = None
) -> list[Observation]:
    """Observations from one parsed ``…/events`` message, with the device's code table."""
    model = _model_name(msg)
    spec = _model(model)
    table = _table(spec, msg, codes)
    if spec.code_field is not None:
        found = [_decode_code(spec, model, msg, table)]
    elif spec.implicit is not None:
        found = [_decode_implicit(spec, model, msg)]
    else:
        found = _decode_flags(spec, model, msg, table)
    if not found:
        found = [Observation(Kind.HEARTBEAT)]
    found.sort(key=lambda obs: _RANK.get(obs.kind, 0))  # stable: declared order within a rank
    device_time = _read_time(msg.get("time"), tz or DEFAULT_TZ)
    if device_time is not None:
        found = [replace(obs, device_time=device_time) for obs in found]
    return found


def _decode_code(spec: RtlModel, model: str, msg: Mapping[str, Any], table: Mapping[str, str]) -> Observation:
    assert spec.code_field is not None
    code = _code(msg.get(spec.code_field), spec.code_field, model)
    kind = table.get(str(code))
    if kind is None:
        hint = "this model has no built-in codes: " if spec.needs_codes else ""
        hint += "give it a meaning in the device's code table"
        raise _fail("unknown_code", model, f"{spec.code_field}={code} (0x{code:x}) has no meaning; {hint}")
    kind = kind or Kind.HEARTBEAT
    return Observation(Kind(kind), {spec.code_field: code, **_state_values(Kind(kind), True)})


def _code(value: object, name: str, model: str) -> int:
    if value is None:
        raise _fail("missing_field", model, f"no {name}")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < 2**32:
            return value
        raise _fail("bad_value", model, f"{name}={snippet(value)} out of range")
    if isinstance(value, str) and _HEX_KEY.fullmatch(value):  # a flex decoder may print hex
        return int(value, 16)
    if isinstance(value, str) and _DEC_KEY.fullmatch(value):
        return int(value)
    raise _fail("wrong_type", model, f"{name} must be an integer, got {snippet(value)}")


def _decode_implicit(spec: RtlModel, model: str, msg: Mapping[str, Any]) -> Observation:
    assert spec.implicit is not None
    learn = msg.get("learn")
    if learn is not None and (not isinstance(learn, int) or learn not in (0, 1)):
        raise _fail("wrong_type", model, f"learn must be 0 or 1, got {snippet(learn)}")
    # Pairing traffic is a sign of life, not an alarm.
    return Observation(Kind.HEARTBEAT if learn else spec.implicit)


def _decode_flags(spec: RtlModel, model: str, msg: Mapping[str, Any], table: Mapping[str, str]) -> list[Observation]:
    found = []
    for flag in spec.flags:
        active = _flag_state(flag, msg.get(flag.name), model)
        if active is None:
            continue
        meaning = table.get(flag.name)
        if meaning is None:
            if active and flag.name in spec.must_map:
                raise _fail(
                    "unknown_code",
                    model,
                    f"{flag.name} is active but has no meaning for this device: give it one in its table",
                )
            continue
        if meaning == IGNORE:
            continue
        obs = _flag_observation(Kind(meaning), active)
        if obs is not None:
            found.append(obs)
    return found


def _flag_state(flag: Flag, value: object, model: str) -> bool | None:
    if value is None:
        return None
    if isinstance(flag.on, str):
        if not isinstance(value, str):
            raise _fail("wrong_type", model, f"{flag.name} must be a string, got {snippet(value)}")
        value = value.lower()  # older rtl_433 printed OPEN/CLOSED, LOW/OK
    elif not isinstance(value, int):  # bool included: a decoder may turn 0/1 into false/true
        raise _fail("wrong_type", model, f"{flag.name} must be 0 or 1, got {snippet(value)}")
    if value == flag.on:
        return True
    if value == flag.off:
        return False
    raise _fail("bad_value", model, f"{flag.name}={snippet(value)}, expected {flag.on!r} or {flag.off!r}")


def _state_values(kind: Kind, active: bool) -> dict[str, Scalar]:
    name = _STATE_VALUE.get(kind)
    return {name: active} if name else {}


def _flag_observation(kind: Kind, active: bool) -> Observation | None:
    if active:
        return Observation(kind, _state_values(kind, True))
    if kind in _STATE_VALUE:
        return Observation(kind, _state_values(kind, False))
    idle = _COUNTERPART.get(kind)
    return None if idle is None else Observation(idle)


def _read_time(value: object, tz: tzinfo) -> float | None:
    """rtl_433's ``time`` as epoch seconds (µs resolution), or None when it cannot be trusted."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            count = to_micros(value)
        elif isinstance(value, str) and len(value) <= 40:
            if _EPOCH_TEXT.fullmatch(value):
                count = round(Fraction(value) * 1_000_000)
            else:
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=tz)  # the receiver's local time
                count = micros(moment)
        else:
            return None
    except (ValueError, OverflowError, ArithmeticError):
        return None
    return seconds_in_window(count)


# --------------------------------------------------------------------------------------------
# Encoding (for simulators)


def encode(
    model: str,
    device_id: str,
    observations: Sequence[Observation],
    channel: str = "",
    codes: Mapping[str, str] | None = None,
    time_text: str | None = None,
    *,
    tz: tzinfo | None = None,
) -> bytes:
    """The ``…/events`` JSON rtl_433 would print for this device, for simulators.

    ``time`` is ``time_text`` verbatim when given, else ``device_time`` in rtl_433's default
    local format in ``tz``. The result always decodes back to the same kinds (values may gain
    the code, e.g. ``{"cmd": 14}``); a list no single transmission can carry is
    ``PayloadError("not_encodable")``.
    """
    spec = _model(model)
    zone = tz or DEFAULT_TZ
    pending = list(observations)
    times = {obs.device_time for obs in pending}
    if len(times) > 1:
        raise _fail("not_encodable", model, "observations of one message share one time")
    device_time = times.pop() if times else None
    head: dict[str, Any] = {}
    if time_text is not None:
        head["time"] = time_text
    elif device_time is not None:
        head["time"] = _format_time(device_time, zone, model)
    head["model"] = model
    head.update(_identity(spec, model, device_id, channel))
    candidates: list[str | None] = [*spec.subtypes, ""] if spec.subtypes else [None]
    # Interlogix: the subtype decides the built-in table, and observations do not carry it.
    # Try the subtypes whose table covers them first, then the ones without a table.
    candidates.sort(key=lambda subtype: (not _suits(spec, subtype, pending), len(spec.subtypes.get(subtype or "", {}))))
    for subtype in candidates:
        msg = dict(head)
        if subtype:  # rtl_433 prints it right after the model
            msg = {**{k: v for k, v in head.items() if k in ("time", "model")}, "subtype": subtype, **head}
        try:
            msg.update(_body(spec, model, msg, pending, codes))
        except PayloadError:
            continue
        # Never publish what the gateway would read differently: the simulator and the driver
        # share this codec so they cannot drift apart.
        if _same(decode(msg, codes, zone), pending):
            return dump_json(msg)
    raise _fail("not_encodable", model, f"no message decodes to {sorted(str(obs.kind) for obs in pending)}")


def _identity(spec: RtlModel, model: str, device_id: str, channel: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if spec.id_text:
        fields["id"] = device_id
    elif _DEC_KEY.fullmatch(device_id):
        fields["id"] = int(device_id)
    else:
        raise _fail("not_encodable", model, f"id {snippet(device_id)} must be decimal digits")
    if channel:
        fields[spec.channel_field] = int(channel) if _DEC_KEY.fullmatch(channel) else channel
    return fields


def _suits(spec: RtlModel, subtype: str | None, pending: Sequence[Observation]) -> bool:
    """Whether a subtype's own table covers the observations' kinds (tried first)."""
    if subtype is None:
        return True
    kinds = {Kind(kind) for kind in spec.subtypes.get(subtype, {}).values()}
    kinds |= {_COUNTERPART[kind] for kind in kinds if kind in _COUNTERPART}
    return any(obs.kind in kinds for obs in pending)


def _body(
    spec: RtlModel,
    model: str,
    msg: Mapping[str, Any],
    pending: Sequence[Observation],
    codes: Mapping[str, str] | None,
) -> dict[str, Any]:
    table = _table(spec, msg, codes)
    if spec.code_field is not None:
        return _encode_code(spec, model, pending, table)
    if spec.implicit is not None:
        if len(pending) != 1 or pending[0].kind not in (spec.implicit, Kind.HEARTBEAT):
            raise _fail("not_encodable", model, f"a transmission is one {spec.implicit} or one heartbeat")
        return {"learn": int(pending[0].kind == Kind.HEARTBEAT)}
    return _encode_flags(spec, pending, table)


def _encode_code(
    spec: RtlModel, model: str, pending: Sequence[Observation], table: Mapping[str, str]
) -> dict[str, Any]:
    assert spec.code_field is not None
    if len(pending) != 1:
        raise _fail("not_encodable", model, f"a transmission carries one code, got {len(pending)} observations")
    obs = pending[0]
    wanted = {str(obs.kind)} | ({IGNORE} if obs.kind == Kind.HEARTBEAT else set())
    code = obs.values.get(spec.code_field)
    if code is None:
        code = next((int(key) for key, kind in table.items() if kind in wanted), None)
    if not isinstance(code, int) or isinstance(code, bool) or table.get(str(code)) not in wanted:
        raise _fail("not_encodable", model, f"no code means {obs.kind}")
    return {spec.code_field: code, **spec.wire.get(code, {})}


def _encode_flags(spec: RtlModel, pending: Sequence[Observation], table: Mapping[str, str]) -> dict[str, Any]:
    # decode emits one observation per flag, in flag order within each rank; so walk the flags
    # and give each the next observation of its rank when it fits. Taking the earliest fit is
    # never worse (a flag can always stay silent), and keeps the decoded order.
    queues: dict[int, list[Observation]] = {}
    for obs in pending:
        queues.setdefault(_RANK.get(obs.kind, 0), []).append(obs)
    fields: dict[str, Any] = {}
    for flag in spec.flags:
        if flag.legacy:
            continue
        meaning = table.get(flag.name)
        if not meaning:  # unmapped or ignored: print it idle, as a quiet sensor does
            fields[flag.name] = flag.off
            continue
        kind = Kind(meaning)
        active, idle = _flag_observation(kind, True), _flag_observation(kind, False)
        queue = queues.get(_RANK.get(kind, 0), [])
        if queue and active is not None and _matches(queue[0], active):
            fields[flag.name] = flag.on
            queue.pop(0)
        elif queue and idle is not None and _matches(queue[0], idle):
            fields[flag.name] = flag.off
            queue.pop(0)
        elif idle is None:
            fields[flag.name] = flag.off  # idle and silent: safe to print
    return fields


def _matches(given: Observation, decoded: Observation) -> bool:
    """Same kind, and every value the caller gave is one the decoder reports."""
    return given.kind == decoded.kind and all(decoded.values.get(k) == v for k, v in given.values.items())


def _same(decoded: Sequence[Observation], given: Sequence[Observation]) -> bool:
    if len(decoded) != len(given):
        return False
    left = list(given)
    for obs in decoded:
        match = next((candidate for candidate in left if _matches(candidate, obs)), None)
        if match is None:
            return False
        left.remove(match)
    return True


def _format_time(seconds: float, tz: tzinfo, model: str) -> str:
    """rtl_433's default ``YYYY-MM-DD HH:MM:SS[.ffffff]`` in ``tz``; ISO with offset if ambiguous."""
    if not in_window(seconds):
        raise _fail("not_encodable", model, f"device_time {seconds} outside 2000–2100")
    count = to_micros(seconds)
    local = moment_of(count).astimezone(tz)
    text = f"{local:%Y-%m-%d %H:%M:%S}" + (f".{local.microsecond:06d}" if local.microsecond else "")
    if _read_time(text, tz) != from_micros(count):  # a repeated hour at a DST change
        text = local.isoformat()
    return text
