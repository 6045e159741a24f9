"""Home Assistant MQTT discovery: the site's devices and open alerts as Home Assistant entities.

Two halves, as everywhere in SenseGate: a pure translator (no I/O, no clock) and a thin runner.

- ``discovery_messages(config)`` says which entities Home Assistant should show: for every
  configured device the binary sensors and sensors its family and model can drive, each with
  the right ``device_class``; for every household, every building and the whole site an "open
  alerts" entity with the count, the highest severity and the latest message in Chinese.
- ``state_messages(event, config)`` and ``alert_state_messages(open_alerts, config)`` say what
  a stored event or the current set of open alerts means for those entities. A test event (a
  device in test mode, or its own test signal) sets only states that say all is well.
- ``HaBridge`` publishes all of it through an injected ``publish(topic, payload, retain)``,
  announces at start and again whenever Home Assistant says ``online`` on its status topic
  (its birth message, sent when it starts), and removes entities that are no longer
  configured. It never opens a connection: the runtime owns the MQTT client.

Facts about the protocol (PROTOCOLS.md §7; Home Assistant's MQTT integration docs and
``homeassistant/components/mqtt/discovery.py``):

- discovery topic ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``; node and
  object ids only ``[a-zA-Z0-9_-]``, so Chinese goes into ``name`` and never into ids;
- configs are retained; an empty retained payload deletes the entity;
- the ``object_id`` *option* inside the payload was deprecated in Home Assistant 2025.10 and
  removed in 2026.4 (home-assistant/core#164460); ``default_entity_id`` (``<domain>.<id>``)
  replaces it. The object id in the *topic* is unaffected;
- Home Assistant makes the entity id ``<domain>.<slugify(object id)>`` and adds ``_2`` when that
  is taken (``async_generate_entity_id`` in ``homeassistant/helpers/entity.py``;
  ``homeassistant.util.slugify`` is python-slugify with ``_``: runs of ``-`` / ``_`` collapsed,
  none at the ends). It uses that id only when it first registers the entity, which its
  registry knows by ``unique_id``. So the ids are sent already slugged (``_entity_slug``), and
  unique ids never change;
- a binary sensor's ``off_delay`` turns it off that many seconds after the last ``ON``: used
  for stateless triggers (an SOS press, a detector that reports an alarm but never a clear).

Topics written by this module, ``<prefix>`` being ``config.topic_prefix``:

- ``<prefix>/ha/<device id>/<entity>``: device entity states (``ON`` / ``OFF``, a number);
- ``<prefix>/ha/household/<id>/alerts`` (and ``…/attributes``), ``<prefix>/ha/building/<id>/…``
  and ``<prefix>/ha/site/…``: alert entities;
- availability is the gateway's own ``<prefix>/status`` (``online``, and ``offline`` as its
  MQTT will), which the ingest already publishes (docs/interfaces.md).

See docs/home-assistant.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from drivers import SERIAL_CODECS, rtl433, zigbee2mqtt
from gateway import __version__
from gateway.models import Alert, AlertState, Event, Family, Kind, Location, Severity
from gateway.site.config import Device, HaSettings, SiteConfig
from gateway.site.registry import device_location

__all__ = [
    "HaBridge",
    "HaSettings",
    "Message",
    "Publish",
    "alert_state_messages",
    "discovery_messages",
    "state_messages",
]

# A message to publish: (topic, payload, retain).
Message = tuple[str, str, bool]
Publish = Callable[[str, str, bool], Awaitable[None]]


def settings_of(config: SiteConfig) -> HaSettings:
    """The site's ``[home_assistant]`` settings."""
    return config.home_assistant


# --------------------------------------------------------------------------------------------
# What a device can show: entity slots as data


@dataclass(frozen=True, slots=True)
class Slot:
    """One kind of entity a device can have. ``on`` kinds make it ON (and must be among what
    the device emits for it to be announced); ``off`` kinds make it OFF. A binary slot whose
    device can emit no ``off`` kind is a trigger and gets ``off_delay``."""

    key: str  # the entity's part of ids and topics
    component: str  # "binary_sensor" or "sensor"
    device_class: str
    name_zh: str
    on: frozenset[Kind]
    off: frozenset[Kind] = frozenset()
    diagnostic: bool = False
    pulse: bool = False  # always a trigger, whatever the device can emit
    unit: str | None = None


def _k(*kinds: Kind) -> frozenset[Kind]:
    return frozenset(kinds)


SLOTS: dict[str, Slot] = {
    s.key: s
    for s in (
        Slot("smoke", "binary_sensor", "smoke", "烟雾报警", _k(Kind.SMOKE_ALARM), _k(Kind.SMOKE_CLEAR)),
        Slot("gas", "binary_sensor", "gas", "燃气泄漏", _k(Kind.GAS_ALARM), _k(Kind.GAS_CLEAR)),
        Slot("water", "binary_sensor", "moisture", "漏水", _k(Kind.WATER_LEAK), _k(Kind.WATER_CLEAR)),
        # safety: ON means unsafe. A suspected fall is unsafe until the radar says otherwise.
        Slot(
            "fall",
            "binary_sensor",
            "safety",
            "跌倒",
            _k(Kind.FALL_DETECTED, Kind.FALL_SUSPECTED),
            _k(Kind.FALL_CLEARED),
        ),
        Slot("presence", "binary_sensor", "occupancy", "有人", _k(Kind.PRESENCE), _k(Kind.PRESENCE)),
        Slot("motion", "binary_sensor", "motion", "活动", _k(Kind.MOTION), _k(Kind.MOTION)),
        Slot("door", "binary_sensor", "door", "门", _k(Kind.DOOR_OPENED), _k(Kind.DOOR_CLOSED)),
        # A press is an event, not a state; the lasting state is the household's alert entity.
        Slot("sos", "binary_sensor", "safety", "紧急呼叫", _k(Kind.SOS_PRESSED), _k(Kind.SOS_CANCELLED), pulse=True),
        Slot("tamper", "binary_sensor", "tamper", "防拆报警", _k(Kind.TAMPER), _k(Kind.TAMPER_CLEAR)),
        Slot("fault", "binary_sensor", "problem", "故障", _k(Kind.SENSOR_FAULT), _k(Kind.HEARTBEAT), diagnostic=True),
        Slot("battery", "sensor", "battery", "电量", _k(Kind.BATTERY), diagnostic=True, unit="%"),
        # binary battery: ON means low. Also derived from the percent, as the battery_low rule does.
        Slot(
            "battery_low",
            "binary_sensor",
            "battery",
            "低电量",
            _k(Kind.BATTERY_LOW, Kind.BATTERY),
            _k(Kind.BATTERY),
            diagnostic=True,
        ),
        Slot(
            "connectivity", "binary_sensor", "connectivity", "在线", _k(Kind.ONLINE), _k(Kind.OFFLINE), diagnostic=True
        ),
    )
}

# Per family: the main entities, then supervision. A device gets those its model can drive.
_SUPERVISION = ("tamper", "fault", "battery", "battery_low", "connectivity")
FAMILY_SLOTS: dict[Family, tuple[str, ...]] = {
    Family.DOOR: ("door", *_SUPERVISION),
    Family.FALL: ("fall", "presence", *_SUPERVISION),
    Family.SMOKE: ("smoke", *_SUPERVISION),
    Family.SOS: ("sos", *_SUPERVISION),
    Family.GAS: ("gas", *_SUPERVISION),
    Family.WATER: ("water", *_SUPERVISION),
    Family.PRESENCE: ("presence", "motion", *_SUPERVISION),
}
# A device whose model the codecs do not describe (native format): what it could plausibly drive.
_UNKNOWN_MODEL_SUPERVISION = ("tamper", "connectivity")

FAMILY_ZH: dict[Family, str] = {
    Family.DOOR: "门磁",
    Family.FALL: "跌倒雷达",
    Family.SMOKE: "烟感",
    Family.SOS: "紧急呼叫按钮",
    Family.GAS: "燃气报警器",
    Family.WATER: "水浸传感器",
    Family.PRESENCE: "人体存在传感器",
}

# The smart_community pack's battery_low rule: under 20 % raises, 50 % or more resolves.
BATTERY_LOW_BELOW = 20.0
BATTERY_OK_FROM = 50.0
MANUFACTURER = "SenseGate"
ON, OFF = "ON", "OFF"
# How many open alerts the attributes list by name; the count is always exact.
MAX_LISTED_ALERTS = 20


def device_kinds(device: Device) -> frozenset[Kind] | None:
    """Every kind the device can produce, from its codec's model data; ``None`` if unknown
    (the native format carries any kind)."""
    if device.serial is not None:
        codec = SERIAL_CODECS.get(device.serial.protocol)
        if codec is None:
            return None
        return frozenset(Kind(k) for k in codec.EMITS) | {Kind.ONLINE, Kind.OFFLINE}
    if device.modbus is not None:
        # Modbus detectors: alarm / clear edges, faults, telemetry, online / offline (interfaces.md).
        alarm = (
            (Kind.GAS_ALARM, Kind.GAS_CLEAR) if device.family == Family.GAS else (Kind.SMOKE_ALARM, Kind.SMOKE_CLEAR)
        )
        return frozenset({*alarm, Kind.SENSOR_FAULT, Kind.HEARTBEAT, Kind.ONLINE, Kind.OFFLINE})
    src = device.mqtt
    if src is None or src.format == "native":
        return None
    if src.format == "zigbee2mqtt":
        z2m = zigbee2mqtt.MODELS.get(device.model)
        if z2m is None:
            return None
        kinds = set(z2m.emits) | {Kind.ONLINE, Kind.OFFLINE}  # availability
        actions = getattr(src, "actions", None)
        if actions:
            kinds |= {Kind(k) for k in actions.values()}
        return frozenset(kinds)
    spec = rtl433.MODELS.get(device.model)
    if spec is None:
        return None
    kinds = set(spec.emits)
    codes = getattr(src, "codes", None) or {}
    kinds |= {Kind(k) for k in codes.values() if k}
    if spec.flags:
        # A flag model reports each flag's state in every message: a mapped flag also clears.
        for slot in SLOTS.values():
            if slot.component == "binary_sensor" and slot.on & kinds:
                kinds |= slot.off
    return frozenset(kinds)


def _is_pulse(slot: Slot, device: Device, kinds: frozenset[Kind] | None) -> bool:
    if slot.component != "binary_sensor":
        return False
    if slot.pulse:
        return True
    if slot.key == "motion":
        # An rtl_433 PIR reports a trigger and never a clear; radars report a motion state.
        return device.mqtt is not None and device.mqtt.format == "rtl_433"
    return kinds is not None and not (slot.off & kinds)


# --------------------------------------------------------------------------------------------
# Ids and names


_UNIQUE_ID = re.compile(r"[A-Za-z0-9_-]+")


def _safe_id(text: str) -> str:
    """``text`` with only ``[A-Za-z0-9_-]``; a short hash keeps two ids apart that differ only
    in the characters replaced."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if safe != text:
        safe += "_" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return safe


def _entity_slug(text: str) -> str:
    """The object id Home Assistant makes of ``text``, so that ``default_entity_id`` is the
    entity id it creates and not one it rewrites.

    Home Assistant passes the object id of ``default_entity_id`` through its ``slugify``
    (``homeassistant.util.slugify``: python-slugify with ``separator="_"``, and ``"unknown"``
    when nothing is left): lowercase; every run of characters other than ``[a-z0-9]``,
    underscores included, becomes one ``_``; none at either end. So ``3-502__door_`` is
    ``3_502_door``, ``__x__`` is ``x`` and ``A--B`` is ``a_b``.

    ``text`` is a unique id, ``[A-Za-z0-9_-]`` only (ids pass ``_safe_id``): on those the rule
    above is all python-slugify does. Anything else is refused rather than guessed at: it would
    transliterate Chinese (``三号楼`` → ``san_hao_lou``) and drop commas between digits.
    """
    if not _UNIQUE_ID.fullmatch(text):
        raise ValueError(f"not a unique id of [A-Za-z0-9_-]: {text!r}")
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


def _device_name(device: Device, location: Location) -> str:
    """E.g. ``3号楼2单元502室 厨房 烟感``; the family is left out when the room already says it
    (``1号楼 大堂门禁``)."""
    label = FAMILY_ZH[device.family]
    place = location.label_zh()
    room = location.room
    if room and (label in room or "门禁" in room):
        return place
    return f"{place} {label}".strip()


# --------------------------------------------------------------------------------------------
# The plan: every entity of a site, built once from the config


@dataclass(frozen=True, slots=True)
class Entity:
    component: str
    unique_id: str
    config_topic: str
    state_topic: str
    config: Mapping[str, Any]
    retain_state: bool = True  # False for triggers: a past press must not replay as a new one
    attributes_topic: str | None = None


@dataclass(frozen=True, slots=True)
class _Area:
    kind: str  # "household" / "building" / "site"
    id: str
    name: str
    state_topic: str
    attributes_topic: str
    count_topic: str | None = None


@dataclass
class Plan:
    """Every entity the site announces, and where each event's states go."""

    config: SiteConfig
    settings: HaSettings
    node: str = field(init=False)  # the discovery node id
    ha_base: str = field(init=False)  # where entity states go: "<prefix>/ha"
    status_topic: str = field(init=False)  # the gateway's availability: "<prefix>/status"
    gateway_ident: str = field(init=False)  # the gateway's Home Assistant device identifier
    entities: list[Entity] = field(default_factory=list)
    # device id -> slot key -> (state topic, retained)
    device_slots: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)
    areas: list[_Area] = field(default_factory=list)
    _household_of: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config, s = self.config, self.settings
        self.node = s.node_id or _safe_id(config.gateway.id)
        prefix = config.topic_prefix
        self.ha_base = f"{prefix}/ha"
        self.status_topic = f"{prefix}/status"
        self.gateway_ident = f"sensegate_{self.node}"
        self._gateway_entities()
        # Imported here: the registry imports the config, which imports this module's settings.

        households = {h.id: h for h in config.households}
        for device in config.devices:
            self._device_entities(device, device_location(device, households))
        self._area_entities()
        seen: set[str] = set()
        for e in self.entities:
            if e.unique_id in seen:  # cannot happen with the id scheme; a guard, not a feature
                raise ValueError(f"Home Assistant unique_id {e.unique_id!r} used twice")
            seen.add(e.unique_id)
        self._separate_entity_ids()

    def _separate_entity_ids(self) -> None:
        """Unique ids that slug alike (devices ``a-b`` and ``a_b``, or ``A`` and ``a``) would get
        one entity id; Home Assistant would add ``_2`` to whichever it discovers second. Each of
        them gets a short hash of its unique id instead, the same whatever the order."""
        by_entity_id: dict[str, list[int]] = {}
        for i, e in enumerate(self.entities):
            by_entity_id.setdefault(e.config["default_entity_id"], []).append(i)
        for entity_id, clash in by_entity_id.items():
            for i in clash if len(clash) > 1 else ():
                e = self.entities[i]
                separate = f"{entity_id}_{hashlib.sha1(e.unique_id.encode()).hexdigest()[:6]}"
                config = {k: separate if k == "default_entity_id" else v for k, v in e.config.items()}
                self.entities[i] = replace(e, config=config)
        entity_ids = [e.config["default_entity_id"] for e in self.entities]
        if len(set(entity_ids)) != len(entity_ids):  # a hash clash too: a guard, not a feature
            raise ValueError("Home Assistant entity ids clash after separating them")

    # -------------------------------------------------------------- building blocks

    def _origin(self) -> dict[str, Any]:
        return {"name": "SenseGate", "sw_version": __version__}

    def _availability(self) -> dict[str, Any]:
        return {
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
        }

    def _add(
        self,
        component: str,
        unique_id: str,
        name: str,
        state_topic: str,
        device: Mapping[str, Any],
        extra: Mapping[str, Any],
        *,
        available: bool = True,
        retain_state: bool = True,
        attributes_topic: str | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "name": name,
            "unique_id": unique_id,
            "default_entity_id": f"{component}.{_entity_slug(unique_id)}",
            "state_topic": state_topic,
            **extra,
        }
        if attributes_topic is not None:
            payload["json_attributes_topic"] = attributes_topic
        if available:
            payload.update(self._availability())
        payload["device"] = dict(device)
        payload["origin"] = self._origin()
        topic = f"{self.settings.discovery_prefix}/{component}/{self.node}/{unique_id}/config"
        self.entities.append(Entity(component, unique_id, topic, state_topic, payload, retain_state, attributes_topic))

    def _gateway_device(self) -> dict[str, Any]:
        site = self.config.gateway.site
        return {
            "identifiers": [self.gateway_ident],
            "name": f"智感网关 {site}".strip() if site else f"智感网关 {self.config.gateway.id}",
            "model": "SenseGate 智感网关",
            "manufacturer": MANUFACTURER,
            "sw_version": __version__,
        }

    def _gateway_entities(self) -> None:
        # The gateway's own link: its status topic, read directly, so never "unavailable".
        self._add(
            "binary_sensor",
            f"{self.gateway_ident}_gw_connectivity",
            "网关在线",
            self.status_topic,
            self._gateway_device(),
            {
                "device_class": "connectivity",
                "payload_on": "online",
                "payload_off": "offline",
                "entity_category": "diagnostic",
            },
            available=False,
        )

    def _device_entities(self, device: Device, location: Location) -> None:
        kinds = device_kinds(device)
        keys = FAMILY_SLOTS[device.family]
        if kinds is None:
            keys = tuple(k for k in keys if k not in _SUPERVISION or k in _UNKNOWN_MODEL_SUPERVISION)
        block = {
            "identifiers": [f"{self.gateway_ident}_dev_{_safe_id(device.id)}"],
            "name": _device_name(device, location),
            "model": device.model,
            "manufacturer": MANUFACTURER,
            "via_device": self.gateway_ident,
        }
        slots: dict[str, tuple[str, bool]] = {}
        for key in keys:
            slot = SLOTS[key]
            if kinds is not None and not (slot.on & kinds):
                continue
            state_topic = f"{self.ha_base}/{device.id}/{key}"
            extra: dict[str, Any] = {"device_class": slot.device_class}
            pulse = _is_pulse(slot, device, kinds)
            if slot.component == "binary_sensor":
                extra |= {"payload_on": ON, "payload_off": OFF}
                if pulse:
                    extra["off_delay"] = self.settings.off_delay
            else:
                extra |= {"unit_of_measurement": slot.unit, "state_class": "measurement"}
            if slot.diagnostic:
                extra["entity_category"] = "diagnostic"
            uid = f"{self.gateway_ident}_dev_{_safe_id(device.id)}_{key}"
            self._add(slot.component, uid, slot.name_zh, state_topic, block, extra, retain_state=not pulse)
            slots[key] = (state_topic, not pulse)
        self.device_slots[device.id] = slots

    def _area_entities(self) -> None:
        config = self.config
        names = {b.id: b.name for b in config.buildings}
        buildings = dict.fromkeys(
            [*(b.id for b in config.buildings), *(h.building for h in config.households)]
            + [d.building for d in config.devices if d.building]
        )
        for h in config.households:
            self._household_of[(h.building, h.unit, h.number or h.id)] = h.id
            name = Location(building=h.building, unit=h.unit, household=h.number or h.id).label_zh()
            self._area("household", h.id, name, "住户", f"{self.gateway_ident}_hh_{_safe_id(h.id)}")
        for bid in buildings:
            name = names.get(bid) or Location(building=bid).label_zh()
            self._area("building", bid, name, "楼栋", f"{self.gateway_ident}_bld_{_safe_id(bid)}")
        # The whole site, on the gateway's device: a flag and a count.
        base = f"{self.ha_base}/site"
        area = _Area("site", "", "", f"{base}/alerts", f"{base}/alerts/attributes", f"{base}/open_alerts")
        self.areas.append(area)
        self._add(
            "binary_sensor",
            f"{self.gateway_ident}_gw_alerts",
            "全部未处置报警",
            area.state_topic,
            self._gateway_device(),
            {"device_class": "safety", "payload_on": ON, "payload_off": OFF},
            attributes_topic=area.attributes_topic,
        )
        assert area.count_topic is not None
        self._add(
            "sensor",
            f"{self.gateway_ident}_gw_open_alerts",
            "未处置报警数",
            area.count_topic,
            self._gateway_device(),
            {"state_class": "measurement", "icon": "mdi:alarm-light"},
        )

    def _area(self, kind: str, area_id: str, name: str, model: str, ident: str) -> None:
        base = f"{self.ha_base}/{kind}/{area_id}"
        area = _Area(kind, area_id, name, f"{base}/alerts", f"{base}/alerts/attributes")
        self.areas.append(area)
        block = {
            "identifiers": [ident],
            "name": name,
            "model": model,
            "manufacturer": MANUFACTURER,
            "via_device": self.gateway_ident,
        }
        self._add(
            "binary_sensor",
            f"{ident}_alerts",
            "未处置报警",
            area.state_topic,
            block,
            {"device_class": "safety", "payload_on": ON, "payload_off": OFF},
            attributes_topic=area.attributes_topic,
        )

    # -------------------------------------------------------------- translation

    def discovery(self) -> list[Message]:
        return [
            (e.config_topic, json.dumps(e.config, ensure_ascii=False, separators=(",", ":")), True)
            for e in self.entities
        ]

    def states(self, event: Event) -> list[Message]:
        slots = self.device_slots.get(event.device_id)
        if not slots:
            return []
        test = event.is_test
        out: list[Message] = []
        for key, payload in _event_states(event):
            target = slots.get(key)
            if target is not None and (not test or _calming(key, payload)):
                out.append((target[0], payload, target[1]))
        return out

    def alert_states(self, open_alerts: Iterable[Alert]) -> list[Message]:
        by_area: dict[tuple[str, str], list[Alert]] = {(a.kind, a.id): [] for a in self.areas}
        for alert in open_alerts:
            if alert.state == AlertState.RESOLVED:
                continue
            loc = alert.location
            by_area[("site", "")].append(alert)
            if loc.building and ("building", loc.building) in by_area:
                by_area[("building", loc.building)].append(alert)
            hid = self._household_of.get((loc.building, loc.unit, loc.household))
            if hid is not None:
                by_area[("household", hid)].append(alert)
        out: list[Message] = []
        for area in self.areas:
            alerts = by_area[(area.kind, area.id)]
            out.append((area.state_topic, ON if alerts else OFF, True))
            out.append((area.attributes_topic, _attributes(alerts), True))
            if area.count_topic is not None:
                out.append((area.count_topic, str(len(alerts)), True))
        return out


def _attributes(alerts: Sequence[Alert]) -> str:
    worst = min((a.severity for a in alerts), default=None)
    latest = max(alerts, key=lambda a: (a.last_seen, a.id), default=None)
    listed = sorted(alerts, key=lambda a: (a.severity, -a.last_seen, a.id))[:MAX_LISTED_ALERTS]
    body: dict[str, Any] = {
        "count": len(alerts),
        "unacknowledged": sum(1 for a in alerts if a.state != AlertState.ACKNOWLEDGED),
        "highest_severity": int(worst) if worst is not None else None,
        "highest_severity_zh": Severity(worst).label_zh if worst is not None else "",
        "latest_message": latest.message_zh if latest else "",
        "latest_at": latest.last_seen if latest else None,
        "alerts": [
            {"id": a.id, "rule": a.rule, "severity": int(a.severity), "state": a.state.value, "message": a.message_zh}
            for a in listed
        ],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _calming(key: str, payload: str) -> bool:
    """Whether a state says all is well: all a test event may set. A detector smoked or a door
    opened in test mode must not start Home Assistant's automations (a siren, a message to the
    family), as it raises no alert here; like the rules, a test may calm but never alarm."""
    if SLOTS[key].component != "binary_sensor":
        return True  # a reading (the battery's percent) is true whether tested or not
    return payload == (ON if key == "connectivity" else OFF)


def _event_states(event: Event) -> list[tuple[str, str]]:
    """(slot key, payload) for what the event says, whatever the device announces."""
    kind, values = event.kind, event.values
    for slot in ("smoke", "gas", "water", "fall", "door", "sos", "tamper", "connectivity"):
        s = SLOTS[slot]
        if kind in s.on:
            return [(slot, ON)]
        if kind in s.off:
            return [(slot, OFF)]
    match kind:
        case Kind.PRESENCE:
            present = values.get("present")
            return [("presence", ON if present else OFF)] if isinstance(present, bool) else []
        case Kind.MOTION:
            state = values.get("state")
            if isinstance(state, str):
                return [("motion", ON if state == "moving" else OFF)]
            moving = values.get("moving")
            if isinstance(moving, bool):
                return [("motion", ON if moving else OFF)]
            # A PIR trigger carries nothing; a body-movement level alone says too little.
            return [] if "level" in values else [("motion", ON)]
        case Kind.BATTERY:
            percent = _number(values.get("battery"))
            if percent is None:
                return []
            out = [("battery", f"{percent:g}")]
            if percent < BATTERY_LOW_BELOW:
                out.append(("battery_low", ON))
            elif percent >= BATTERY_OK_FROM:
                out.append(("battery_low", OFF))
            return out
        case Kind.BATTERY_LOW:
            return [("battery_low", ON)]
        case Kind.SENSOR_FAULT:
            return [("fault", ON)]
        case Kind.HEARTBEAT:
            status = values.get("status")
            if status == "ok":
                return [("fault", OFF)]
            return [("fault", ON)] if status == "fault" else []
    return []


# --------------------------------------------------------------------------------------------
# The pure API


def build_plan(config: SiteConfig, settings: HaSettings | None = None) -> Plan:
    return Plan(config, settings or settings_of(config))


def discovery_messages(config: SiteConfig, settings: HaSettings | None = None) -> list[Message]:
    """Every retained discovery config the site announces: ``(topic, JSON, True)``."""
    return build_plan(config, settings).discovery()


def state_messages(event: Event, config: SiteConfig, settings: HaSettings | None = None) -> list[Message]:
    """The entity states ``event`` implies: ``(topic, "ON" | "OFF" | number, retain)``.
    Triggers (``off_delay`` entities) are not retained. Build a ``Plan`` once instead when
    translating many events."""
    return build_plan(config, settings).states(event)


def alert_state_messages(
    open_alerts: Iterable[Alert], config: SiteConfig, settings: HaSettings | None = None
) -> list[Message]:
    """State and attributes of every alert entity (each household, building and the site) for
    this set of open alerts: areas without one get ``OFF`` and a count of 0."""
    return build_plan(config, settings).alert_states(open_alerts)


# --------------------------------------------------------------------------------------------
# The runner


class HaBridge:
    """Keeps Home Assistant in step: announces, re-announces on its birth, publishes states.

    ``publish(topic, payload, retain)`` is injected; an exception from it ends ``run`` (the
    runtime reconnects and runs again, which announces again). States not yet published stay
    pending across that. ``update`` / ``update_alerts`` / ``note_alert`` never block: they
    record the new states and wake the publishing loop.
    """

    def __init__(self, config: SiteConfig, publish: Publish, settings: HaSettings | None = None) -> None:
        self.settings = settings or settings_of(config)
        self.plan = build_plan(config, self.settings)
        self.publish = publish
        self.announcements = 0  # completed announcements (start, births, reconnects)
        self._retained: dict[str, str] = {}  # last retained state per topic, re-sent on announce
        # Not yet published, by topic, oldest first: a newer state replaces an older one, so
        # this stays bounded (one entry per entity) while the broker is away.
        self._pending: dict[str, tuple[str, bool]] = {}
        self._open: dict[str, Alert] = {}
        self._alert_states: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._configs = {e.config_topic for e in self.plan.entities}
        d = re.escape(self.settings.discovery_prefix)
        self._ours = re.compile(rf"^{d}/[A-Za-z0-9_-]+/{re.escape(self.plan.node)}/[A-Za-z0-9_-]+/config$")

    def subscriptions(self) -> list[str]:
        """Topic filters the runtime subscribes to and feeds to ``run`` / ``on_message``: Home
        Assistant's status, and this gateway's retained configs (to delete stale ones)."""
        return [self.settings.status_topic, f"{self.settings.discovery_prefix}/+/{self.plan.node}/+/config"]

    # ------------------------------------------------------------------ recording (sync)

    def update(self, events: Iterable[Event]) -> None:
        """States of stored events, published by the running loop."""
        for event in events:
            for msg in self.plan.states(event):
                self._queue(msg)

    def update_alerts(self, open_alerts: Iterable[Alert]) -> None:
        """Replace the set of open alerts (at start: ``store.alerts(open_only=True)``)."""
        self._open = {a.id: a for a in open_alerts if a.state != AlertState.RESOLVED}
        self._refresh_alerts()

    def note_alert(self, alert: Alert) -> None:
        """One alert changed (a transition): resolved ones leave the open set."""
        if alert.state == AlertState.RESOLVED:
            self._open.pop(alert.id, None)
        else:
            self._open[alert.id] = alert
        self._refresh_alerts()

    def _refresh_alerts(self) -> None:
        for topic, payload, retain in self.plan.alert_states(self._open.values()):
            if self._alert_states.get(topic) != payload:
                self._alert_states[topic] = payload
                self._queue((topic, payload, retain))

    def _queue(self, msg: Message) -> None:
        topic, payload, retain = msg
        if retain:
            self._retained[topic] = payload
        self._pending.pop(topic, None)
        self._pending[topic] = (payload, retain)
        self._wake.set()

    # ------------------------------------------------------------------ publishing

    async def announce(self) -> None:
        """Every discovery config, then every known retained state."""
        async with self._lock:
            for topic, payload, retain in self.plan.discovery():
                await self.publish(topic, payload, retain)
            # Retained states are re-sent from the cache; pending triggers go out too.
            pending, self._pending = self._pending, {}
            try:
                for topic, payload in list(self._retained.items()):
                    await self.publish(topic, payload, True)
                for topic, (payload, retain) in pending.items():
                    if not retain:
                        await self.publish(topic, payload, False)
            except BaseException:
                self._pending = pending | self._pending
                raise
            self.announcements += 1

    async def flush(self) -> None:
        """Publish what was recorded since the last flush, in order."""
        async with self._lock:
            while self._pending:
                topic, (payload, retain) = next(iter(self._pending.items()))
                await self.publish(topic, payload, retain)
                if self._pending.get(topic) == (payload, retain):  # not replaced meanwhile
                    del self._pending[topic]

    async def on_message(self, topic: str, payload: bytes | str) -> None:
        """A message on one of ``subscriptions()``."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes | bytearray) else str(payload)
        if topic == self.settings.status_topic:
            if text.strip() == "online":
                await self.announce()
        elif text and topic not in self._configs and self._ours.match(topic):
            # A retained config of ours from an earlier configuration: the device is gone.
            async with self._lock:
                await self.publish(topic, "", True)

    async def run(self, messages: AsyncIterable[tuple[str, bytes | str]]) -> None:
        """Announce, then publish recorded states as they come and handle ``messages`` (from
        the subscriptions) until either ends or fails."""
        await self.announce()
        flusher = asyncio.ensure_future(self._flush_forever())
        consumer = asyncio.ensure_future(self._consume(messages))
        try:
            done, _ = await asyncio.wait({flusher, consumer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (flusher, consumer):
                task.cancel()
            await asyncio.gather(flusher, consumer, return_exceptions=True)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def _consume(self, messages: AsyncIterable[tuple[str, bytes | str]]) -> None:
        async for topic, payload in messages:
            await self.on_message(topic, payload)
