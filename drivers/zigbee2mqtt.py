"""zigbee2mqtt (Z2M) payloads: device state messages and availability.

Z2M publishes ``zigbee2mqtt/<friendly_name>`` — always one JSON object holding the device's
whole cached state, so a battery report repeats ``"smoke": false`` and a state is *level*, not
an edge: the consumer, not this codec, notices transitions. The one exception is ``action``
(buttons): it is transient, so only a message that *contains* a non-empty ``action`` yields an
SOS event, and a retained or repeated state never presses the button again. Availability is
``zigbee2mqtt/<friendly_name>/availability``: ``online``/``offline`` in Z2M 1.x (legacy) and
``{"state": "online"}`` since 2.0; both are accepted. Facts: PROTOCOLS.md §2.

How a state message becomes observations, in this order:

1. the primary state of the model (smoke, contact, fall status, action …), then presence;
   a smoke detector whose ``test`` is true is being tested: ``SMOKE_TEST``, never an alarm
   (``Smoke`` below);
2. ``BATTERY`` with ``values["battery"]`` (percent, as published: 96.5 stays a float) and
   ``values["voltage"]`` (mV) when either is present; ``BATTERY_LOW`` when ``battery_low`` is
   true;
3. ``TAMPER`` / ``TAMPER_CLEAR`` for models that expose ``tamper``.

``linkquality`` (0–255, LQI) goes into the values of the *first* observation of the message —
the primary state when there is one, else ``BATTERY`` — so each message reports it once, and
a marginal radio link is visible right on the alarm it delayed. A message with nothing we
understand (``{"linkquality": 92}``) decodes to ``[]``.

``last_seen`` (Z2M ``advanced.last_seen``: ``ISO_8601`` such as ``2026-05-01T00:00:00.000Z``,
``ISO_8601_local`` with an offset, or ``epoch`` milliseconds) becomes ``device_time`` of every
observation. It is the time Z2M last heard the device, which is what we want: a retained state
replayed after a restart keeps its old time. A ``last_seen`` that is absent, naive (no offset),
unreadable or outside 2000–2100 is ignored (``device_time`` None): a timestamp is metadata and
must never cost us a smoke alarm.

``null`` values are treated as absent (Z2M publishes ``"battery": null`` before the first
report). Unknown fields are ignored (Z2M adds ``last_seen``, ``temperature``, ``enrolled`` …).
A known field of the wrong JSON type is ``PayloadError("wrong_type")`` (an integer beyond 64
bits is ``bad_value``); an enum value the model does not document is ``unknown_state``
(``unknown_action`` for buttons). Devices are declared as
data: each model is a tuple of small *extends* that bundle decode and encode for one field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from typing import Any, Protocol

from drivers.native import (
    INT64,
    dump_json,
    in_window,
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
    "HS1EB_ACTIONS",
    "LINKQUALITY",
    "MODELS",
    "Z2MModel",
    "action_table",
    "decode_availability",
    "decode_state",
    "encode_availability",
    "encode_state",
]

LINKQUALITY = "linkquality"
# What an extend decoded: a kind and the values that came with it.
Found = tuple[Kind, dict[str, Scalar]]
_SUPERVISION = frozenset({Kind.BATTERY, Kind.BATTERY_LOW, Kind.TAMPER, Kind.TAMPER_CLEAR})


@dataclass(frozen=True, slots=True)
class _Context:
    model: str
    actions: Mapping[str, str]  # the effective action table (device's, else the model's)


class Extend(Protocol):
    """One field (or a few related ones) of a model: decode and encode bundled together."""

    @property
    def kinds(self) -> frozenset[Kind]:
        """Every kind ``decode`` can produce with the model's default tables."""
        ...

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        """What the message says in this extend's fields: each a kind and a dict of its values,
        new for each call (``decode_state`` adds to the first and makes the observations)."""
        ...

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        """Write the fields for the observations this extend owns and remove them from ``pending``."""
        ...


# --------------------------------------------------------------------------------------------
# Reading fields


def _fail(reason: str, model: str, text: str) -> PayloadError:
    return PayloadError(reason, f"zigbee2mqtt {model}: {text}")


def _enum(msg: Mapping[str, Any], name: str, states: Mapping[str, object], ctx: _Context) -> str | None:
    """A text field whose value must be one of ``states``; ``None`` when absent."""
    value: str | None = _get(msg, name, str, ctx)
    if value is not None and value not in states:
        raise _fail("unknown_state", ctx.model, f"{name}={snippet(value)}, expected one of {sorted(states)}")
    return value


def _get(msg: Mapping[str, Any], name: str, expected: type | tuple[type, ...], ctx: _Context) -> Any:
    """The field's value, ``None`` when absent or null; ``wrong_type`` when of another JSON type."""
    value = msg.get(name)
    if value is None:
        return None
    # The common cases first, each what the checks below let through unchanged.
    cls = value.__class__
    if cls is expected:  # a bool or a str as expected
        return value
    if expected is _NUMBER and (cls is float or (cls is int and -INT64 <= value < INT64)):
        return value
    # bool is an int in Python but never a number in JSON
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise _fail("wrong_type", ctx.model, f"{name} must be {_type_name(expected)}, got {snippet(value)}")
    if isinstance(value, int) and not -INT64 <= value < INT64:  # the time-series store holds 64-bit integers
        raise _fail("bad_value", ctx.model, f"{name}={snippet(value)} is out of range")
    return value


def _type_name(expected: type | tuple[type, ...]) -> str:
    if expected is bool:
        return "a boolean"
    return "a string" if expected is str else "a number"


_NUMBER = (int, float)


def _take(pending: list[Observation], kinds: frozenset[Kind], ctx: _Context, owner: str) -> Observation | None:
    """Remove and return the one observation of ``kinds``; two would need one field twice."""
    found = [obs for obs in pending if obs.kind in kinds]
    if not found:
        return None
    if len(found) > 1:
        raise _fail("not_encodable", ctx.model, f"one message carries one {owner}, got {len(found)}")
    pending.remove(found[0])
    return found[0]


def _check_keys(obs: Observation, allowed: frozenset[str], ctx: _Context) -> None:
    extra = set(obs.values) - allowed
    if extra:
        raise _fail("not_encodable", ctx.model, f"{obs.kind} cannot carry values {sorted(map(str, extra))}")


# --------------------------------------------------------------------------------------------
# Extends


@dataclass(frozen=True, slots=True)
class Binary:
    """A boolean field: ``smoke``, ``contact`` (true = closed!), ``tamper``."""

    name: str
    on: Kind  # the kind for JSON true
    off: Kind

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset({self.on, self.off})

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        value = _get(msg, self.name, bool, ctx)
        if value is None:
            return []
        return [(self.on if value else self.off, {})]

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        obs = _take(pending, self.kinds, ctx, self.name)
        if obs is not None:
            _check_keys(obs, frozenset(), ctx)
            out[self.name] = obs.kind == self.on


@dataclass(frozen=True, slots=True)
class Smoke:
    """``smoke`` (bool) and, for IAS smoke detectors, ``test``: the detector's own test signal.

    zigbee-herdsman-converters' ``ias_smoke_alarm_1`` (HS1SA, TS0205) publishes the IAS zone
    status bits: ``smoke`` is bit 0 (alarm 1), ``test`` bit 8, set while the sensor is in test
    mode, i.e. while its test button is held (https://www.zigbee2mqtt.io/devices/HS1SA.html
    exposes it). A detector under test sounds as in a fire, so whether ``smoke`` is also set
    during a test is the firmware's affair [I]: a message with ``test: true`` is
    ``SMOKE_TEST`` whatever ``smoke`` says, and never ``SMOKE_ALARM`` — an installer's test
    press must not call out the household, the staff or the 微型消防站. Z2M repeats the cached
    ``test`` in every message until the next zone status report, so a battery report during
    the test is another ``SMOKE_TEST``: harmless, it raises nothing.
    """

    test: bool = False  # the model publishes ``test``

    @property
    def kinds(self) -> frozenset[Kind]:
        kinds = {Kind.SMOKE_ALARM, Kind.SMOKE_CLEAR}
        return frozenset(kinds | {Kind.SMOKE_TEST} if self.test else kinds)

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        if self.test and _get(msg, "test", bool, ctx):
            return [(Kind.SMOKE_TEST, {})]
        value = _get(msg, "smoke", bool, ctx)
        if value is None:
            return []
        return [(Kind.SMOKE_ALARM if value else Kind.SMOKE_CLEAR, {})]

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        obs = _take(pending, self.kinds, ctx, "smoke")
        if obs is None:
            return
        _check_keys(obs, frozenset(), ctx)
        out["smoke"] = obs.kind != Kind.SMOKE_CLEAR  # a detector under test sounds [I]
        if self.test:
            out["test"] = obs.kind == Kind.SMOKE_TEST


@dataclass(frozen=True, slots=True)
class Choice:
    """A text enum field; ``values[name]`` keeps the raw state, since several map to one kind.

    A state mapped to ``None`` is documented but means nothing to us (HS2FD ``unknown``): it
    yields no observation rather than a guess that could clear an active fall.
    """

    name: str
    states: Mapping[str, Kind | None]

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(kind for kind in self.states.values() if kind is not None)

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        value = _enum(msg, self.name, self.states, ctx)
        if value is None:
            return []
        kind = self.states[value]
        return [] if kind is None else [(kind, {self.name: value})]

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        obs = _take(pending, self.kinds, ctx, self.name)
        if obs is None:
            return
        _check_keys(obs, frozenset({self.name}), ctx)
        out[self.name] = _state_for(self.name, self.states, obs, ctx)


def _state_for(name: str, states: Mapping[str, Kind | None], obs: Observation, ctx: _Context) -> str:
    raw = obs.values.get(name)
    if raw is None:  # a simulator may leave the raw state out: use the first that fits
        raw = next((state for state, kind in states.items() if kind == obs.kind), None)
    if not isinstance(raw, str) or states.get(raw) != obs.kind:
        raise _fail("not_encodable", ctx.model, f"{name}={snippet(raw)} is not {obs.kind}")
    return raw


@dataclass(frozen=True, slots=True)
class Presence:
    """``presence`` / ``occupancy`` (bool) → ``PRESENCE`` with ``values["present"]``.

    Radars that publish both say the same thing twice; the first field listed wins.
    """

    names: tuple[str, ...]

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset({Kind.PRESENCE})

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        for name in self.names:
            value = _get(msg, name, bool, ctx)
            if value is not None:
                return [(Kind.PRESENCE, {"present": value})]
        return []

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        obs = _take(pending, self.kinds, ctx, "presence")
        if obs is None:
            return
        _check_keys(obs, frozenset({"present"}), ctx)
        present = obs.values.get("present")
        if not isinstance(present, bool):
            raise _fail("not_encodable", ctx.model, "PRESENCE needs values.present (bool)")
        out[self.names[0]] = present


@dataclass(frozen=True, slots=True)
class PostureStatus:
    """OWON FDS315 ``status``: one field says whether someone fell, is there, and how they lie.

    ``falling`` is ``FALL_DETECTED`` (and someone present). Every other state is a posture or
    presence reading, **not** a fall clear: it becomes ``PRESENCE`` with ``values["present"]``
    and the raw ``values["status"]``. Someone on the floor after a fall is ``low_posture`` (or
    ``sitting``, or unseen: ``unoccupied``); the model has no state that says the person is up,
    so a fall from this radar is never cleared by this radar (drivers/README.md, "Fall states").
    """

    name: str
    states: Mapping[str, tuple[Kind | None, bool]]  # state -> (fall kind or None, present)

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset({kind for kind, _ in self.states.values() if kind is not None} | {Kind.PRESENCE})

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        value = _enum(msg, self.name, self.states, ctx)
        if value is None:
            return []
        kind, present = self.states[value]
        if kind is None:
            return [(Kind.PRESENCE, {"present": present, self.name: value})]
        return [(kind, {self.name: value}), (Kind.PRESENCE, {"present": present})]

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        fall = _take(pending, self.kinds - {Kind.PRESENCE}, ctx, self.name)
        presence = _take(pending, frozenset({Kind.PRESENCE}), ctx, "presence")
        if fall is None and presence is None:
            return
        present: bool | None = None
        posture: Scalar | None = None
        if presence is not None:
            _check_keys(presence, frozenset({"present", self.name}), ctx)
            flag = presence.values.get("present")
            if not isinstance(flag, bool):
                raise _fail("not_encodable", ctx.model, "PRESENCE needs values.present (bool)")
            present, posture = flag, presence.values.get(self.name)
        if fall is not None:
            _check_keys(fall, frozenset({self.name}), ctx)
            if posture is not None:
                raise _fail("not_encodable", ctx.model, f"{fall.kind} and a posture in one {self.name}")
            fall_kinds = {name: kind for name, (kind, _) in self.states.items() if kind is not None}
            state = _state_for(self.name, fall_kinds, fall, ctx)
        elif posture is None:  # a simulator may leave the posture out
            state = "occupied" if present else "unoccupied"
        elif not isinstance(posture, str) or posture not in self.states or self.states[posture][0] is not None:
            raise _fail("not_encodable", ctx.model, f"{self.name}={snippet(posture)} is not a posture")
        else:
            state = posture
        if present is not None and self.states[state][1] != present:
            raise _fail("not_encodable", ctx.model, f"{self.name}={state} contradicts present={present}")
        out[self.name] = state


@dataclass(frozen=True, slots=True)
class Action:
    """A button's ``action``: an edge, mapped through the device's table (or the model default).

    ``values["action"]`` keeps the raw action, so a long press is told from a short one. An
    action the model documents but the table leaves out (HS1EB ``off``) is ignored; one the
    model does not document is ``unknown_action`` — a button we cannot read must be loud.
    """

    default: Mapping[str, str]
    known: frozenset[str]

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(Kind(kind) for kind in self.default.values())

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        action = _get(msg, "action", str, ctx)
        if not action:  # absent, null or "" (Z2M's reset of the transient value)
            return []
        kind = ctx.actions.get(action)
        if kind is not None:
            return [(Kind(kind), {"action": action})]
        if action in self.known:
            return []
        raise _fail(
            "unknown_action",
            ctx.model,
            f"action {snippet(action)} is not in {sorted(set(ctx.actions) | self.known)}",
        )

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        tagged = [obs for obs in pending if "action" in obs.values]
        if not tagged:
            table_kinds = {Kind(kind) for kind in ctx.actions.values()} - _SUPERVISION
            tagged = [obs for obs in pending if obs.kind in table_kinds]
        if not tagged:
            return
        if len(tagged) > 1:
            raise _fail("not_encodable", ctx.model, "one message carries one action")
        obs = tagged[0]
        pending.remove(obs)
        _check_keys(obs, frozenset({"action"}), ctx)
        raw = obs.values.get("action")
        if raw is None:  # a simulator may leave the raw action out: use the first that fits
            raw = next((action for action, kind in ctx.actions.items() if kind == obs.kind), None)
        if not isinstance(raw, str) or ctx.actions.get(raw) != obs.kind:
            raise _fail("not_encodable", ctx.model, f"action {snippet(raw)} does not mean {obs.kind}")
        out["action"] = raw


@dataclass(frozen=True, slots=True)
class Battery:
    """``battery`` (%) and ``voltage`` (mV) → ``BATTERY``; ``battery_low: true`` → ``BATTERY_LOW``.

    ``exposes_low`` only affects encoding: models that expose ``battery_low`` publish ``false``.
    """

    exposes_low: bool = False

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset({Kind.BATTERY, Kind.BATTERY_LOW})

    def decode(self, msg: Mapping[str, Any], ctx: _Context) -> list[Found]:
        found: list[Found] = []
        values: dict[str, Scalar] = {}
        for name in ("battery", "voltage"):
            value = _get(msg, name, _NUMBER, ctx)
            if value is not None:
                values[name] = value
        if values:
            found.append((Kind.BATTERY, values))
        if _get(msg, "battery_low", bool, ctx):
            found.append((Kind.BATTERY_LOW, {}))
        return found

    def encode(self, pending: list[Observation], out: dict[str, Any], ctx: _Context) -> None:
        battery = _take(pending, frozenset({Kind.BATTERY}), ctx, "battery")
        if battery is not None:
            _check_keys(battery, frozenset({"battery", "voltage"}), ctx)
            if not battery.values:
                raise _fail("not_encodable", ctx.model, "BATTERY needs battery or voltage")
            for name, value in battery.values.items():
                if isinstance(value, bool) or not isinstance(value, _NUMBER):
                    raise _fail("not_encodable", ctx.model, f"{name} must be a number")
                out[name] = value
        low = _take(pending, frozenset({Kind.BATTERY_LOW}), ctx, "battery_low")
        if low is not None:
            _check_keys(low, frozenset(), ctx)
            out["battery_low"] = True
        elif self.exposes_low:
            out["battery_low"] = False


# --------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True, slots=True)
class Z2MModel:
    """A Z2M model (the ``definition.model`` string) as data: its family and its extends."""

    family: Family
    description: str
    extends: tuple[Extend, ...] = field(default_factory=tuple)

    @property
    def emits(self) -> frozenset[Kind]:
        """Every kind the model decodes to with its default tables."""
        return frozenset().union(*(extend.kinds for extend in self.extends))

    @property
    def default_actions(self) -> Mapping[str, str] | None:
        """The action table of a button model; ``None`` for models without ``action``."""
        for extend in self.extends:
            if isinstance(extend, Action):
                return extend.default
        return None


# Small factories, so that each model below is one line of data (zigbee-herdsman-converters'
# modernExtend style).


def _smoke(description: str, tamper: bool = False, test: bool = False) -> Z2MModel:
    extends: tuple[Extend, ...] = (Smoke(test), Battery(exposes_low=True))
    if tamper:
        extends += (Binary("tamper", Kind.TAMPER, Kind.TAMPER_CLEAR),)
    return Z2MModel(Family.SMOKE, description, extends)


def _contact(description: str) -> Z2MModel:
    # Z2M's contact is true when the magnet is near: true = CLOSED, false = OPEN.
    return Z2MModel(Family.DOOR, description, (Binary("contact", Kind.DOOR_CLOSED, Kind.DOOR_OPENED), Battery()))


def _button(description: str, default: Mapping[str, str], known: Sequence[str]) -> Z2MModel:
    return Z2MModel(Family.SOS, description, (Action(default, frozenset(known)), Battery()))


def _radar(description: str, fall: Extend, *presence: str) -> Z2MModel:
    extends: tuple[Extend, ...] = (fall, Presence(presence)) if presence else (fall,)
    return Z2MModel(Family.FALL, description, (*extends, Battery()))


# MIR-HE200-TY "none" and HS2FD "normal" are the radar's own fall field back at rest after a
# fall: the sensor's explicit clear, so they count as recovery. Presence / occupancy never do.
_MIR_FALL = Choice(
    "fall_down_status",
    {"none": Kind.FALL_CLEARED, "maybe_fall": Kind.FALL_SUSPECTED, "fall": Kind.FALL_DETECTED},
)
_HS2FD_FALL = Choice(
    "fall_status",
    {
        "normal": Kind.FALL_CLEARED,
        "fall_warning": Kind.FALL_SUSPECTED,
        "fall_alarm": Kind.FALL_DETECTED,
        "unknown": None,  # documented, but says nothing about a fall: it must not clear one
    },
)
# Only "falling" is a fall state. The others are postures or presence and clear nothing: a
# person lying on the floor after a fall is "low_posture"; see drivers/README.md, "Fall states".
_FDS315_STATUS = PostureStatus(
    "status",
    {
        "unoccupied": (None, False),
        "occupied": (None, True),
        "sitting": (None, True),
        "on_the_bed": (None, True),
        "low_posture": (None, True),
        "falling": (Kind.FALL_DETECTED, True),
    },
)
HS1EB_ACTIONS = {"single": "sos_pressed", "hold": "sos_pressed", "double": "sos_cancelled"}

MODELS: dict[str, Z2MModel] = {
    # Both decode with ias_smoke_alarm_1, which publishes the zone status's test bit.
    "HS1SA": _smoke("HEIMAN HS1SA smoke detector", test=True),
    "TS0205": _smoke("TuYa / CR Smart Home TS0205 smoke detector", tamper=True, test=True),
    "MCCGQ11LM": _contact("Aqara MCCGQ11LM door/window contact"),
    "TS0215A_sos": _button("TuYa TS0215A_sos SOS button", {"emergency": "sos_pressed"}, ["emergency"]),
    "HS1EB": _button("HEIMAN HS1EB/HS1EB-E SOS button", HS1EB_ACTIONS, ["off", "single", "double", "hold"]),
    "MIR-HE200-TY_fall": _radar("TuYa MIR-HE200-TY radar with fall", _MIR_FALL, "presence", "occupancy"),
    "HS2FD-EF1-3.0": _radar("HEIMAN HS2FD-EF1-3.0 fall sensor", _HS2FD_FALL, "occupancy"),
    "FDS315": _radar("OWON FDS315 fall sensor (status also gives presence)", _FDS315_STATUS),
}


# --------------------------------------------------------------------------------------------
# State messages


def _model(model: str) -> Z2MModel:
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        raise PayloadError("unknown_model", f"zigbee2mqtt: no model {snippet(model)}; known: {sorted(MODELS)}")
    return spec


def action_table(model: str, actions: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The effective action table of a device: its own (checked) or the model's default.

    Config validation can call this at start-up; a table whose value is not a ``Kind`` value is
    ``PayloadError("unknown_kind")``.
    """
    spec = _model(model)
    if actions is None:
        return spec.default_actions or {}
    if not isinstance(actions, Mapping):
        raise _fail("wrong_type", model, "action table must be a mapping")
    for action, kind in actions.items():
        if not isinstance(action, str) or not isinstance(kind, str) or kind not in Kind._value2member_map_:
            raise _fail("unknown_kind", model, f"action table maps {snippet(action)} to {snippet(kind)}")
    return dict(actions)


def decode_state(payload: bytes, model: str, actions: Mapping[str, str] | None = None) -> list[Observation]:
    """Decode a ``zigbee2mqtt/<friendly_name>`` state message of ``model``."""
    msg = load_json(payload, "zigbee2mqtt")  # size guard first: garbage costs nothing
    prepared = _PREPARED.get(model) if actions is None and isinstance(model, str) else None
    if prepared is None:
        ctx = _Context(model, action_table(model, actions))
        extends = None
    else:
        ctx, extends = prepared
    if not isinstance(msg, dict):
        raise _fail("not_object", model, f"expected a JSON object, got {snippet(msg)}")
    found: list[Found] = []
    for extend in extends or _model(model).extends:
        found += extend.decode(msg, ctx)
    linkquality = _get(msg, LINKQUALITY, _NUMBER, ctx)
    if found and linkquality is not None:
        found[0][1][LINKQUALITY] = linkquality
    device_time = _last_seen(msg.get("last_seen"))
    return [Observation(kind, values, device_time) for kind, values in found]


# Each model's context with its default action table, and its extends: looked up once, not per
# message (a device with its own action table still has its table checked each time).
_PREPARED: dict[str, tuple[_Context, tuple[Extend, ...]]] = {
    name: (_Context(name, action_table(name)), spec.extends) for name, spec in MODELS.items()
}


def _last_seen(value: object) -> float | None:
    """``last_seen`` as epoch seconds (µs resolution), or None when we cannot trust it."""
    if value is None:
        return None
    count: int | None = None
    try:
        if isinstance(value, str) and len(value) <= 40:
            moment = datetime.fromisoformat(value)
            if moment.utcoffset() is not None:
                count = micros(moment)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            count = round(Fraction(value) * 1000)  # epoch milliseconds, exactly
    except (ValueError, OverflowError):
        return None
    return None if count is None else seconds_in_window(count)


def encode_state(model: str, observations: Sequence[Observation], actions: Mapping[str, str] | None = None) -> bytes:
    """The state message a real ``model`` device would make Z2M publish, for simulators.

    Inverse of ``decode_state`` for every list ``decode_state`` can return. Raises
    ``PayloadError("not_encodable")`` for a list no single message can carry, and
    ``unknown_kind`` for a kind the model never emits.
    """
    spec = _model(model)
    ctx = _Context(model, action_table(model, actions))
    pending = list(observations)
    times = {obs.device_time for obs in pending}
    if len(times) > 1:
        raise _fail("not_encodable", model, "observations of one message share one time")
    linkquality: Scalar | None = None
    for index, obs in enumerate(pending):
        if LINKQUALITY in obs.values:
            linkquality = obs.values[LINKQUALITY]
            pending[index] = replace(obs, values={k: v for k, v in obs.values.items() if k != LINKQUALITY})
            break
    out: dict[str, Any] = {}
    for extend in spec.extends:
        extend.encode(pending, out, ctx)
    if pending:
        raise _fail("unknown_kind", model, f"cannot carry {sorted(str(obs.kind) for obs in pending)}")
    if linkquality is not None:
        if isinstance(linkquality, bool) or not isinstance(linkquality, _NUMBER):
            raise _fail("not_encodable", model, "linkquality must be a number")
        out[LINKQUALITY] = linkquality
    device_time = times.pop() if times else None
    if device_time is not None:
        out["last_seen"] = _iso_utc(device_time, model)
    return dump_json(out)


def _iso_utc(seconds: float, model: str) -> str:
    """Z2M's ``ISO_8601`` form (JavaScript ``toISOString``: UTC, milliseconds, ``Z``).

    Microseconds are written only when the time has them, so every decodable time round-trips.
    """
    if not in_window(seconds):
        raise _fail("not_encodable", model, f"device_time {seconds} outside 2000–2100")
    count = to_micros(seconds)
    moment = moment_of(count)
    fraction = f"{moment.microsecond // 1000:03d}" if count % 1000 == 0 else f"{moment.microsecond:06d}"
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction}Z"


# --------------------------------------------------------------------------------------------
# Availability


_AVAILABILITY = {"online": Kind.ONLINE, "offline": Kind.OFFLINE}


def decode_availability(payload: bytes) -> Observation:
    """``…/availability``: legacy ``online``/``offline`` (Z2M 1.x) or ``{"state": "online"}`` (2.x)."""
    if isinstance(payload, bytes | bytearray) and len(payload) < 32 and payload.strip() in (b"online", b"offline"):
        return Observation(_AVAILABILITY[bytes(payload).strip().decode()])
    data = load_json(payload, "zigbee2mqtt availability")
    if isinstance(data, dict):
        if "state" not in data:
            raise _fail("missing_field", "availability", f"no state in {snippet(data)}")
        data = data["state"]
        if not isinstance(data, str):
            raise _fail("wrong_type", "availability", f"state must be a string, got {snippet(data)}")
    elif not isinstance(data, str):  # a JSON string "online" is lenient but harmless
        raise _fail("not_object", "availability", f"unexpected {snippet(data)}")
    kind = _AVAILABILITY.get(data)
    if kind is None:
        raise _fail("unknown_state", "availability", f"state {snippet(data)} is not online/offline")
    return Observation(kind)


def encode_availability(online: bool, legacy: bool = False) -> bytes:
    """The availability payload: Z2M 2.x JSON, or the 1.x plain text when ``legacy``."""
    state = "online" if online else "offline"
    return state.encode() if legacy else dump_json({"state": state})
