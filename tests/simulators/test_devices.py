"""Every simulated device speaks through the real codecs and is read back as it meant."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub

from drivers import native, rtl433, zigbee2mqtt
from gateway.models import Family, Kind
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from simulators.block import demo_site
from simulators.devices import (
    EXAMPLE_CODES,
    NATIVE_SIMULATORS,
    SIMULATORS,
    AccessControllerSim,
    DoorSim,
    FallSim,
    Message,
    SimDevice,
    SmokeSim,
    SosSim,
    rtl_433_events_topic,
    simulator_for,
    simulators_for,
)
from tests.simulators.helpers import T0, assert_decodes, one_device_site

# rtl_433 prints these models' ids as text; the rest are decimal.
RTL_IDS = {"Interlogix-Security": "a1b2c3", "Visonic-Powercode": "6f4770"}


def test_every_codec_model_has_a_simulator() -> None:
    """Walk the drivers' registries: a model without a simulator cannot be demonstrated or tested."""
    for model, spec in zigbee2mqtt.MODELS.items():
        assert (model, spec.family) in SIMULATORS, model
    for model, rtl_spec in rtl433.MODELS.items():
        assert (model, rtl_spec.family) in SIMULATORS, model
    known = set(zigbee2mqtt.MODELS) | set(rtl433.MODELS)
    assert {model for model, _ in SIMULATORS} <= known
    for (model, family), cls in SIMULATORS.items():
        assert cls.family == family, (model, cls)
    assert set(NATIVE_SIMULATORS) == {Family.DOOR, Family.SMOKE, Family.FALL, Family.SOS}
    assert all(cls.family == family for family, cls in NATIVE_SIMULATORS.items())


def _device(fmt: str, model: str, family: Family) -> dict[str, Any]:
    if fmt == "zigbee2mqtt":
        mqtt: dict[str, Any] = {"format": fmt, "friendly_name": f"1号楼/101/{family.value}"}
    elif fmt == "rtl_433":
        mqtt = {"format": fmt, "id": RTL_IDS.get(model, "123456")}
        if model == "Smoke-GS558":
            mqtt["channel"] = "3"
        codes = EXAMPLE_CODES.get((model, family))
        if codes:
            mqtt["codes"] = codes
    else:
        mqtt = {"format": "native"}
    return {"id": "dev-1", "family": family.value, "model": model, "mqtt": mqtt}


def _exercise(sim: SimDevice) -> list[Message]:
    """Everything a device of the family can be made to do, in a plausible order."""
    out = [*sim.availability(True), *sim.check_in()]
    if isinstance(sim, DoorSim):
        out += [*sim.open(), *sim.close(), *sim.tamper(True), *sim.tamper(False), *sim.open()]
    if isinstance(sim, AccessControllerSim):
        out += [*sim.grant("card:123-4567", "张三", "in", "card"), *sim.grant("face:1", "李四", "out", "face")]
        out += [*sim.deny("card:000-0000"), *sim.forced_open(), *sim.close()]
    if isinstance(sim, SmokeSim):
        out += [*sim.alarm(), *sim.check_in(), *sim.clear(), *sim.test(), *sim.tamper(True), *sim.tamper(False)]
    if isinstance(sim, FallSim):
        out += [*sim.presence(True), *sim.suspect(), *sim.clear(), *sim.fall(), *sim.check_in(), *sim.residence()]
        out += [*sim.clear(), *sim.presence(False), *sim.check_in()]
    if isinstance(sim, SosSim):
        out += [*sim.press(), *sim.cancel(), *sim.press()]
    out += [*sim.battery_low(), *sim.check_in(), *sim.availability(False), *sim.availability(True, legacy=True)]
    return out


CASES = [
    pytest.param(("zigbee2mqtt" if model in zigbee2mqtt.MODELS else "rtl_433", model, family), id=f"{model}-{family}")
    for model, family in SIMULATORS
] + [pytest.param(("native", "SG-X", family), id=f"native-{family}") for family in NATIVE_SIMULATORS]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stamped", [False, True])
def test_simulator_messages_decode_to_what_they_say(case: tuple[str, str, Family], stamped: bool) -> None:
    fmt, model, family = case
    device = _device(fmt, model, family)
    # gateway.site.config accepts only numeric code keys so far; the rtl_433 codec also takes flag
    # names (Honeywell "alarm", Interlogix "switch1"), which these devices need.
    numeric = all(k[:1].isdigit() for k in device["mqtt"].get("codes", {}))
    config = one_device_site(device, cross_check=numeric)
    registry = Registry(config)
    sim = simulator_for(config.devices[0], config.mqtt, stamp=(lambda: T0 + 1.5) if stamped else (lambda: None))
    messages = _exercise(sim)
    assert messages
    for m in messages:
        assert_decodes(m, config, registry)
        assert any(topic_matches_sub(f, m.topic) for f in registry.subscriptions()), m.topic
    kinds = {k for m in messages for k in m.kinds}
    # every family's defining alarm gets through whatever the format
    defining = {
        Family.DOOR: Kind.DOOR_OPENED,
        Family.SMOKE: Kind.SMOKE_ALARM,
        Family.FALL: Kind.FALL_DETECTED,
        Family.SOS: Kind.SOS_PRESSED,
    }
    assert defining[family] in kinds
    if stamped and fmt != "zigbee2mqtt":  # rtl_433 and native carry the device's time
        events = [e for m in messages for e in registry.decode(m.topic, m.payload, T0)]
        assert {e.event_time for e in events} == {T0 + 1.5}


def test_demo_site_every_device_every_action_decodes() -> None:
    config = parse_config(demo_site())
    registry = Registry(config)
    sims = simulators_for(config.devices, config.mqtt, seed=3, stamp=lambda: T0)
    assert set(sims) == {d.id for d in config.devices if d.mqtt is not None}  # serial ones: pty simulators
    for sim in sims.values():
        for m in _exercise(sim):
            assert_decodes(m, config, registry)


def _z2m(model: str, **extra: Any) -> tuple[SimDevice, Callable[[Message], dict[str, Any]]]:
    device = _device("zigbee2mqtt", model, zigbee2mqtt.MODELS[model].family)
    device["mqtt"].update(extra)
    config = one_device_site(device)
    return simulator_for(config.devices[0], config.mqtt), lambda m: dict(json.loads(m.payload))


def test_door_contact_false_means_open_and_state_is_repeated() -> None:
    sim, body = _z2m("MCCGQ11LM")
    assert isinstance(sim, DoorSim)
    (opened,) = sim.open()
    assert body(opened)["contact"] is False
    assert opened.kinds == (Kind.DOOR_OPENED, Kind.BATTERY)
    (closed,) = sim.close()
    assert body(closed)["contact"] is True
    # a check-in is the whole cached state, as Z2M publishes it: contact, battery, voltage, LQI
    (report,) = sim.check_in()
    assert {"contact", "battery", "voltage", "linkquality"} <= set(body(report))
    assert opened.topic == "zigbee2mqtt/1号楼/101/door"


def test_buttons_use_their_models_actions() -> None:
    sos, body = _z2m("TS0215A_sos")
    assert isinstance(sos, SosSim)
    assert body(sos.press()[0])["action"] == "emergency"
    assert sos.cancel() == []  # TS0215A_sos has no cancel
    hs1eb, body = _z2m("HS1EB", actions={"single": "sos_pressed", "hold": "sos_pressed", "double": "sos_cancelled"})
    assert isinstance(hs1eb, SosSim)
    assert body(hs1eb.press()[0])["action"] == "single"
    assert body(hs1eb.press("hold")[0])["action"] == "hold"
    assert body(hs1eb.cancel()[0])["action"] == "double"
    # a check-in carries no action: a retained state must never press the button again
    assert "action" not in body(hs1eb.check_in()[0])


def test_availability_forms() -> None:
    sim, _ = _z2m("HS1SA")
    (off,) = sim.availability(False)
    assert off.topic.endswith("/availability") and off.retain
    assert json.loads(off.payload) == {"state": "offline"}
    (on,) = sim.availability(True, legacy=True)
    assert on.payload == b"online" and on.kinds == (Kind.ONLINE,)


def test_fall_radars_report_fall_and_presence_in_their_own_fields() -> None:
    fields = {
        "MIR-HE200-TY_fall": ("fall_down_status", "fall"),
        "HS2FD-EF1-3.0": ("fall_status", "fall_alarm"),
        "FDS315": ("status", "falling"),
    }
    for model, (name, value) in fields.items():
        sim, body = _z2m(model)
        assert isinstance(sim, FallSim)
        (msg,) = sim.fall()
        assert body(msg)[name] == value
        assert Kind.BATTERY not in msg.kinds  # mains powered


def test_rtl_433_payloads_and_topic() -> None:
    config = one_device_site(_device("rtl_433", "Kerui-Security", Family.DOOR))
    sim = simulator_for(config.devices[0], config.mqtt, stamp=lambda: T0)
    assert isinstance(sim, DoorSim)
    (opened,) = sim.open()
    assert opened.topic == "rtl_433/rtl-sdr-1/events"
    assert json.loads(opened.payload) == {
        "time": "2026-01-01 08:00:00",
        "model": "Kerui-Security",
        "id": 123456,
        "cmd": 14,
        "opened": 1,
        "state": "open",
    }
    assert sim.check_in() == []  # an EV1527 contact is silent between events


@pytest.mark.parametrize(
    ("pattern", "topic"),
    [
        ("rtl_433/+/events", "rtl_433/pi/events"),
        ("rtl_433/pi/events", "rtl_433/pi/events"),
        ("sdr/#", "sdr/events"),
    ],
)
def test_rtl_433_topic_follows_the_config(pattern: str, topic: str) -> None:
    from gateway.site.config import MqttSettings

    mqtt = MqttSettings(rtl_433_topic=pattern)
    assert rtl_433_events_topic(mqtt, "pi") == topic
    assert topic_matches_sub(pattern, topic)


def test_native_access_controller_payload() -> None:
    config = one_device_site(_device("native", "SG-AC100", Family.DOOR))
    sim = simulator_for(config.devices[0], config.mqtt, stamp=lambda: T0)
    assert isinstance(sim, AccessControllerSim)
    (granted,) = sim.grant("card:123-4567", "张三", "in", "card")
    assert granted.topic == "sensegate/in/dev-1"
    decoded = native.decode(granted.payload)
    assert decoded.device == "dev-1"
    (obs,) = decoded.observations
    assert obs.kind == Kind.ACCESS_GRANTED and obs.device_time == T0
    assert obs.values == {"credential": "card:123-4567", "person": "张三", "direction": "in", "method": "card"}


def test_no_simulator_for_an_unknown_pairing() -> None:
    config = one_device_site(_device("native", "SG-X", Family.DOOR))
    device = dataclasses.replace(config.devices[0], family=Family.GAS)
    with pytest.raises(KeyError, match="no simulator"):
        simulator_for(device, config.mqtt)
    with pytest.raises(ValueError, match="simulates"):
        SmokeSim(config.devices[0], config.mqtt)


def test_device_randomness_is_per_device_and_seeded() -> None:
    config = parse_config(demo_site())
    a = simulators_for(config.devices, config.mqtt, seed=7)
    b = simulators_for(config.devices, config.mqtt, seed=7)
    c = simulators_for(config.devices, config.mqtt, seed=8)
    payloads = [[m.payload for s in sims.values() for m in s.check_in()] for sims in (a, b, c)]
    assert payloads[0] == payloads[1] != payloads[2]
