"""The registry routes each topic to its device and codec, and builds located events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import PayloadError, UnknownDeviceError
from gateway.models import Family, Kind, Location, Observation
from gateway.site.config import parse_config
from gateway.site.registry import MAX_CLOCK_SKEW, Registry
from tests.gateway.factories import minimal_site

NOW = 1_795_322_400.0  # 2026-11-22T08:00:00+08:00


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(parse_config(minimal_site(), environ={}))


def test_subscriptions_cover_every_configured_format(registry: Registry) -> None:
    assert registry.subscriptions() == ["zigbee2mqtt/#", "rtl_433/+/events", "sensegate/in/+"]


def test_zigbee2mqtt_state_becomes_located_events(registry: Registry) -> None:
    events = registry.decode("zigbee2mqtt/1号楼/101/门磁", b'{"contact":false,"battery":100,"linkquality":120}', NOW)
    assert [e.kind for e in events] == [Kind.DOOR_OPENED, Kind.BATTERY]  # contact false = OPEN
    e = events[0]
    assert (e.device_id, e.family, e.model, e.source) == ("101-door", Family.DOOR, "MCCGQ11LM", "zigbee2mqtt")
    assert e.location == Location("1", "1", "101", "入户门")
    assert (e.event_time, e.received_at, e.time_source) == (NOW, NOW, "gateway")
    assert json.loads(e.raw)["contact"] is False


def test_availability_bridge_and_command_topics(registry: Registry) -> None:
    (e,) = registry.decode("zigbee2mqtt/1号楼/101/烟感/availability", b'{"state":"offline"}', NOW)
    assert (e.device_id, e.kind) == ("101-smoke", Kind.OFFLINE)
    (e,) = registry.decode("zigbee2mqtt/1号楼/101/烟感/availability", b"online", NOW)
    assert e.kind is Kind.ONLINE
    assert registry.decode("zigbee2mqtt/bridge/state", b'{"state":"online"}', NOW) == []
    assert registry.decode("zigbee2mqtt/1号楼/101/烟感/set", b'{"x":1}', NOW) == []


def test_unknown_devices_and_topics_are_payload_errors(registry: Registry) -> None:
    with pytest.raises(UnknownDeviceError, match="9号楼"):
        registry.decode("zigbee2mqtt/9号楼/1/烟感", b'{"smoke":false}', NOW)
    with pytest.raises(UnknownDeviceError, match="999"):
        registry.decode("rtl_433/pi/events", b'{"model":"Kerui-Security","id":999,"cmd":14}', NOW)
    with pytest.raises(UnknownDeviceError):
        registry.decode("sensegate/in/101-door", b'{"kind":"heartbeat"}', NOW)  # not a native device
    with pytest.raises(PayloadError) as info:
        registry.decode("somewhere/else", b"{}", NOW)
    assert info.value.reason == "unexpected_topic"


def test_rtl433_device_without_channel_matches_any_channel(registry: Registry) -> None:
    payload = {"model": "Kerui-Security", "id": 123456, "channel": 3, "cmd": 14, "opened": 1, "state": "open"}
    (e, *_) = registry.decode("rtl_433/pi/events", json.dumps(payload).encode(), NOW)
    assert (e.device_id, e.kind, e.location.building, e.location.household) == ("main-door", Kind.DOOR_OPENED, "1", "")


def test_device_time_is_used_when_plausible_and_kept_aside_when_not(registry: Registry) -> None:
    ok = {"kind": "access_granted", "time": NOW - 30, "values": {"credential": "card:1"}}
    (e,) = registry.decode("sensegate/in/gate-1", json.dumps(ok).encode(), NOW)
    assert (e.event_time, e.time_source) == (NOW - 30, "device")
    off = {"kind": "access_granted", "time": NOW - MAX_CLOCK_SKEW - 1, "values": {"credential": "card:1"}}
    (e,) = registry.decode("sensegate/in/gate-1", json.dumps(off).encode(), NOW)
    assert (e.event_time, e.time_source) == (NOW, "gateway")
    assert e.values["device_time"] == NOW - MAX_CLOCK_SKEW - 1


def test_native_payload_naming_another_device_is_refused(registry: Registry) -> None:
    with pytest.raises(PayloadError) as info:
        registry.decode("sensegate/in/gate-1", b'{"device":"gate-2","kind":"heartbeat"}', NOW)
    assert info.value.reason == "device_mismatch"


def test_wired_devices_get_located_events_from_their_driver() -> None:
    site = minimal_site()
    site["modbus_buses"] = [{"id": "b1", "port": "/dev/ttyUSB0"}]
    site["devices"] = [
        {
            "id": "stair-smoke",
            "family": "smoke",
            "model": "RS485-SMOKE",
            "building": "1",
            "room": "1单元楼梯间",
            "modbus": {"bus": "b1", "unit_id": 2, "profile": "GENERIC-SMOKE"},
        },
        {
            "id": "101-radar",
            "family": "fall",
            "model": "MR60FDA1",
            "household": "1-1-101",
            "serial": {"port": "/dev/ttyUSB1", "protocol": "mr60fda1"},
        },
        site["devices"][0],
    ]
    registry = Registry(parse_config(site, environ={}))
    assert list(registry.modbus_devices) == ["stair-smoke"] and list(registry.serial_devices) == ["101-radar"]
    (e,) = registry.device_events("stair-smoke", [Observation(Kind.SMOKE_ALARM, {"level": "alarm"})], "0001", NOW, "m")
    assert (e.kind, e.family, e.model, e.raw, e.source) == (Kind.SMOKE_ALARM, Family.SMOKE, "RS485-SMOKE", "0001", "m")
    assert e.location == Location("1", "", "", "1单元楼梯间")
    (e,) = registry.device_events("101-radar", [Observation(Kind.FALL_DETECTED)], b"\x53\x59", NOW, "serial:x")
    assert e.raw == "53 59" and e.location.household == "101"
    with pytest.raises(ValueError, match="MQTT device"):
        registry.device_events("101-door", [Observation(Kind.DOOR_OPENED)], "", NOW, "x")
    assert registry.subscriptions() == ["zigbee2mqtt/#"]  # only the MQTT device's format


def test_a_deeply_nested_payload_is_a_payload_error_on_every_topic() -> None:
    # json.loads raises RecursionError on absurd nesting: a crash of the ingest, redelivered by
    # the broker forever, if any decoder let it through (the check-in decoder did).
    site = minimal_site(visitors=[{"id": "v1", "name": "张社工", "role": "volunteer", "households": ["1-1-101"]}])
    site["devices"].append({"id": "n1", "family": "door", "model": "native", "household": "1-1-101",
                            "mqtt": {"format": "native"}})  # fmt: skip
    config = parse_config(site, environ={})
    registry = Registry(config)
    deep = b"[" * 30_000 + b"]" * 30_000
    topics = ["zigbee2mqtt/1号楼/101/烟感", f"{config.mqtt.native_base}/n1", f"{config.topic_prefix}/visits/checkin"]
    for topic in topics:
        with pytest.raises(PayloadError):
            registry.decode(topic, deep, 0.0)


RECORD = Path(__file__).parent / "testdata" / "decode-record.jsonl"


def recorded() -> list[Any]:
    return [json.loads(line) for line in RECORD.read_text(encoding="utf-8").splitlines()]


def test_decode_is_what_it_was_before_it_was_made_faster() -> None:
    # compare.py's traffic, broken every way we know, and the zigbee2mqtt golden payloads, as the
    # code before issue 14's faster decoding decoded them (testdata/make_decode_record.py):
    # every event field for field, every error with its reason and message.
    head, *messages = recorded()
    registry = Registry(parse_config(head["site"], "bench-site.toml", Path("/tmp"), environ={}))
    for m in messages:
        payload = m["payload"].encode() if "payload" in m else bytes.fromhex(m["payload_hex"])
        try:
            events = registry.decode(m["topic"], payload, head["received_at"])
        except PayloadError as exc:
            got: dict[str, Any] = {"error": [type(exc).__name__, exc.reason, str(exc)]}
        else:
            text = payload.decode("utf-8", errors="replace")
            got = {"events": [{k: v for k, v in e.to_dict().items() if k != "raw" or v != text} for e in events]}
        want = {k: v for k, v in m.items() if k in ("events", "error")}
        # as JSON text: 81 is not 81.0, nor 1 True
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), (m["topic"], payload[:200])
    assert sum("events" in m for m in messages) > 100 and sum("error" in m for m in messages) > 100


def _lane(alarm_lane: object) -> frozenset[str]:
    site = minimal_site()
    site["mqtt"] = {"alarm_lane": alarm_lane}
    return Registry(parse_config(site, environ={})).lane_topics()[0]


def test_the_alarm_lane_takes_the_exact_topics_of_the_families_it_names() -> None:
    """``true``: fall radars, smoke, gas, water and SOS, state and availability each (a device's
    messages keep their order); a list: those families; off: none. Door contacts never by
    default, rtl_433 devices never (one topic for them all)."""
    every = {
        f"zigbee2mqtt/1号楼/101/{name}{suffix}" for name in ("烟感", "SOS", "跌倒") for suffix in ("", "/availability")
    }
    assert _lane(True) == every
    assert _lane(["smoke", "sos"]) == {t for t in every if "跌倒" not in t}
    assert _lane(["door"]) == {
        "zigbee2mqtt/1号楼/101/门磁",
        "zigbee2mqtt/1号楼/101/门磁/availability",
        "sensegate/in/gate-1",
    }
    assert _lane(False) == frozenset()


def test_the_lane_digest_changes_with_its_topics() -> None:
    def digest(alarm_lane: object) -> str:
        site = minimal_site()
        site["mqtt"] = {"alarm_lane": alarm_lane}
        return Registry(parse_config(site, environ={})).lane_topics()[1]

    assert digest(True) == digest(["fall", "smoke", "sos", "gas", "water"])
    assert digest(True) != digest(["smoke", "sos"])
