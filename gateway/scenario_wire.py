"""Wire steps of a scenario: what a real device puts on the wire, fed to the gateway's own ingest.

A scenario step (scenarios/README.md) may be a message as it arrives, instead of an event as the
rules see it. Each kind goes through the code the running gateway uses for it, so a scenario
notices when what a device says and what the rules believe disagree:

- ``mqtt = {topic, payload, qos, retain, dup}``: one MQTT message, committed by
  ``gateway.ingest.mqtt.MqttIngest``'s commit (duplicate and retained handling, the registry's
  ``decode`` — zigbee2mqtt, rtl_433, native, visit check-ins — and ``malformed.<reason>``
  counting for a ``PayloadError``), then handed on as the ingest's writer does;
- ``serial = {device, hex}``: bytes read from a serial radar's port, cut into frames by
  ``SerialLink.receive`` (the codec's ``split``: several frames, a frame split over two steps,
  noise, a bad checksum) and made into events by ``SerialIngest.serial_item`` (the codec's
  ``decode``, the radar latch, the registry);
- ``modbus = {device, registers}``: a Modbus detector's registers, read by one
  ``ModbusBus.poll`` through a twin client (the profile's ``decode``, the edge filter, online);
  the registers keep their values between steps (0 until set), as a detector's do;
- ``osdp = {device, bits, card}`` / ``{device, door}`` / ``{device, tamper}``: a card read, a
  door-contact change or the tamper switch at an OSDP reader, as the libosdp event the control
  panel receives, handed to ``SerialIngest.osdp_item`` (``parse_event``, the Wiegand
  credential, who may open the door, the door's state machine).

Events are committed by the ingest's own writer and handed to the scenario's ``on_stored``,
the runtime's alert and visit path. Everything runs on the scenario's ``VirtualClock``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from drivers.modbus_bus import Detector
from drivers.osdp_door import CARD_RAW, CARD_WIEGAND, EVENT_CARDREAD, EVENT_STATUS, STATUS_INPUT, STATUS_LOCAL
from drivers.osdp_link import PdEvent, PdUp
from drivers.serial_link import Frames
from gateway.clock import Clock
from gateway.ingest.mqtt import MqttIngest, _Message
from gateway.ingest.serial import SerialIngest
from gateway.models import Event
from gateway.site.config import SiteConfig, site_profiles
from gateway.site.registry import Registry
from gateway.store import Store

WIRE_KEYS = ("mqtt", "serial", "modbus", "osdp")


@dataclass(frozen=True, slots=True)
class MqttStep:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    dup: bool = False  # a redelivery of the last message with this topic and payload


@dataclass(frozen=True, slots=True)
class SerialStep:
    device: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ModbusStep:
    device: str
    registers: Mapping[int, int]  # wire address → value, set before the poll


@dataclass(frozen=True, slots=True)
class OsdpStep:
    device: str
    event: Mapping[str, Any]  # a libosdp event dict (drivers.osdp_door.parse_event reads it)


WireStep = MqttStep | SerialStep | ModbusStep | OsdpStep


# ---------------------------------------------------------------------- parsing


def parse_wire(key: str, raw: object, where: str, registry: Registry) -> WireStep:
    """The ``key = {…}`` table of a wire step; ``ValueError`` says what is wrong."""
    where = f"{where}.{key}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table")
    if key == "mqtt":
        return _mqtt(raw, where)
    device = str(_get(raw, "device", where))
    if key == "serial":
        _only(raw, {"device", "hex"}, where)
        if device not in registry.serial_devices:
            raise ValueError(f"{where}.device: no serial device {device!r} in the site")
        return SerialStep(device, _hex(_get(raw, "hex", where), f"{where}.hex"))
    if key == "modbus":
        _only(raw, {"device", "registers"}, where)
        return _modbus(raw, device, where, registry)
    _only(raw, {"device", "bits", "card", "format", "door", "exit", "tamper"}, where)
    entry = registry.osdp_devices.get(device)
    if entry is None or entry.config.osdp is None:
        raise ValueError(f"{where}.device: no OSDP reader {device!r} in the site")
    return OsdpStep(device, _osdp_event(raw, entry.config.osdp.door_input, entry.config.osdp.rex_input, where))


def _mqtt(raw: dict[str, Any], where: str) -> MqttStep:
    _only(raw, {"topic", "payload", "qos", "retain", "dup"}, where)
    payload = _get(raw, "payload", where)
    if isinstance(payload, dict | list):
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=_json_time)
    elif isinstance(payload, str):
        text = payload
    else:
        raise ValueError(f"{where}.payload: expected a string or a table")
    qos = raw.get("qos", 1)
    if qos not in (0, 1, 2):
        raise ValueError(f"{where}.qos: expected 0, 1 or 2")
    flags = {k: raw.get(k, False) for k in ("retain", "dup")}
    if any(not isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"{where}: retain and dup are true or false")
    return MqttStep(str(_get(raw, "topic", where)), text.encode(), int(qos), flags["retain"], flags["dup"])


def _json_time(value: object) -> str:
    """TOML date-times in a table payload become ISO 8601 text (native ``time``, Z2M ``last_seen``)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"{value!r} cannot be written as JSON")


def _modbus(raw: dict[str, Any], device: str, where: str, registry: Registry) -> ModbusStep:
    entry = registry.modbus_devices.get(device)
    if entry is None or entry.config.modbus is None:
        raise ValueError(f"{where}.device: no Modbus detector {device!r} in the site")
    profile = site_profiles(registry.config)[entry.config.modbus.profile]
    table = _get(raw, "registers", where)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where}.registers: expected a table such as {{ 0x6000 = 0x8002 }}")
    registers: dict[int, int] = {}
    for name, value in table.items():
        try:
            address = int(str(name), 0)
        except ValueError:
            raise ValueError(f"{where}.registers: {name!r} is not a register address (0x6000 or 24576)") from None
        if not any(r.address <= address < r.address + r.count for r in profile.reads):
            raise ValueError(f"{where}.registers: {address:#06x} is not read by profile {profile.model}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValueError(f"{where}.registers.{name}: expected 0–65535")
        registers[address] = value
    return ModbusStep(device, registers)


def _osdp_event(raw: dict[str, Any], door_input: int, rex_input: int, where: str) -> dict[str, Any]:
    """The libosdp event a reader's report arrives as (shapes: drivers/osdp_door.py)."""
    given = [k for k in ("card", "door", "tamper") if k in raw]
    if len(given) != 1:
        raise ValueError(f"{where}: give one of card (with bits), door or tamper")
    if "card" in raw:
        bits = raw.get("bits")
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise ValueError(f"{where}.bits: the card's bit count (26 for a W26 card)")
        fmt = {"wiegand": CARD_WIEGAND, "raw": CARD_RAW}.get(str(raw.get("format", "wiegand")))
        if fmt is None:
            raise ValueError(f'{where}.format: "wiegand" (default) or "raw"')
        data = _hex(raw["card"], f"{where}.card")
        return {"event": EVENT_CARDREAD, "reader_no": 0, "format": fmt, "direction": 0, "length": bits, "data": data}
    if "door" in raw:
        if raw["door"] not in ("open", "closed") or not isinstance(raw.get("exit", False), bool):
            raise ValueError(f'{where}: door = "open" or "closed", exit = true or false (the exit button)')
        report = bytearray(max(door_input, rex_input) + 1)
        report[door_input] = raw["door"] == "open"
        if rex_input >= 0:
            report[rex_input] = bool(raw.get("exit", False))
        return {"event": EVENT_STATUS, "type": STATUS_INPUT, "report": bytes(report)}
    if not isinstance(raw["tamper"], bool):
        raise ValueError(f"{where}.tamper: true or false")
    return {"event": EVENT_STATUS, "type": STATUS_LOCAL, "report": bytes((raw["tamper"], 0))}


def _hex(value: object, where: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise ValueError(f'{where}: expected bytes in hex, e.g. "53 59 83 01 00 01 01 32 54 43"') from None


def _get(raw: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise ValueError(f"{where}.{key}: missing")
    return raw[key]


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown keys {extra} (allowed: {sorted(allowed)})")


# ---------------------------------------------------------------------- feeding


@dataclass(slots=True)
class Answer:
    registers: list[int]

    def isError(self) -> bool:
        return False


@dataclass(slots=True)
class RegisterTwin:
    """A detector's registers behind the ``drivers.modbus_bus.Client`` interface: every read is
    answered from ``bank`` (0 for a register never set)."""

    bank: dict[int, int] = field(default_factory=dict)
    connected: bool = True

    async def connect(self) -> bool:
        return True

    def close(self) -> None:
        return None

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Answer:
        return Answer([self.bank.get(a, 0) for a in range(address, address + count)])

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Answer:
        return await self.read_holding_registers(address, count=count, device_id=device_id)


@dataclass(slots=True)
class Broker:
    """What outlives a gateway restart: packet ids (a redelivery reuses its message's) and the
    detectors' registers."""

    mids: dict[tuple[str, bytes], int] = field(default_factory=dict)
    next_mid: int = 1
    registers: dict[str, RegisterTwin] = field(default_factory=dict)


class Wire:
    """One boot's ingest: the MQTT commit, the serial links, the Modbus buses and the OSDP
    readers of the site, fed step by step. A restart makes a new one (read buffers, radar
    latches, door machines and edge filters start empty, as in a new process)."""

    def __init__(
        self,
        config: SiteConfig,
        registry: Registry,
        store: Store,
        clock: Clock,
        on_stored: Callable[[list[Event]], Awaitable[None]],
        broker: Broker,
    ) -> None:
        self.clock = clock
        self.on_stored = on_stored
        self.broker = broker
        self.mqtt = MqttIngest(config, registry, store, clock, {}, on_stored)
        self.serial = SerialIngest(config, registry, store, clock, {}, on_stored)
        self.buffers: dict[str, bytearray] = {}
        self.readers_up: set[str] = set()
        self.modbus: dict[str, tuple[str, Detector]] = {
            det.device_id: (bus_id, det) for bus_id, bus in self.serial.buses.items() for det in bus.devices
        }
        self.osdp = {device: (bus, address) for bus, doors in self.serial.osdp_doors.items()
                     for address, (device, _) in doors.items()}  # fmt: skip

    async def feed(self, step: WireStep) -> None:
        """One step, committed and handed on before this returns."""
        if isinstance(step, MqttStep):
            await self.deliver([step])
        elif isinstance(step, SerialStep):
            link = self.serial.links[step.device]
            items = link.receive(self.buffers.setdefault(step.device, bytearray()), step.data)
            # No whole frame (noise, a bad checksum, half a frame): the runtime keeps the counts
            # for the next frame; a scenario stores them now so that it can expect them.
            for item in items or [Frames(self.clock.now(), ())]:
                await self.serial.serial_item(step.device, item)
            await self.serial.drain()
        elif isinstance(step, ModbusStep):
            bus_id, det = self.modbus[step.device]
            twin = self.broker.registers.setdefault(step.device, RegisterTwin())
            twin.bank.update(step.registers)
            emit, self.serial.buses[bus_id].on_malformed = self.serial.modbus_handlers(bus_id)
            await self.serial.buses[bus_id].poll(twin, det, emit)
            await self.serial.drain()
        else:
            bus_id, address = self.osdp[step.device]
            if step.device not in self.readers_up:  # the reader answers the panel's first poll
                self.readers_up.add(step.device)
                await self.serial.osdp_item(bus_id, PdUp(address, self.clock.now()))
            await self.serial.osdp_item(bus_id, PdEvent(address, self.clock.now(), step.event))
            await self.serial.drain()

    async def deliver(self, steps: list[MqttStep]) -> None:
        """MQTT messages as one batch of the ingest's writer (messages the broker held while the
        gateway was down arrive together at boot)."""
        batch = []
        for s in steps:
            key = (s.topic, s.payload)
            mid = self.broker.mids.get(key) if s.dup else None
            if mid is None:
                mid = self.broker.mids[key] = self.broker.next_mid
                self.broker.next_mid = self.broker.next_mid % 65535 + 1
            batch.append(_Message(0, mid, s.qos, s.dup, s.retain, s.topic, s.payload))
        # The ingest's own commit decides each message (gateway/ingest/mqtt.py), so a scenario
        # follows the runtime when that decision changes.
        stored, _ = await self.mqtt._commit(batch)
        if stored:
            await self.on_stored(stored)
