"""Simulated devices: each holds its state and speaks through the real codec.

A simulator never writes a payload itself. It builds ``Observation`` values and hands them to
the same codec the gateway decodes with (``drivers.zigbee2mqtt.encode_state``,
``drivers.rtl433.encode``, ``drivers.native.encode``), so a fake device and the real driver
cannot drift apart. Every method returns the ``Message`` values a real device (or its bridge)
would publish, possibly none (a 433 MHz door contact that has no "closed" code sends nothing
when the door closes).

The interface is per family, so the activity model does not care about the format:

=================  ====================================================================
``DoorSim``        ``open()``, ``close()``; ``AccessControllerSim`` adds ``grant()``, ``deny()``
``SmokeSim``       ``alarm()``, ``clear()``, ``test()``, ``tamper()``
``FallSim``        ``fall()``, ``suspect()``, ``clear()``, ``presence()``, ``residence()``
``SosSim``         ``press()``, ``cancel()``
every device       ``check_in()`` (periodic report), ``availability()``, ``battery_low()``
=================  ====================================================================

``SIMULATORS`` maps ``(model, family)`` to the class for zigbee2mqtt and rtl_433 models;
native devices (any model name) are chosen by family in ``NATIVE_SIMULATORS``. Use
``simulator_for(device, mqtt)``. Each message says what the gateway should decode it to
(``Message.kinds``); the tests hold every simulator to that through the registry's decoder.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from drivers import native, rtl433, zigbee2mqtt
from gateway.errors import PayloadError
from gateway.models import Family, Kind, Observation, Scalar
from gateway.site.config import Device, MqttSettings, NativeSource, Rtl433Source, Zigbee2MqttSource

RTL_433_HOST = "rtl-sdr-1"  # rtl_433 publishes on rtl_433/<host>/events; the host is any name

# Code tables a device of these (model, family) pairs needs in its config, because the model's
# built-in table does not say it (EV1527 key codes are vendor-specific; Honeywell's "alarm" bit
# means what the sensor is). The demo site and the tests use them.
EXAMPLE_CODES: dict[tuple[str, Family], dict[str, str]] = {
    ("Generic-Remote", Family.SOS): {"0x0c": "sos_pressed", "0x03": "sos_cancelled"},
    ("Chuango-Security", Family.SMOKE): {"11": "smoke_alarm"},  # "24H Zone": SMK-500
    ("Honeywell-Security", Family.SMOKE): {"alarm": "smoke_alarm"},
    ("Honeywell-Security", Family.SOS): {"alarm": "sos_pressed"},
    ("Interlogix-Security", Family.SMOKE): {"switch1": "smoke_alarm"},
    ("Interlogix-Security", Family.SOS): {"switch1": "sos_pressed"},
}


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish: where, what, and what the gateway should decode it to."""

    topic: str
    payload: bytes
    device_id: str
    family: Family
    kinds: tuple[Kind, ...]
    retain: bool = False


Stamp = Callable[[], float | None]


def _no_stamp() -> float | None:
    return None


def rtl_433_events_topic(mqtt: MqttSettings, host: str = RTL_433_HOST) -> str:
    """The topic an rtl_433 on ``host`` publishes on, given the gateway's subscription filter."""
    levels = mqtt.rtl_433_topic.split("/")
    out = [host if level == "+" else level for level in levels]
    if out and out[-1] == "#":
        out[-1] = "events"
    return "/".join(out)


class SimDevice:
    """Common state (identity, battery, link quality, online) and the two hooks a format fills in.

    Family classes change the device's state and call ``_report(event)``; the format decides
    what goes on the wire: zigbee2mqtt the whole cached state, an rtl_433 flag model every
    flag, an EV1527 code model and the native format just the event.
    """

    family: ClassVar[Family]

    def __init__(
        self,
        device: Device,
        mqtt: MqttSettings,
        *,
        rng: random.Random | None = None,
        stamp: Stamp = _no_stamp,
        rtl_433_host: str = RTL_433_HOST,
    ) -> None:
        if device.family != self.family:
            raise ValueError(f"{type(self).__name__} simulates {self.family} devices, not {device.family}")
        self.device = device
        self.mqtt = mqtt
        self.rng = rng if rng is not None else random.Random(device.id)
        self.stamp = stamp  # wall-clock time of the current event, for formats that carry one
        self.rtl_433_host = rtl_433_host
        self.online = True
        self.battery: float = float(self.rng.randint(55, 100))
        self.low = False  # the battery has been reported low
        self.tampered = False
        self._setup()

    def _setup(self) -> None:
        """State of the family and the format; subclasses extend it cooperatively."""

    @property
    def id(self) -> str:
        return self.device.id

    def _message(
        self, topic: str, payload: bytes, observations: Sequence[Observation], retain: bool = False
    ) -> Message:
        kinds = tuple(o.kind for o in observations)
        return Message(topic, payload, self.device.id, self.family, kinds, retain)

    # -- filled in by the family -------------------------------------------------------------
    def _state(self) -> list[Observation]:
        """The device's level states (door closed, no smoke, nobody there …)."""
        return []

    # -- filled in by the format -------------------------------------------------------------
    def can(self, kind: Kind) -> bool:
        """Whether this device, with its format and config, can report ``kind``."""
        raise NotImplementedError

    def _report(self, *events: Observation) -> list[Message]:
        """What the device publishes after ``events`` (its state is already updated)."""
        raise NotImplementedError

    # -- supervision, every family -----------------------------------------------------------
    def check_in(self) -> list[Message]:
        """The periodic report that says the device is alive (none from an EV1527 sensor)."""
        return []

    def availability(self, online: bool, legacy: bool = False) -> list[Message]:
        """The bridge's availability message for this device, if its format has one."""
        self.online = online
        return []

    def drain(self, percent: float) -> None:
        self.battery = max(0.0, self.battery - percent)

    def battery_low(self) -> list[Message]:
        """The battery has run down: report it (and every later report says so)."""
        self.battery = min(self.battery, float(self.rng.randint(5, 12)))
        self.low = True
        return self._report(Observation(Kind.BATTERY_LOW)) if self.can(Kind.BATTERY_LOW) else []

    def _maybe(self, event: Observation) -> list[Message]:
        return self._report(event) if self.can(event.kind) else []


# ============================================================================ families


class DoorSim(SimDevice):
    family = Family.DOOR

    def _setup(self) -> None:
        super()._setup()
        self.is_open = False

    def open(self) -> list[Message]:
        self.is_open = True
        return self._maybe(Observation(Kind.DOOR_OPENED))

    def close(self) -> list[Message]:
        """A contact with no "closed" message (Chuango, Kerui without it) sends nothing."""
        self.is_open = False
        return self._maybe(Observation(Kind.DOOR_CLOSED))

    def tamper(self, on: bool = True) -> list[Message]:
        """The cover was opened (防拆) or closed again."""
        self.tampered = on
        return self._maybe(Observation(Kind.TAMPER if on else Kind.TAMPER_CLEAR))

    def _state(self) -> list[Observation]:
        return [Observation(Kind.DOOR_OPENED if self.is_open else Kind.DOOR_CLOSED)]


class SmokeSim(SimDevice):
    family = Family.SMOKE

    def _setup(self) -> None:
        super()._setup()
        self.smoke = False

    def alarm(self) -> list[Message]:
        self.smoke = True
        return self._report(Observation(Kind.SMOKE_ALARM))

    def clear(self) -> list[Message]:
        """Smoke gone. Many 433 MHz detectors only ever send the alarm: then nothing."""
        self.smoke = False
        return self._maybe(Observation(Kind.SMOKE_CLEAR))

    def test(self) -> list[Message]:
        """The test button. Where the format has no test message, a real alarm sounds, then clears."""
        for kind in (Kind.SMOKE_TEST, Kind.SELF_TEST):  # the detector's own, or its maker's generic test
            if self.can(kind):
                return self._report(Observation(kind))
        return [*self.alarm(), *self.clear()]

    def tamper(self, on: bool = True) -> list[Message]:
        self.tampered = on
        return self._maybe(Observation(Kind.TAMPER if on else Kind.TAMPER_CLEAR))

    def _state(self) -> list[Observation]:
        return [Observation(Kind.SMOKE_ALARM if self.smoke else Kind.SMOKE_CLEAR)]


class FallSim(SimDevice):
    family = Family.FALL

    def _setup(self) -> None:
        super()._setup()
        self.present = False
        self.fall_state = Kind.FALL_CLEARED

    def fall(self) -> list[Message]:
        self.present = True
        self.fall_state = Kind.FALL_DETECTED
        return self._report(Observation(Kind.FALL_DETECTED))

    def suspect(self) -> list[Message]:
        """A "maybe fall" / "fall warning"; a radar that has none reports nothing."""
        if not self.can(Kind.FALL_SUSPECTED):
            return []
        self.present = True
        self.fall_state = Kind.FALL_SUSPECTED
        return self._report(Observation(Kind.FALL_SUSPECTED))

    def clear(self) -> list[Message]:
        """The person got up: the fall state is back to normal."""
        self.fall_state = Kind.FALL_CLEARED
        return self._report(Observation(Kind.FALL_CLEARED))

    def presence(self, present: bool) -> list[Message]:
        self.present = present
        return self._report(Observation(Kind.PRESENCE, {"present": present}))

    def residence(self) -> list[Message]:
        """Stationary residence (静止驻留) after a fall, where the format has it."""
        return self._maybe(Observation(Kind.RESIDENCE, {"present": True}))

    def _state(self) -> list[Observation]:
        return [Observation(self.fall_state), Observation(Kind.PRESENCE, {"present": self.present})]


class SosSim(SimDevice):
    family = Family.SOS

    def press(self, action: str | None = None) -> list[Message]:
        """One press: an edge, never a level. ``action`` picks a button's raw action (HS1EB "hold")."""
        values: dict[str, Scalar] = {"action": action} if action else {}
        return self._report(Observation(Kind.SOS_PRESSED, values))

    def cancel(self) -> list[Message]:
        return self._maybe(Observation(Kind.SOS_CANCELLED))


# ============================================================================ zigbee2mqtt

_TRANSIENT = frozenset({Kind.SOS_PRESSED, Kind.SOS_CANCELLED})


class Zigbee2MqttDevice(SimDevice):
    """Z2M publishes the device's whole cached state every time (a battery report repeats
    ``"contact": true``), so every message here is the full state, as a real bridge sends it.
    Only a button's ``action`` is an edge."""

    battery_powered: ClassVar[bool] = True

    def _setup(self) -> None:
        super()._setup()
        src = self.device.mqtt
        if not isinstance(src, Zigbee2MqttSource):
            raise ValueError(f"device {self.device.id} is not a zigbee2mqtt device")
        self.spec = zigbee2mqtt.MODELS[self.device.model]
        self.actions: dict[str, str] | None = (
            {action: str(kind) for action, kind in src.actions.items()} if src.actions else None
        )
        self.topic = f"{self.mqtt.zigbee2mqtt_base.rstrip('/')}/{src.friendly_name}"
        self.linkquality = self.rng.randint(40, 200)

    def can(self, kind: Kind) -> bool:
        if self.spec.default_actions is not None and kind in _TRANSIENT:
            # a button's action table is the device's own when its config has one
            return str(kind) in zigbee2mqtt.action_table(self.device.model, self.actions).values()
        return kind in self.spec.emits

    def _full_state(self) -> list[Observation]:
        return [o for o in self._state() if self.can(o.kind)]

    def _supervision(self) -> list[Observation]:
        if not self.battery_powered:
            return []
        values: dict[str, Scalar] = {"battery": round(self.battery)}
        if self.device.model == "MCCGQ11LM":  # Aqara reports the cell voltage (mV) too
            values["voltage"] = 2700 + round(3.2 * self.battery)
        out = [Observation(Kind.BATTERY, values)]
        if self.low:
            out.append(Observation(Kind.BATTERY_LOW))
        return out

    def _report(self, *events: Observation) -> list[Message]:
        edges = [e for e in events if e.kind in _TRANSIENT]
        return self._publish([*edges, *self._full_state()])

    def _publish(self, state: list[Observation]) -> list[Message]:
        obs = [*state, *self._supervision()]
        if not obs:
            return []
        lq = max(0, min(255, self.linkquality + self.rng.randint(-12, 12)))
        obs[0] = Observation(obs[0].kind, {**obs[0].values, zigbee2mqtt.LINKQUALITY: lq}, obs[0].device_time)
        payload = zigbee2mqtt.encode_state(self.device.model, obs, self.actions)
        return [self._message(self.topic, payload, obs)]

    def check_in(self) -> list[Message]:
        return self._publish(self._full_state())

    def availability(self, online: bool, legacy: bool = False) -> list[Message]:
        """Retained ``…/availability``: Z2M 2.x JSON, or the 1.x plain text when ``legacy``."""
        self.online = online
        payload = zigbee2mqtt.encode_availability(online, legacy)
        kind = Kind.ONLINE if online else Kind.OFFLINE
        return [self._message(f"{self.topic}/availability", payload, [Observation(kind)], retain=True)]


class Z2MDoorContact(Zigbee2MqttDevice, DoorSim):
    """Aqara MCCGQ11LM: ``contact: true`` is CLOSED, false OPEN (the codec knows which)."""


class Z2MSmokeDetector(Zigbee2MqttDevice, SmokeSim):
    """HS1SA / TS0205; the TS0205 also reports its tamper switch in every message. The test
    button sets the IAS zone's test bit while held: one message with ``test: true``, then the
    idle state again when it is released."""

    def _setup(self) -> None:
        super()._setup()
        self.testing = False

    def test(self) -> list[Message]:
        if not self.can(Kind.SMOKE_TEST):
            return super().test()
        self.testing = True
        held = self._publish(self._full_state())
        self.testing = False
        return [*held, *self._publish(self._full_state())]

    def _state(self) -> list[Observation]:
        smoke = Observation(Kind.SMOKE_TEST) if self.testing else super()._state()[0]
        return [smoke, Observation(Kind.TAMPER if self.tampered else Kind.TAMPER_CLEAR)]


class Z2MFallRadar(Zigbee2MqttDevice, FallSim):
    """Mains-powered radars: no battery; every message repeats fall state and presence."""

    battery_powered = False

    def _state(self) -> list[Observation]:
        fall, presence = super()._state()
        if self.device.model == "FDS315" and fall.kind != Kind.FALL_DETECTED and self.present:
            # FDS315's single ``status`` field gives the posture too; vary it as the real one does.
            # A posture is presence, not a fall clear: this radar has no way to say "cleared".
            status = self.rng.choice(["occupied", "occupied", "sitting", "on_the_bed", "low_posture"])
            presence = Observation(Kind.PRESENCE, {**presence.values, "status": status})
        return [fall, presence]


class Z2MSosButton(Zigbee2MqttDevice, SosSim):
    """TS0215A_sos (``emergency``) and HS1EB (single/double/hold through the device's table)."""


# ============================================================================ rtl_433

# The idle state a mapped flag also reports (the codec's rule, for ``can``).
_IDLE = {
    Kind.DOOR_OPENED: Kind.DOOR_CLOSED,
    Kind.SMOKE_ALARM: Kind.SMOKE_CLEAR,
    Kind.TAMPER: Kind.TAMPER_CLEAR,
}


class Rtl433Device(SimDevice):
    """A 433 MHz sensor as rtl_433 prints it: one transmission, one message.

    Code models (EV1527: Kerui, Chuango, Generic-Remote) send one code per event and nothing
    in between. Flag models (Honeywell, Interlogix, DSC, Visonic) repeat the sensor's level
    states (contact, tamper, battery) in every transmission and in periodic supervision.
    """

    def _setup(self) -> None:
        super()._setup()
        src = self.device.mqtt
        if not isinstance(src, Rtl433Source):
            raise ValueError(f"device {self.device.id} is not an rtl_433 device")
        self.source = src
        self.spec = rtl433.MODELS[self.device.model]
        self.codes: dict[str, str] | None = {code: str(kind) for code, kind in src.codes.items()} if src.codes else None
        self.topic = rtl_433_events_topic(self.mqtt, self.rtl_433_host)
        table = rtl433.normalise_codes(self.device.model, self.codes)
        emits = set(self.spec.emits) | {Kind(kind) for kind in table.values() if kind}
        if self.spec.flags:
            emits |= {_IDLE[kind] for kind in emits if kind in _IDLE}
        self._emits = frozenset(emits)

    def can(self, kind: Kind) -> bool:
        return kind in self._emits

    def _levels(self) -> list[Observation]:
        """Every level state this device's table lets its flags report."""
        out = [o for o in self._state() if self.can(o.kind)]
        if self.low and self.can(Kind.BATTERY_LOW):
            out.append(Observation(Kind.BATTERY_LOW))
        if self.can(Kind.TAMPER):
            out.append(Observation(Kind.TAMPER if self.tampered else Kind.TAMPER_CLEAR))
        return out

    def _candidates(self, events: Sequence[Observation]) -> list[list[Observation]]:
        if not self.spec.flags:
            return [list(events)] if events else []
        # Which level states the codec prints depends on the device's table (and on
        # Interlogix's subtype). Try the event with all of them, then fewer: the codec only
        # accepts a list that decodes back exactly, so the first one it takes is the truth.
        kinds = {e.kind for e in events}
        levels = [lv for lv in self._levels() if lv.kind not in kinds and _IDLE.get(lv.kind) not in kinds]
        levels = [lv for lv in levels if not any(_IDLE.get(e.kind) == lv.kind for e in events)]
        masks = sorted(range(1 << len(levels)), key=lambda m: -bin(m).count("1"))
        out = [[*events, *(lv for i, lv in enumerate(levels) if m >> i & 1)] for m in masks]
        return [c for c in out if c] + ([] if events else [[Observation(Kind.HEARTBEAT)]])

    def _report(self, *events: Observation) -> list[Message]:
        when = self.stamp()
        for candidate in self._candidates(events):
            obs = [Observation(o.kind, o.values, when) for o in candidate] if when is not None else candidate
            try:
                payload = rtl433.encode(self.device.model, self.source.id, obs, self.source.channel, self.codes)
            except PayloadError:
                continue
            return [self._message(self.topic, payload, obs)]
        if events:
            raise PayloadError(
                "not_encodable", f"{self.device.model} {self.id} cannot send {[str(e.kind) for e in events]}"
            )
        return []

    def check_in(self) -> list[Message]:
        # Flag models supervise; an EV1527 sensor is silent until something happens.
        return self._report() if self.spec.flags else []


class Rtl433DoorContact(Rtl433Device, DoorSim):
    """Kerui / Chuango door contacts (EV1527 codes), Honeywell, Interlogix, DSC, Visonic (flags)."""


class Rtl433SmokeDetector(Rtl433Device, SmokeSim):
    """Chuango SMK-500 (a code), Honeywell / Interlogix (a flag), Siterwell GS558 (implicit)."""

    def check_in(self) -> list[Message]:
        if self.spec.implicit is not None:  # GS558: a pairing ("learn") transmission says it is alive
            return self._report(Observation(Kind.HEARTBEAT))
        return super().check_in()


class Rtl433SosButton(Rtl433Device, SosSim):
    """EV1527 pendants (Generic-Remote, with a code table), Chuango RC-80, Honeywell panic."""

    def press(self, action: str | None = None) -> list[Message]:
        return self._report(Observation(Kind.SOS_PRESSED))


# ============================================================================ native


class NativeDevice(SimDevice):
    """Speaks SenseGate's own JSON on ``<native_base>/<device id>``: any kind, the device's own
    clock time, a heartbeat as the periodic report, and just the event on the wire."""

    def _setup(self) -> None:
        super()._setup()
        if not isinstance(self.device.mqtt, NativeSource):
            raise ValueError(f"device {self.device.id} is not a native device")
        self.topic = f"{self.mqtt.native_base.rstrip('/')}/{self.device.id}"

    def can(self, kind: Kind) -> bool:
        return True

    def _report(self, *events: Observation) -> list[Message]:
        if not events:
            return []
        when = self.stamp()
        obs = [Observation(e.kind, e.values, when) for e in events] if when is not None else list(events)
        return [self._message(self.topic, native.encode(obs, self.device.id), obs)]

    def check_in(self) -> list[Message]:
        return self._report(Observation(Kind.HEARTBEAT))


class AccessControllerSim(NativeDevice, DoorSim):
    """A unit-door access controller (门禁): who came in and how, and the door it drives."""

    def grant(self, credential: str, person: str, direction: str = "in", method: str = "card") -> list[Message]:
        values: dict[str, Scalar] = {
            "credential": credential,
            "person": person,
            "direction": direction,
            "method": method,
        }
        return self._report(Observation(Kind.ACCESS_GRANTED, values))

    def deny(self, credential: str, method: str = "card", reason: str = "unknown_credential") -> list[Message]:
        values: dict[str, Scalar] = {"credential": credential, "direction": "in", "method": method, "reason": reason}
        return self._report(Observation(Kind.ACCESS_DENIED, values))

    def forced_open(self) -> list[Message]:
        """The door opened with no grant (强行开门): the controller reports the door, not a card."""
        self.is_open = True
        return self._report(Observation(Kind.DOOR_OPENED, {"forced": True}))


class NativeSmokeDetector(NativeDevice, SmokeSim):
    pass


class NativeFallRadar(NativeDevice, FallSim):
    pass


class NativeSosButton(NativeDevice, SosSim):
    pass


# ============================================================================ registry

SIMULATORS: dict[tuple[str, Family], type[SimDevice]] = {
    ("HS1SA", Family.SMOKE): Z2MSmokeDetector,
    ("TS0205", Family.SMOKE): Z2MSmokeDetector,
    ("MCCGQ11LM", Family.DOOR): Z2MDoorContact,
    ("TS0215A_sos", Family.SOS): Z2MSosButton,
    ("HS1EB", Family.SOS): Z2MSosButton,
    ("MIR-HE200-TY_fall", Family.FALL): Z2MFallRadar,
    ("HS2FD-EF1-3.0", Family.FALL): Z2MFallRadar,
    ("FDS315", Family.FALL): Z2MFallRadar,
    ("Kerui-Security", Family.DOOR): Rtl433DoorContact,
    ("Chuango-Security", Family.DOOR): Rtl433DoorContact,
    ("Chuango-Security", Family.SMOKE): Rtl433SmokeDetector,
    ("Chuango-Security", Family.SOS): Rtl433SosButton,
    ("Generic-Remote", Family.SOS): Rtl433SosButton,
    ("Honeywell-Security", Family.DOOR): Rtl433DoorContact,
    ("Honeywell-Security", Family.SMOKE): Rtl433SmokeDetector,
    ("Honeywell-Security", Family.SOS): Rtl433SosButton,
    ("Interlogix-Security", Family.DOOR): Rtl433DoorContact,
    ("Interlogix-Security", Family.SMOKE): Rtl433SmokeDetector,
    ("Interlogix-Security", Family.SOS): Rtl433SosButton,
    ("DSC-Security", Family.DOOR): Rtl433DoorContact,
    ("Visonic-Powercode", Family.DOOR): Rtl433DoorContact,
    ("Smoke-GS558", Family.SMOKE): Rtl433SmokeDetector,
}

NATIVE_SIMULATORS: dict[Family, type[SimDevice]] = {
    Family.DOOR: AccessControllerSim,
    Family.SMOKE: NativeSmokeDetector,
    Family.FALL: NativeFallRadar,
    Family.SOS: NativeSosButton,
}


def simulator_for(
    device: Device,
    mqtt: MqttSettings,
    *,
    rng: random.Random | None = None,
    stamp: Stamp = _no_stamp,
    rtl_433_host: str = RTL_433_HOST,
) -> SimDevice:
    """The simulator for a configured MQTT device; ``KeyError`` names what has none."""
    if device.mqtt is None:
        raise KeyError(f"{device.id} is a serial device: its simulator is simulators.serial_radar")
    if isinstance(device.mqtt, NativeSource):
        cls = NATIVE_SIMULATORS.get(device.family)
    else:
        cls = SIMULATORS.get((device.model, device.family))
    if cls is None:
        raise KeyError(f"no simulator for {device.mqtt.format} model {device.model!r} as a {device.family} device")
    return cls(device, mqtt, rng=rng, stamp=stamp, rtl_433_host=rtl_433_host)


def simulators_for(
    devices: Sequence[Device], mqtt: MqttSettings, *, seed: int = 1, stamp: Stamp = _no_stamp
) -> Mapping[str, SimDevice]:
    """One simulator per device, each with its own random stream derived from ``seed``."""
    return {
        d.id: simulator_for(d, mqtt, rng=random.Random(f"{seed}:{d.id}"), stamp=stamp)
        for d in devices
        if d.mqtt is not None
    }
