"""The normalised event and the alert: the types every part of SenseGate shares.

This module imports nothing else from the project, so codecs, rules and simulators can
depend on it without pulling in the runtime.

An ``Observation`` is what a codec reads out of one payload or frame: what happened and the
values that came with it, but not *which* device said it nor *where* it is. The runtime adds
identity, location and the receive time and turns it into an ``Event``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

Scalar = bool | int | float | str


class Family(enum.StrEnum):
    """The sensor family: which kind of device an event comes from."""

    DOOR = "door"  # 门磁 and 门禁 (contacts, readers, access controllers)
    FALL = "fall"  # 跌倒检测雷达
    SMOKE = "smoke"  # 烟感
    SOS = "sos"  # 紧急呼叫按钮
    GAS = "gas"  # 燃气报警器
    WATER = "water"  # 水浸
    PRESENCE = "presence"  # presence / motion sensors


class Kind(enum.StrEnum):
    """What happened. Values are stable strings: they are stored, published and queried."""

    # door contacts and access control
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    ACCESS_GRANTED = "access_granted"
    ACCESS_DENIED = "access_denied"
    # fall radars
    FALL_DETECTED = "fall_detected"
    FALL_SUSPECTED = "fall_suspected"  # a radar's "maybe fall" / "fall warning"
    FALL_CLEARED = "fall_cleared"
    RESIDENCE = "residence"  # stationary residence (静止驻留): values["present"]
    # smoke, gas and water
    SMOKE_ALARM = "smoke_alarm"
    SMOKE_CLEAR = "smoke_clear"
    SMOKE_TEST = "smoke_test"
    GAS_ALARM = "gas_alarm"
    GAS_CLEAR = "gas_clear"
    WATER_LEAK = "water_leak"
    WATER_CLEAR = "water_clear"
    SENSOR_FAULT = "sensor_fault"
    # The device's own test signal (a test button) where it is not a smoke detector's:
    # a Chuango sensor's "Test" code, a native device's self-test. Raises nothing.
    SELF_TEST = "self_test"
    # SOS buttons (an edge: each press is one event)
    SOS_PRESSED = "sos_pressed"
    SOS_CANCELLED = "sos_cancelled"
    # presence and motion
    PRESENCE = "presence"  # values["present"]: bool
    MOTION = "motion"  # values["moving"] / values["level"]
    # device supervision
    BATTERY = "battery"  # values["battery"]: percent, and/or values["voltage"]
    BATTERY_LOW = "battery_low"
    TAMPER = "tamper"
    TAMPER_CLEAR = "tamper_clear"
    ONLINE = "online"
    OFFLINE = "offline"
    HEARTBEAT = "heartbeat"
    # visit tracking (探访): an explicit check-in by a registered visitor (docs/visits.md)
    VISIT = "visit"


# Kinds that must never be thinned to save disk and that raise alerts in the minimal path.
ALARM_KINDS: frozenset[Kind] = frozenset(
    {
        Kind.FALL_DETECTED,
        Kind.FALL_SUSPECTED,
        Kind.RESIDENCE,
        Kind.SMOKE_ALARM,
        Kind.GAS_ALARM,
        Kind.WATER_LEAK,
        Kind.SOS_PRESSED,
        Kind.TAMPER,
        Kind.ACCESS_DENIED,
    }
)


class Lane(enum.StrEnum):
    """Store-and-forward lane. Telemetry may be thinned by the disk policy; alarms never."""

    ALARM = "alarm"
    TELEMETRY = "telemetry"


def lane_of(kind: Kind) -> Lane:
    return Lane.ALARM if kind in ALARM_KINDS else Lane.TELEMETRY


# ``Event.values[RETAINED] is True``: the event comes from a retained MQTT message the gateway had
# not seen, i.e. a state found on (re)connect that may have begun while it was away
# (gateway/ingest/retained.py).
RETAINED = "retained"


# ``Event.values[TEST] is True``: the event is a test — from a device in test mode (测试模式,
# docs/installer.md; the store marks it when it accepts the event, ``values[TEST_MODE]`` then
# names the test mode) or a device that says so itself. It is stored and forwarded like any
# other (InfluxDB tag ``test=true``), and it raises no alert: the rule engine lets it calm
# (activity, "alive", a clear) but never alarm, see edge_rules/README.md.
TEST = "test"
TEST_MODE = "test_mode"
# The device's own test signal (its test button), in test mode or not.
SELF_TEST_KINDS: frozenset[Kind] = frozenset({Kind.SMOKE_TEST, Kind.SELF_TEST})


@dataclass(frozen=True, slots=True)
class Observation:
    """What a codec decoded from one payload or frame.

    ``values`` holds numbers, flags and short strings that came with it (battery percent,
    link quality, concentration, credential, person, direction …). ``device_time`` is the
    device's own timestamp in epoch seconds when the payload carries one.
    """

    kind: Kind
    values: Mapping[str, Scalar] = field(default_factory=dict)
    device_time: float | None = None


@dataclass(frozen=True, slots=True)
class Location:
    """Where a device is, from the registry. ``household`` is empty for public areas."""

    building: str = ""
    unit: str = ""
    household: str = ""
    room: str = ""

    def label_zh(self) -> str:
        """E.g. ``3号楼2单元502室 卫生间``, for user-facing text."""
        parts = []
        if self.building:
            parts.append(f"{self.building}号楼")
        if self.unit:
            parts.append(f"{self.unit}单元")
        if self.household:
            parts.append(f"{self.household}室")
        text = "".join(parts)
        return f"{text} {self.room}".strip() if self.room else text

    def label_en(self) -> str:
        parts = []
        if self.building:
            parts.append(f"building {self.building}")
        if self.unit:
            parts.append(f"unit {self.unit}")
        if self.household:
            parts.append(f"flat {self.household}")
        if self.room:
            parts.append(self.room)
        return ", ".join(parts)


# Event.__init__'s default for the fields with a default factory (``location``, ``values``).
_FACTORY: Any = object()


@dataclass(frozen=True, slots=True)
class Event:
    """One normalised event from any driver.

    ``event_time`` is the device's time when the payload carried one (``time_source ==
    "device"``), else the receive time. ``seq`` is the gateway's store sequence number, set
    once the event is on disk (0 before).
    """

    device_id: str
    family: Family
    kind: Kind
    event_time: float
    received_at: float
    model: str = ""
    location: Location = field(default_factory=Location)
    values: Mapping[str, Scalar] = field(default_factory=dict)
    time_source: str = "gateway"
    source: str = ""  # payload format or transport: "zigbee2mqtt", "rtl_433", "native", …
    raw: str = ""  # the payload as received (text, or hex for binary frames), for debugging
    seq: int = 0

    # Written out instead of generated: a frozen dataclass's own __init__ sets each field with
    # ``object.__setattr__(self, name, value)``, a name look-up per field, and an event is built
    # per observation (and again with its seq): through the slots' own descriptors it costs half
    # (bench/bench_decode.py). Same parameters, defaults and order as the fields above, which
    # tests/gateway/test_models.py holds together; the class stays frozen.
    def __init__(
        self,
        device_id: str,
        family: Family,
        kind: Kind,
        event_time: float,
        received_at: float,
        model: str = "",
        location: Location = _FACTORY,
        values: Mapping[str, Scalar] = _FACTORY,
        time_source: str = "gateway",
        source: str = "",
        raw: str = "",
        seq: int = 0,
    ) -> None:
        _set_device_id(self, device_id)
        _set_family(self, family)
        _set_kind(self, kind)
        _set_event_time(self, event_time)
        _set_received_at(self, received_at)
        _set_model(self, model)
        _set_location(self, Location() if location is _FACTORY else location)
        _set_values(self, {} if values is _FACTORY else values)
        _set_time_source(self, time_source)
        _set_source(self, source)
        _set_raw(self, raw)
        _set_seq(self, seq)

    @property
    def lane(self) -> Lane:
        return lane_of(self.kind)

    @property
    def is_test(self) -> bool:
        """A test: from a device in test mode, or the device's own test signal."""
        return self.values.get(TEST) is True or self.kind in SELF_TEST_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "device_id": self.device_id,
            "family": self.family.value,
            "kind": self.kind.value,
            "event_time": self.event_time,
            "received_at": self.received_at,
            "time_source": self.time_source,
            "model": self.model,
            "location": {
                "building": self.location.building,
                "unit": self.location.unit,
                "household": self.location.household,
                "room": self.location.room,
            },
            "values": dict(self.values),
            "source": self.source,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], seq: int | None = None) -> Event:
        """The event ``to_dict`` wrote; ``seq`` instead of the one in ``data`` if given (the store
        keeps it in a column of its own)."""
        loc = data.get("location") or {}
        family = _FAMILIES.get(data["family"]) or Family(data["family"])
        kind = _KINDS.get(data["kind"]) or Kind(data["kind"])
        return cls(
            data["device_id"],
            family,
            kind,
            float(data["event_time"]),
            float(data["received_at"]),
            data.get("model", ""),
            Location(loc.get("building", ""), loc.get("unit", ""), loc.get("household", ""), loc.get("room", "")),
            dict(data.get("values") or {}),
            data.get("time_source", "gateway"),
            data.get("source", ""),
            data.get("raw", ""),
            int(data.get("seq", 0)) if seq is None else seq,
        )


# Event.__init__'s setters: the descriptors of the slots of the class @dataclass(slots=True) made.
(
    _set_device_id,
    _set_family,
    _set_kind,
    _set_event_time,
    _set_received_at,
    _set_model,
    _set_location,
    _set_values,
    _set_time_source,
    _set_source,
    _set_raw,
    _set_seq,
) = (Event.__dict__[f.name].__set__ for f in fields(Event))

# Event.from_dict's look-ups: calling an enum class (Kind("door_opened")) costs a microsecond.
_FAMILIES: dict[object, Family] = {f.value: f for f in Family}
_KINDS: dict[object, Kind] = {k.value: k for k in Kind}


class Severity(enum.IntEnum):
    """Graded response (分级响应): 1 is the most severe, as in the Chinese 一级 … 四级."""

    CRITICAL = 1  # 一级 (特别重大)
    MAJOR = 2  # 二级 (重大)
    SERIOUS = 3  # 三级 (较大)
    GENERAL = 4  # 四级 (一般)

    @property
    def label_zh(self) -> str:
        return _SEVERITY_ZH[self]

    @property
    def label_en(self) -> str:
        return self.name.lower()


_SEVERITY_ZH = {
    Severity.CRITICAL: "一级(特别重大)",
    Severity.MAJOR: "二级(重大)",
    Severity.SERIOUS: "三级(较大)",
    Severity.GENERAL: "四级(一般)",
}


class AlertState(enum.StrEnum):
    """Alert lifecycle (docs/alerts.md): raised → notified (a person's channel took it) →
    acknowledged (someone took responsibility: the ladder stops) → resolved (by its rule, or by
    a person with a note). ``escalated``: the rule raised its severity, or nobody acknowledged
    and the ladder went up a tier."""

    RAISED = "raised"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert about a household, resident or building.

    ``dedup_key`` is stable for "the same problem" (rule + subject): while an alert with that
    key is open, repeats update ``count`` and ``last_seen`` instead of raising a new one.
    ``evidence`` holds the store sequence numbers of the events that caused it.
    """

    id: str
    dedup_key: str
    rule: str
    severity: Severity
    state: AlertState
    raised_at: float
    last_seen: float
    message_zh: str
    message_en: str
    location: Location = field(default_factory=Location)
    resident: str = ""
    device_id: str = ""
    count: int = 1
    evidence: tuple[int, ...] = ()
    resolved_at: float | None = None
    notified_at: float | None = None
    acked_by: str = ""  # a person id
    acked_at: float | None = None
    acked_via: str = ""  # cli / mqtt / http / a channel id
    resolved_by: str = ""  # "rule:<id>" when its rule resolved it, else a person id
    resolve_note: str = ""  # 处置记录: what was done
    # Flapping (抖动): raised and cleared again and again. The alert stays open, folding the
    # repeats, and resolves once the condition has stayed clear until ``settle_at``.
    flapping: bool = False
    settle_at: float | None = None
    settle_zh: str = ""  # the rule's resolution text, used when it settles
    settle_en: str = ""

    @property
    def is_open(self) -> bool:
        return self.state is not AlertState.RESOLVED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dedup_key": self.dedup_key,
            "rule": self.rule,
            "severity": int(self.severity),
            "severity_zh": self.severity.label_zh,
            "severity_en": self.severity.label_en,
            "state": self.state.value,
            "raised_at": self.raised_at,
            "last_seen": self.last_seen,
            "resolved_at": self.resolved_at,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
            "location": {
                "building": self.location.building,
                "unit": self.location.unit,
                "household": self.location.household,
                "room": self.location.room,
            },
            "resident": self.resident,
            "device_id": self.device_id,
            "count": self.count,
            "evidence": list(self.evidence),
            "notified_at": self.notified_at,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at,
            "acked_via": self.acked_via,
            "resolved_by": self.resolved_by,
            "resolve_note": self.resolve_note,
            "flapping": self.flapping,
            "settle_at": self.settle_at,
            "settle_zh": self.settle_zh,
            "settle_en": self.settle_en,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        loc = data.get("location") or {}
        return cls(
            id=data["id"],
            dedup_key=data["dedup_key"],
            rule=data["rule"],
            severity=Severity(int(data["severity"])),
            state=AlertState(data["state"]),
            raised_at=float(data["raised_at"]),
            last_seen=float(data["last_seen"]),
            resolved_at=None if data.get("resolved_at") is None else float(data["resolved_at"]),
            message_zh=data["message_zh"],
            message_en=data["message_en"],
            location=Location(
                building=loc.get("building", ""),
                unit=loc.get("unit", ""),
                household=loc.get("household", ""),
                room=loc.get("room", ""),
            ),
            resident=data.get("resident", ""),
            device_id=data.get("device_id", ""),
            count=int(data.get("count", 1)),
            evidence=tuple(int(x) for x in data.get("evidence", ())),
            notified_at=_opt_float(data.get("notified_at")),
            acked_by=data.get("acked_by", ""),
            acked_at=_opt_float(data.get("acked_at")),
            acked_via=data.get("acked_via", ""),
            resolved_by=data.get("resolved_by", ""),
            resolve_note=data.get("resolve_note", ""),
            flapping=bool(data.get("flapping", False)),
            settle_at=_opt_float(data.get("settle_at")),
            settle_zh=data.get("settle_zh", ""),
            settle_en=data.get("settle_en", ""),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
