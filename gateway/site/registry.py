"""The device registry: which device a message is from, where it is, and who lives there.

Built once from the validated config. ``decode`` turns one MQTT message into normalised
events, or raises ``PayloadError`` (``UnknownDeviceError`` for a well-formed message from a
device the registry does not know). Topics the gateway has no business with (the
zigbee2mqtt bridge's own topics, ``/set`` and ``/get``) decode to nothing.

Wired devices — on their own serial port (``serial = {…}``), on a Modbus bus
(``modbus = {…}``) or on an OSDP bus (``osdp = {…}``) — get their entry and location like MQTT
ones; ``serial_devices``, ``modbus_devices`` and ``osdp_devices`` list them and
``device_events`` makes their events from what their driver decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from paho.mqtt.client import topic_matches_sub

from drivers import native, rtl433, zigbee2mqtt
from gateway.errors import PayloadError, UnknownDeviceError
from gateway.models import Event, Family, Location, Observation
from gateway.site.checkin import checkin_topic, decode_checkin
from gateway.site.config import Device, Household, NativeSource, Resident, Rtl433Source, SiteConfig, Zigbee2MqttSource


def device_location(device: Device, households: Mapping[str, Household]) -> Location:
    """Where a device is, as alerts and dashboards name it: its household's building, unit and
    door number, or its own building for a public area."""
    house = households.get(device.household)
    return Location(
        building=house.building if house else device.building,
        unit=house.unit if house else "",
        household=(house.number or house.id) if house else "",
        room=device.room,
    )


# The families whose devices' messages take the alarm lane with ``alarm_lane = true``
# (gateway/ingest/lane.py): those that raise alarms for people. Door contacts and presence
# sensors raise alarms too (forced, tamper), but talk all day: with them the lane would queue like
# the main connection. Fall radars talk too (presence): a site can leave them out.
LANE_FAMILIES = frozenset({Family.FALL, Family.SMOKE, Family.SOS, Family.GAS, Family.WATER})

# A device clock further than this from the gateway's is not trusted (unset RTC, wrong zone).
MAX_CLOCK_SKEW = 24 * 3600.0
RAW_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    id: str
    family: Family
    model: str
    location: Location
    config: Device
    residents: tuple[Resident, ...] = field(default_factory=tuple)


class Registry:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        households = {h.id: h for h in config.households}
        residents: dict[str, list[Resident]] = {}
        for r in config.residents:
            residents.setdefault(r.household, []).append(r)
        self.residents_by_household: Mapping[str, tuple[Resident, ...]] = {k: tuple(v) for k, v in residents.items()}
        self.households = households
        self.devices: dict[str, DeviceEntry] = {}
        self._z2m: dict[str, DeviceEntry] = {}
        self._z2m_actions: dict[str, Mapping[str, str]] = {}  # buttons with an action table of their own
        self._rtl: dict[tuple[str, str, str], DeviceEntry] = {}
        self.serial_devices: dict[str, DeviceEntry] = {}
        self.modbus_devices: dict[str, DeviceEntry] = {}
        self.osdp_devices: dict[str, DeviceEntry] = {}
        for d in config.devices:
            location = device_location(d, households)
            entry = DeviceEntry(d.id, d.family, d.model, location, d, self.residents_by_household.get(d.household, ()))
            self.devices[d.id] = entry
            if d.serial is not None:
                self.serial_devices[d.id] = entry
            elif d.modbus is not None:
                self.modbus_devices[d.id] = entry
            elif d.osdp is not None:
                self.osdp_devices[d.id] = entry
            elif isinstance(d.mqtt, Zigbee2MqttSource):
                self._z2m[d.mqtt.friendly_name] = entry
                if d.mqtt.actions is not None:
                    self._z2m_actions[d.mqtt.friendly_name] = d.mqtt.actions
            elif isinstance(d.mqtt, Rtl433Source):
                self._rtl[(d.model, d.mqtt.id, d.mqtt.channel)] = entry
        m = config.mqtt
        self._z2m_prefix = m.zigbee2mqtt_base.rstrip("/") + "/"
        self._native_prefix = m.native_base.rstrip("/") + "/"
        self._rtl_topic = m.rtl_433_topic
        self._checkin_topic = checkin_topic(config)

    def subscriptions(self) -> list[str]:
        """Topic filters the ingest subscribes to (wildcards, so unknown devices are seen and counted)."""
        subs = []
        # With no MQTT device configured (an empty site, or wired devices only), subscribe to
        # every format: a device publishing anyway is seen and counted as unknown.
        none = all(d.config.mqtt is None for d in self.devices.values())
        if self._z2m or none:
            subs.append(self._z2m_prefix + "#")
        if self._rtl or none:
            subs.append(self._rtl_topic)
        if any(isinstance(d.config.mqtt, NativeSource) for d in self.devices.values()) or none:
            subs.append(self._native_prefix + "+")
        if self.config.visitors:
            subs.append(self._checkin_topic)  # visit check-ins (docs/visits.md)
        return subs

    def lane_topics(self) -> tuple[frozenset[str], str]:
        """The exact topics of the devices whose messages take the alarm lane (``[mqtt]
        alarm_lane``, gateway/ingest/lane.py), and a digest of them: the families it names
        (``true``: those that raise alarms for people), on zigbee2mqtt (state and availability:
        a device's messages stay in order) or native MQTT. rtl_433 devices share one topic, so
        theirs stay on the main one. None when the lane is off."""
        chosen = self.config.mqtt.alarm_lane
        families = LANE_FAMILIES if chosen is True else frozenset(chosen or ())
        topics: set[str] = set()
        for d in self.devices.values():
            if d.family not in families:
                continue
            src = d.config.mqtt
            if isinstance(src, Zigbee2MqttSource):
                topics |= {self._z2m_prefix + src.friendly_name, f"{self._z2m_prefix}{src.friendly_name}/availability"}
            elif isinstance(src, NativeSource):
                topics.add(self._native_prefix + d.id)
        digest = hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:32]
        return frozenset(topics), digest

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[Event]:
        if topic == self._checkin_topic and self.config.visitors:
            return [decode_checkin(self.config, payload, received_at)]
        if topic.startswith(self._z2m_prefix):
            return self._decode_z2m(topic[len(self._z2m_prefix) :], payload, received_at)
        if topic_matches_sub(self._rtl_topic, topic):
            return self._decode_rtl(payload, received_at)
        if topic.startswith(self._native_prefix):
            return self._decode_native(topic[len(self._native_prefix) :], payload, received_at)
        raise PayloadError("unexpected_topic", f"no payload format is configured for topic {topic!r}")

    def _decode_z2m(self, rest: str, payload: bytes, received_at: float) -> list[Event]:
        if rest.startswith("bridge/") or rest.endswith(("/set", "/get")):
            return []
        if rest.endswith("/availability"):
            entry = self._z2m_entry(rest[: -len("/availability")])
            obs = [zigbee2mqtt.decode_availability(payload)]
        else:
            entry = self._z2m_entry(rest)
            obs = zigbee2mqtt.decode_state(payload, entry.model, self._z2m_actions.get(rest))
        return self._events(entry, obs, payload, received_at, "zigbee2mqtt")

    def _z2m_entry(self, name: str) -> DeviceEntry:
        entry = self._z2m.get(name)
        if entry is None:
            raise UnknownDeviceError(f"zigbee2mqtt device {name!r} is not in the registry")
        return entry

    def _decode_rtl(self, payload: bytes, received_at: float) -> list[Event]:
        msg = rtl433.parse(payload)
        model, dev_id, channel = rtl433.device_key(msg)
        # A device configured without a channel matches any channel.
        entry = self._rtl.get((model, dev_id, channel)) or self._rtl.get((model, dev_id, ""))
        if entry is None:
            raise UnknownDeviceError(
                f"rtl_433 device model={model!r} id={dev_id!r} channel={channel!r} is not in the registry"
            )
        src = entry.config.mqtt
        codes = src.codes if isinstance(src, Rtl433Source) else None
        return self._events(entry, rtl433.decode(msg, codes), payload, received_at, "rtl_433")

    def _decode_native(self, device_id: str, payload: bytes, received_at: float) -> list[Event]:
        entry = self.devices.get(device_id)
        if entry is None or not isinstance(entry.config.mqtt, NativeSource):
            raise UnknownDeviceError(f"native device {device_id!r} is not in the registry")
        msg = native.decode(payload)
        if msg.device is not None and msg.device != device_id:
            raise PayloadError(
                "device_mismatch",
                f"payload names device {msg.device!r} but was published on {device_id!r}'s topic",
            )
        return self._events(entry, list(msg.observations), payload, received_at, "native")

    def device_events(
        self, device_id: str, observations: list[Observation], raw: bytes | str, received_at: float, source: str
    ) -> list[Event]:
        """Events of a wired (serial, Modbus or OSDP) device from what its driver decoded.

        ``raw`` is kept as the event's ``raw``: a frame (bytes) in hex, or the text the driver
        gives (a Modbus poll's registers in hex)."""
        entry = self.devices[device_id]
        if entry.config.mqtt is not None:
            raise ValueError(f"{device_id} is an MQTT device: its events come from decode()")
        text = raw[: RAW_LIMIT // 3].hex(" ") if isinstance(raw, bytes) else raw[:RAW_LIMIT]
        return self._events(entry, observations, b"", received_at, source, raw=text)

    @staticmethod
    def _events(
        entry: DeviceEntry,
        observations: list[Observation],
        payload: bytes,
        received_at: float,
        source: str,
        raw: str | None = None,
    ) -> list[Event]:
        if raw is None:
            raw = payload[:RAW_LIMIT].decode("utf-8", errors="replace")
        device_id, family, model, location = entry.id, entry.family, entry.model, entry.location
        events = []
        for obs in observations:
            values = dict(obs.values)
            device_time = obs.device_time
            if device_time is None:
                event_time, time_source = received_at, "gateway"
            elif abs(device_time - received_at) <= MAX_CLOCK_SKEW:
                event_time, time_source = device_time, "device"
            else:
                event_time, time_source = received_at, "gateway"
                values["device_time"] = device_time  # kept for diagnosis, not trusted
            # positional: the order of Event's fields
            events.append(
                Event(
                    device_id,
                    family,
                    obs.kind,
                    event_time,
                    received_at,
                    model,
                    location,
                    values,
                    time_source,
                    source,
                    raw,
                )
            )
        return events
