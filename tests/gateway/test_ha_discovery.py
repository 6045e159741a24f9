"""Home Assistant MQTT discovery: the pure translation, the bridge with a fake publish, and one
run against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import zigbee2mqtt
from gateway.errors import ConfigError
from gateway.models import Alert, AlertState, Event, Family, Kind, Location, Severity
from gateway.outputs.home_assistant import (
    FAMILY_SLOTS,
    SLOTS,
    HaBridge,
    HaSettings,
    Message,
    _entity_slug,
    _safe_id,
    alert_state_messages,
    build_plan,
    discovery_messages,
    state_messages,
)
from gateway.site.config import SiteConfig, parse_config
from simulators.block import demo_site
from tests.gateway.factories import minimal_site
from tests.servers import Mosquitto

# Home Assistant's BinarySensorDeviceClass values (homeassistant/components/binary_sensor).
HA_BINARY_SENSOR_CLASSES = frozenset(
    {
        "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas",
        "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power",
        "presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
    }
)  # fmt: skip
# homeassistant/components/mqtt/discovery.py, after "<prefix>/".
HA_DISCOVERY_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def _ha_slugify(text: str) -> str:
    """Home Assistant's ``homeassistant.util.slugify`` of non-empty ASCII text, step by step as
    python-slugify does it (``slugify/slugify.py``, separator ``_``): quotes become separators;
    lowercase; a comma between digits vanishes; every run of characters outside ``[-a-z0-9]``
    becomes ``-`` (so ``_`` does too), runs of ``-`` one, none at either end; ``-`` becomes
    ``_``. Home Assistant answers ``unknown`` when nothing is left. Entity ids are
    ``<domain>.<this of the suggested object id>``."""
    text = re.sub(r"'+", "-", text).lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    text = re.sub(r"[^-a-z0-9]+", "-", text)
    text = re.sub(r"-{2,}", "-", text).strip("-")
    return text.replace("-", "_") or "unknown"


MAIN_CLASS = {
    Family.DOOR: "door",
    Family.FALL: "safety",
    Family.SMOKE: "smoke",
    Family.SOS: "safety",
    Family.GAS: "gas",
    Family.WATER: "moisture",
    Family.PRESENCE: "occupancy",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> SiteConfig:
    return parse_config(demo_site(data_dir=str(tmp_path_factory.mktemp("demo"))))


def _site(**overrides: Any) -> SiteConfig:
    return parse_config(minimal_site(**overrides))


def _every_family_site() -> SiteConfig:
    """minimal_site plus a native device of every other family."""
    site = minimal_site()
    for family in ("gas", "water", "presence"):
        site["devices"].append(
            {
                "id": f"102-{family}",
                "family": family,
                "model": "native-test",
                "household": "1-1-102",
                "room": "厨房",
                "mqtt": {"format": "native"},
            }
        )
    return parse_config(site)


def _configs(messages: list[Message]) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(payload) for topic, payload, _ in messages}


def _event(device: str, family: Family, kind: Kind, **values: Any) -> Event:
    return Event(device, family, kind, 1_767_225_600.0, 1_767_225_600.0, values=values)


def _alert(key: str, severity: Severity, location: Location, message: str, last_seen: float = 2.0, **kw: Any) -> Alert:
    return Alert(
        id=key.replace(":", "-"),
        dedup_key=key,
        rule=key.split(":")[0],
        severity=severity,
        state=kw.pop("state", AlertState.RAISED),
        raised_at=1.0,
        last_seen=last_seen,
        message_zh=message,
        message_en="",
        location=location,
        **kw,
    )


# ------------------------------------------------------------------------------ settings


def test_settings_defaults_and_strictness() -> None:
    s = HaSettings()
    assert (s.enabled, s.discovery_prefix, s.status_topic, s.node_id) == (
        False,
        "homeassistant",
        "homeassistant/status",
        None,
    )
    with pytest.raises(ValidationError):
        HaSettings(enabled=True, prefix="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        HaSettings(node_id="3号楼")  # node ids are [A-Za-z0-9_-] only
    with pytest.raises(ValidationError):
        HaSettings(discovery_prefix="homeassistant/#")


def test_node_id_defaults_to_the_gateway_id_and_settings_move_topics() -> None:
    config = _site()
    assert all(t.split("/")[2] == "gw-test" for t, _, _ in discovery_messages(config))
    custom = HaSettings(discovery_prefix="ha", node_id="block7")
    for topic, _, _ in discovery_messages(config, custom):
        assert topic.startswith("ha/") and topic.split("/")[2] == "block7"
    dotted = parse_config({**minimal_site(), "gateway": {"id": "gw.1"}})
    assert {t.split("/")[2] for t, _, _ in discovery_messages(dotted)} == {build_plan(dotted).node}
    assert re.fullmatch(r"[A-Za-z0-9_-]+", build_plan(dotted).node)


# ------------------------------------------------------------------------------ discovery


def test_discovery_covers_the_demo_site_with_unique_valid_ids(demo: SiteConfig) -> None:
    messages = discovery_messages(demo)
    configs = _configs(messages)
    assert len(configs) == len(messages)  # one topic per entity
    assert all(retain for _, _, retain in messages)
    uids = [c["unique_id"] for c in configs.values()]
    assert len(set(uids)) == len(uids)
    entity_ids = [c["default_entity_id"] for c in configs.values()]
    assert len(set(entity_ids)) == len(entity_ids)
    for topic, config in configs.items():
        prefix, _, rest = topic.partition("/")
        assert prefix == "homeassistant"
        m = HA_DISCOVERY_TOPIC.fullmatch(rest)
        assert m is not None, topic
        assert m["object_id"] == config["unique_id"]  # HA's advice: object_id = unique_id
        assert m["node_id"] == "demo"
        # What Home Assistant makes of the unique id, and what it keeps when given that.
        domain, object_id = config["default_entity_id"].split(".")
        assert (domain, object_id) == (m["component"], _ha_slugify(config["unique_id"]))
        assert _ha_slugify(object_id) == object_id
        assert "object_id" not in config  # removed from Home Assistant in 2026.4
        assert config["state_topic"].startswith("sensegate/demo/")
        assert config["device"]["identifiers"] and config["device"]["name"]
        assert config["device"]["manufacturer"] == "SenseGate"
        assert config["origin"]["name"] == "SenseGate"
    # Every device, household and building has a Home Assistant device; all hang off the gateway.
    devices = {c["device"]["identifiers"][0]: c["device"] for c in configs.values()}
    assert len(devices) == 1 + len(demo.devices) + len(demo.households) + len(demo.buildings)
    gateway = [d for d in devices.values() if "via_device" not in d]
    assert [d["identifiers"] for d in gateway] == [["sensegate_demo"]]
    assert all(d["via_device"] == "sensegate_demo" for d in devices.values() if d not in gateway)


def test_every_entity_uses_a_documented_device_class(demo: SiteConfig) -> None:
    for config in [demo, _every_family_site()]:
        for topic, c in _configs(discovery_messages(config)).items():
            component = topic.split("/")[1]
            if component == "binary_sensor":
                assert c["device_class"] in HA_BINARY_SENSOR_CLASSES, topic
                assert (c["payload_on"], c["payload_off"]) in {("ON", "OFF"), ("online", "offline")}
            else:
                assert component == "sensor"
                assert c.get("device_class") in {None, "battery"}
                if c.get("device_class") == "battery":
                    assert c["unit_of_measurement"] == "%"


@pytest.mark.parametrize("family", list(Family))
def test_each_family_gets_its_main_device_class(family: Family) -> None:
    plan = build_plan(_every_family_site())
    devices = [d for d in plan.config.devices if d.family == family]
    assert devices
    for device in devices:
        classes = {
            e.config["device_class"] for e in plan.entities if e.config["device"]["identifiers"][0].endswith(device.id)
        }
        assert MAIN_CLASS[family] in classes, device.id
    assert all(key in SLOTS for keys in FAMILY_SLOTS.values() for key in keys)


def test_fall_radar_announces_fall_as_safety_and_presence_as_occupancy() -> None:
    configs = _configs(discovery_messages(_site()))
    fall = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-fall_fall/config"]
    presence = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-fall_presence/config"]
    assert (fall["device_class"], presence["device_class"]) == ("safety", "occupancy")
    assert fall["state_topic"] == "sensegate/gw-test/ha/101-fall/fall"
    assert "off_delay" not in fall  # the radar clears a fall itself


@pytest.mark.parametrize("model", sorted(zigbee2mqtt.MODELS))
def test_every_zigbee2mqtt_model_shows_its_main_entity(model: str) -> None:
    family = zigbee2mqtt.MODELS[model].family
    site = minimal_site()
    site["devices"] = [
        {
            "id": "dev",
            "family": family.value,
            "model": model,
            "household": "1-1-101",
            "mqtt": {"format": "zigbee2mqtt", "friendly_name": "x"},
        }
    ]
    plan = build_plan(parse_config(site))
    slots = plan.device_slots["dev"]
    assert FAMILY_SLOTS[family][0] in slots
    assert "connectivity" in slots  # zigbee2mqtt availability
    # Each announced slot is one the model can drive.
    emits = zigbee2mqtt.MODELS[model].emits | {Kind.ONLINE, Kind.OFFLINE}
    assert all(SLOTS[key].on & emits for key in slots)


def test_only_what_the_model_can_say_is_announced(demo: SiteConfig) -> None:
    plan = build_plan(demo)
    # Aqara contact: no tamper switch; the TS0205 smoke detector has one.
    assert set(plan.device_slots["1-1-101-door"]) == {"door", "battery", "battery_low", "connectivity"}
    assert "tamper" in plan.device_slots["1-1-101-smoke"]
    # A wired MR60FDA1: no battery; online/offline from the serial link.
    assert set(plan.device_slots["2-1-101-fall"]) == {"fall", "presence", "connectivity"}
    # A Chuango smoke detector behind rtl_433: its code table also has door and SOS codes,
    # which a smoke detector does not announce.
    assert set(plan.device_slots["1-power-room-smoke"]) <= {"smoke", "tamper", "battery_low"}


def test_chinese_names_are_kept(demo: SiteConfig) -> None:
    messages = discovery_messages(demo)
    configs = _configs(messages)
    smoke = configs["homeassistant/binary_sensor/demo/sensegate_demo_dev_1-1-101-smoke_smoke/config"]
    assert smoke["device"]["name"] == "1号楼1单元101室 厨房 烟感"
    assert smoke["name"] == "烟雾报警"
    household = configs["homeassistant/binary_sensor/demo/sensegate_demo_hh_1-1-101_alerts/config"]
    assert household["device"]["name"] == "1号楼1单元101室"
    building = configs["homeassistant/binary_sensor/demo/sensegate_demo_bld_2_alerts/config"]
    assert building["device"]["name"] == "2号楼"
    # Written as UTF-8, not \\u escapes: Home Assistant and people reading the broker see Chinese.
    raw = dict((t, p) for t, p, _ in messages)
    assert "烟感" in raw["homeassistant/binary_sensor/demo/sensegate_demo_dev_1-1-101-smoke_smoke/config"]
    # A public-area access controller is named by its room, without a second family word.
    access = configs["homeassistant/binary_sensor/demo/sensegate_demo_dev_1-access_door/config"]
    assert access["device"]["name"] == "1号楼 大堂门禁"


def test_availability_is_the_gateway_status_topic(demo: SiteConfig) -> None:
    for topic, c in _configs(discovery_messages(demo)).items():
        if c["unique_id"] == "sensegate_demo_gw_connectivity":
            # The gateway's own link reads the status topic directly, so it is never "unavailable".
            assert c["state_topic"] == "sensegate/demo/status" and "availability_topic" not in c
            assert c["device_class"] == "connectivity"
        else:
            assert c["availability_topic"] == "sensegate/demo/status", topic
            assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")


# ------------------------------------------------------------------------------ entity ids


def _site_with_door(device_id: str, **home_assistant: Any) -> SiteConfig:
    site = minimal_site(home_assistant=home_assistant)
    door = {**site["devices"][0], "id": device_id, "mqtt": {"format": "zigbee2mqtt", "friendly_name": device_id}}
    site["devices"].append(door)
    return parse_config(site)


def _door_entity(config: SiteConfig, device_id: str) -> tuple[str, dict[str, Any]]:
    (topic,) = [e.config_topic for e in build_plan(config).entities if e.state_topic.endswith(f"/{device_id}/door")]
    return topic, _configs(discovery_messages(config))[topic]


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("3-502__door_", "3_502_door"),
        ("__x__", "x"),
        ("A--B", "a_b"),
        ("-_-a_-_b-_-", "a_b"),
        ("sensegate_demo_dev_1-1-101-smoke_smoke", "sensegate_demo_dev_1_1_101_smoke_smoke"),
        ("___", "unknown"),  # never empty: Home Assistant's own answer
    ],
)
def test_entity_slug_is_home_assistants_slugify(text: str, slug: str) -> None:
    assert _entity_slug(text) == slug == _ha_slugify(text)


@given(st.text(alphabet="abcXYZ019_-", min_size=1, max_size=30))
def test_entity_slug_agrees_with_home_assistant_on_every_unique_id(text: str) -> None:
    slug = _entity_slug(text)
    assert slug == _ha_slugify(text)
    assert _ha_slugify(slug) == slug  # what we send is kept as is
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", slug)


@pytest.mark.parametrize(
    ("device_id", "home_assistant", "unique_id", "entity_id"),
    [
        (
            "3-502__door_",
            {},
            "sensegate_gw-test_dev_3-502__door__door",
            "binary_sensor.sensegate_gw_test_dev_3_502_door_door",
        ),
        ("A--B", {}, "sensegate_gw-test_dev_A--B_door", "binary_sensor.sensegate_gw_test_dev_a_b_door"),
        # A dot is allowed in a device id but not in Home Assistant ids: replaced, and a hash added.
        (
            "3.502",
            {},
            "sensegate_gw-test_dev_3_502_507fc5_door",
            "binary_sensor.sensegate_gw_test_dev_3_502_507fc5_door",
        ),
        (
            "3-502-door",
            {"node_id": "__x__"},
            "sensegate___x___dev_3-502-door_door",
            "binary_sensor.sensegate_x_dev_3_502_door_door",
        ),
    ],
)
def test_default_entity_id_is_the_one_home_assistant_creates(
    device_id: str, home_assistant: dict[str, str], unique_id: str, entity_id: str
) -> None:
    topic, config = _door_entity(_site_with_door(device_id, **home_assistant), device_id)
    assert config["default_entity_id"] == entity_id
    # The unique id, and the discovery topic's object id, stay as they were: Home Assistant's
    # registry knows an entity by its unique id, so changing it would orphan existing entities.
    assert config["unique_id"] == unique_id
    assert topic.split("/")[3] == unique_id
    assert entity_id == f"binary_sensor.{_ha_slugify(unique_id)}"


def test_the_documented_entity_ids_are_the_ones_announced() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "home-assistant.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)`(?:, node id `([^`]+)`)? \| `([^`]+)` \| `([^`]+)` \|$", doc, re.MULTILINE)
    assert len(rows) == 4
    for device_id, node_id, unique_id, entity_id in rows:
        _, config = _door_entity(_site_with_door(device_id, node_id=node_id or "demo"), device_id)
        assert (config["unique_id"], config["default_entity_id"]) == (unique_id, entity_id)


def test_chinese_ids_never_reach_an_entity_id() -> None:
    # The site config takes ASCII ids only (Chinese goes into names) …
    site = minimal_site()
    site["devices"][0]["id"] = "三号楼门磁"
    with pytest.raises(ConfigError, match=r"devices\['三号楼门磁'\]\.id"):  # config errors name items by id
        parse_config(site)
    # … and an id that had any would be made safe first: replaced, told apart by a hash.
    assert _safe_id("三号楼") == "____1560dd"
    assert _entity_slug(_safe_id("三号楼")) == "1560dd" == _ha_slugify(_safe_id("三号楼"))
    assert _entity_slug(_safe_id("三号楼-门磁")) == "1a466d"
    # Raw Chinese is refused, not guessed at: Home Assistant would transliterate it (san_hao_lou).
    with pytest.raises(ValueError, match="unique id"):
        _entity_slug("三号楼")


def test_ids_that_slug_alike_are_told_apart_the_same_whatever_the_order() -> None:
    site = minimal_site()
    for n, device_id in enumerate(["a-b", "a_b", "A--B"]):
        door = {**site["devices"][0], "id": device_id, "mqtt": {"format": "zigbee2mqtt", "friendly_name": f"x/{n}"}}
        site["devices"].append(door)
    config = parse_config(site)
    ids = {d: _door_entity(config, d)[1]["default_entity_id"] for d in ("a-b", "a_b", "A--B")}
    assert ids == {
        "a-b": "binary_sensor.sensegate_gw_test_dev_a_b_door_9758f2",
        "a_b": "binary_sensor.sensegate_gw_test_dev_a_b_door_1c5f3a",
        "A--B": "binary_sensor.sensegate_gw_test_dev_a_b_door_34d06c",
    }
    site["devices"][-3:] = reversed(site["devices"][-3:])
    reordered = parse_config(site)
    assert {d: _door_entity(reordered, d)[1]["default_entity_id"] for d in ids} == ids
    # Only the ones that clash: the others keep their plain slug.
    assert (
        _door_entity(config, "101-door")[1]["default_entity_id"] == "binary_sensor.sensegate_gw_test_dev_101_door_door"
    )


# ------------------------------------------------------------------------------ states


STATE_CASES = [
    ("101-smoke", Family.SMOKE, Kind.SMOKE_ALARM, {}, [("smoke", "ON")]),
    ("101-smoke", Family.SMOKE, Kind.SMOKE_CLEAR, {}, [("smoke", "OFF")]),
    ("101-door", Family.DOOR, Kind.DOOR_OPENED, {}, [("door", "ON")]),
    ("101-door", Family.DOOR, Kind.DOOR_CLOSED, {}, [("door", "OFF")]),
    ("101-fall", Family.FALL, Kind.FALL_DETECTED, {"fall_status": "fall_alarm"}, [("fall", "ON")]),
    ("101-fall", Family.FALL, Kind.FALL_SUSPECTED, {}, [("fall", "ON")]),
    ("101-fall", Family.FALL, Kind.FALL_CLEARED, {}, [("fall", "OFF")]),
    ("101-fall", Family.FALL, Kind.PRESENCE, {"present": True}, [("presence", "ON")]),
    ("101-fall", Family.FALL, Kind.PRESENCE, {"present": False}, [("presence", "OFF")]),
    ("101-sos", Family.SOS, Kind.SOS_PRESSED, {"action": "emergency"}, [("sos", "ON")]),
    ("main-door", Family.DOOR, Kind.TAMPER, {}, [("tamper", "ON")]),
    ("gate-1", Family.DOOR, Kind.TAMPER_CLEAR, {}, [("tamper", "OFF")]),
    ("101-door", Family.DOOR, Kind.OFFLINE, {}, [("connectivity", "OFF")]),
    ("101-door", Family.DOOR, Kind.ONLINE, {}, [("connectivity", "ON")]),
    (
        "101-door",
        Family.DOOR,
        Kind.BATTERY,
        {"battery": 87, "voltage": 3005},
        [("battery", "87"), ("battery_low", "OFF")],
    ),
    ("101-door", Family.DOOR, Kind.BATTERY, {"battery": 35}, [("battery", "35")]),  # between: unchanged
    ("101-smoke", Family.SMOKE, Kind.BATTERY, {"battery": 12.5}, [("battery", "12.5"), ("battery_low", "ON")]),
    ("101-smoke", Family.SMOKE, Kind.BATTERY, {"voltage": 2900}, []),
    ("101-smoke", Family.SMOKE, Kind.BATTERY_LOW, {}, [("battery_low", "ON")]),
    ("main-door", Family.DOOR, Kind.BATTERY_LOW, {}, [("battery_low", "ON")]),
    # Not an entity of these devices: nothing.
    ("101-door", Family.DOOR, Kind.TAMPER, {}, []),
    ("101-smoke", Family.SMOKE, Kind.HEARTBEAT, {}, []),
    ("gate-1", Family.DOOR, Kind.ACCESS_GRANTED, {"credential": "card:1-1"}, []),
    ("nobody", Family.DOOR, Kind.DOOR_OPENED, {}, []),
]


@pytest.mark.parametrize(("device", "family", "kind", "values", "expected"), STATE_CASES)
def test_state_of_each_kind(
    device: str, family: Family, kind: Kind, values: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    messages = state_messages(_event(device, family, kind, **values), _site())
    assert [(t.removeprefix(f"sensegate/gw-test/ha/{device}/"), p) for t, p, _ in messages] == expected


# The same events in a test (the device in test mode): only what says all is well is left.
TEST_CASES = [
    ("101-smoke", Family.SMOKE, Kind.SMOKE_ALARM, {}, []),
    ("101-smoke", Family.SMOKE, Kind.SMOKE_CLEAR, {}, [("smoke", "OFF")]),
    ("101-door", Family.DOOR, Kind.DOOR_OPENED, {}, []),
    ("101-door", Family.DOOR, Kind.DOOR_CLOSED, {}, [("door", "OFF")]),
    ("101-fall", Family.FALL, Kind.FALL_DETECTED, {"fall_status": "fall_alarm"}, []),
    ("101-fall", Family.FALL, Kind.PRESENCE, {"present": True}, []),
    ("101-sos", Family.SOS, Kind.SOS_PRESSED, {"action": "emergency"}, []),
    ("main-door", Family.DOOR, Kind.TAMPER, {}, []),
    ("101-door", Family.DOOR, Kind.OFFLINE, {}, []),
    ("101-door", Family.DOOR, Kind.ONLINE, {}, [("connectivity", "ON")]),
    ("101-smoke", Family.SMOKE, Kind.BATTERY, {"battery": 12.5}, [("battery", "12.5")]),
    ("101-door", Family.DOOR, Kind.BATTERY, {"battery": 87}, [("battery", "87"), ("battery_low", "OFF")]),
]


@pytest.mark.parametrize(("device", "family", "kind", "values", "expected"), TEST_CASES)
def test_a_test_event_sets_only_what_says_all_is_well(
    device: str, family: Family, kind: Kind, values: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    messages = state_messages(_event(device, family, kind, test=True, **values), _site())
    assert [(t.removeprefix(f"sensegate/gw-test/ha/{device}/"), p) for t, p, _ in messages] == expected


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        (Kind.GAS_ALARM, {}, [("gas", "ON")]),
        (Kind.GAS_CLEAR, {}, [("gas", "OFF")]),
        (Kind.WATER_LEAK, {}, [("water", "ON")]),
        (Kind.WATER_CLEAR, {}, [("water", "OFF")]),
        (Kind.MOTION, {"state": "moving"}, [("motion", "ON")]),
        (Kind.MOTION, {"state": "stationary"}, [("motion", "OFF")]),
        (Kind.MOTION, {"moving": False}, [("motion", "OFF")]),
        (Kind.MOTION, {"level": 40}, []),
        (Kind.SENSOR_FAULT, {"fault": "sensor"}, [("fault", "ON")]),
        (Kind.HEARTBEAT, {"status": "ok"}, [("fault", "OFF")]),
    ],
)
def test_state_of_other_families(kind: Kind, values: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    """Gas, water and presence on a site with every slot: a native device of each family and a
    Modbus-like device are covered by announcing everything a native device might say."""
    plan = build_plan(_every_family_site())
    # Give every native test device every slot of its family, as a capable model would have.
    for dev in ("102-gas", "102-water", "102-presence"):
        fam = Family(dev.split("-", 1)[1])
        plan.device_slots[dev] = {k: (f"t/{dev}/{k}", True) for k in FAMILY_SLOTS[fam]}
    family = {
        Kind.GAS_ALARM: "gas",
        Kind.GAS_CLEAR: "gas",
        Kind.WATER_LEAK: "water",
        Kind.WATER_CLEAR: "water",
        Kind.SENSOR_FAULT: "gas",
        Kind.HEARTBEAT: "gas",
    }.get(kind, "presence")
    dev = f"102-{family}"
    got = plan.states(_event(dev, Family(family), kind, **values))
    assert [(t.removeprefix(f"t/{dev}/"), p) for t, p, _ in got] == expected


def test_triggers_are_not_retained_and_switch_themselves_off() -> None:
    config = _site()
    configs = _configs(discovery_messages(config))
    sos = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-sos_sos/config"]
    assert sos["device_class"] == "safety" and sos["off_delay"] == 300
    [(_, _, retain)] = state_messages(_event("101-sos", Family.SOS, Kind.SOS_PRESSED), config)
    assert retain is False  # a press replayed after a Home Assistant restart would be a new alarm
    # The Kerui contact reports tamper but never its end.
    tamper = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_main-door_tamper/config"]
    assert tamper["off_delay"] == 300
    # States are retained.
    smoke = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-smoke_smoke/config"]
    assert "off_delay" not in smoke
    [(_, _, retain)] = state_messages(_event("101-smoke", Family.SMOKE, Kind.SMOKE_ALARM), config)
    assert retain is True
    longer = HaSettings(off_delay=900)
    assert (
        _configs(discovery_messages(config, longer))[
            "homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-sos_sos/config"
        ]["off_delay"]
        == 900
    )


# ------------------------------------------------------------------------------ alerts


def test_alert_states_per_household_building_and_site() -> None:
    config = _site()
    sos = _alert(
        "sos:1-1-101",
        Severity.CRITICAL,
        Location("1", "1", "101", "卧室"),
        "【紧急呼叫】1号楼1单元101室 卧室 独居老人王秀英 按下紧急呼叫按钮，请立即处置",
        last_seen=5.0,
    )
    ticket = _alert(
        "maintenance:battery:main-door",
        Severity.GENERAL,
        Location("1", "", "", "单元门"),
        "低电量",
        9.0,
        state=AlertState.ACKNOWLEDGED,
    )
    gone = _alert("smoke_alarm:101-smoke", Severity.MAJOR, Location("1", "1", "101"), "x", state=AlertState.RESOLVED)
    states = {t: (p, r) for t, p, r in alert_state_messages([sos, ticket, gone], config)}
    base = "sensegate/gw-test/ha"
    assert all(r for _, r in states.values())
    assert states[f"{base}/household/1-1-101/alerts"][0] == "ON"
    assert states[f"{base}/household/1-1-102/alerts"][0] == "OFF"
    assert states[f"{base}/building/1/alerts"][0] == "ON"
    assert states[f"{base}/site/alerts"][0] == "ON"
    assert states[f"{base}/site/open_alerts"][0] == "2"
    flat = json.loads(states[f"{base}/household/1-1-101/alerts/attributes"][0])
    assert flat["count"] == 1
    assert (flat["highest_severity"], flat["highest_severity_zh"]) == (1, "一级(特别重大)")
    assert flat["latest_message"] == sos.message_zh
    assert "王秀英" in states[f"{base}/household/1-1-101/alerts/attributes"][0]  # not \\u-escaped
    building = json.loads(states[f"{base}/building/1/alerts/attributes"][0])
    assert building["count"] == 2 and building["highest_severity"] == 1
    assert building["unacknowledged"] == 1  # someone took the ticket
    assert building["latest_message"] == "低电量"  # the most recent
    assert [a["id"] for a in building["alerts"]] == [sos.id, ticket.id]  # most severe first
    empty = json.loads(states[f"{base}/household/1-1-102/alerts/attributes"][0])
    assert empty == {
        "count": 0,
        "unacknowledged": 0,
        "highest_severity": None,
        "highest_severity_zh": "",
        "latest_message": "",
        "latest_at": None,
        "alerts": [],
    }


def test_alert_entities_are_announced_as_safety_with_attributes() -> None:
    configs = _configs(discovery_messages(_site()))
    household = configs["homeassistant/binary_sensor/gw-test/sensegate_gw-test_hh_1-1-101_alerts/config"]
    assert household["device_class"] == "safety"
    assert household["json_attributes_topic"] == "sensegate/gw-test/ha/household/1-1-101/alerts/attributes"
    count = configs["homeassistant/sensor/gw-test/sensegate_gw-test_gw_open_alerts/config"]
    assert count["state_topic"] == "sensegate/gw-test/ha/site/open_alerts"


# ------------------------------------------------------------------------------ the bridge


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.fail = False

    async def __call__(self, topic: str, payload: str, retain: bool) -> None:
        if self.fail:
            raise ConnectionError("broker away")
        self.sent.append((topic, payload, retain))


async def test_bridge_announces_and_reannounces_on_home_assistant_birth() -> None:
    config = _site()
    pub = _Recorder()
    bridge = HaBridge(config, pub)
    discovery = discovery_messages(config)
    await bridge.announce()
    assert pub.sent == discovery
    bridge.update([_event("101-smoke", Family.SMOKE, Kind.SMOKE_ALARM)])
    bridge.update([_event("101-sos", Family.SOS, Kind.SOS_PRESSED)])
    await bridge.flush()
    assert pub.sent[len(discovery) :] == [
        ("sensegate/gw-test/ha/101-smoke/smoke", "ON", True),
        ("sensegate/gw-test/ha/101-sos/sos", "ON", False),
    ]
    pub.sent.clear()
    await bridge.on_message("homeassistant/status", b"offline")
    assert pub.sent == []
    await bridge.on_message("homeassistant/status", b"online")
    # Configs again, then the retained states it knows; not the old SOS press.
    assert pub.sent == [*discovery, ("sensegate/gw-test/ha/101-smoke/smoke", "ON", True)]
    assert bridge.announcements == 2


async def test_bridge_keeps_states_while_the_broker_is_away() -> None:
    config = _site()
    pub = _Recorder()
    bridge = HaBridge(config, pub)
    pub.fail = True
    bridge.update([_event("101-door", Family.DOOR, Kind.DOOR_OPENED)])
    with pytest.raises(ConnectionError):
        await bridge.flush()
    bridge.update([_event("101-door", Family.DOOR, Kind.DOOR_CLOSED)])  # replaces, does not queue
    bridge.note_alert(_alert("sos:1-1-101", Severity.CRITICAL, Location("1", "1", "101"), "紧急呼叫"))
    pub.fail = False
    await bridge.flush()
    sent = dict((t, p) for t, p, _ in pub.sent)
    assert [p for t, p, _ in pub.sent if t.endswith("101-door/door")] == ["OFF"]
    assert sent["sensegate/gw-test/ha/household/1-1-101/alerts"] == "ON"
    # Resolving it turns the household off again, and only what changed is sent.
    pub.sent.clear()
    bridge.note_alert(
        _alert("sos:1-1-101", Severity.CRITICAL, Location("1", "1", "101"), "紧急呼叫", state=AlertState.RESOLVED)
    )
    await bridge.flush()
    changed = {t.removeprefix("sensegate/gw-test/ha/") for t, _, _ in pub.sent}
    assert changed == {
        "household/1-1-101/alerts",
        "household/1-1-101/alerts/attributes",
        "building/1/alerts",
        "building/1/alerts/attributes",
        "site/alerts",
        "site/alerts/attributes",
        "site/open_alerts",
    }


async def test_bridge_deletes_configs_of_devices_no_longer_configured() -> None:
    pub = _Recorder()
    bridge = HaBridge(_site(), pub)
    assert bridge.subscriptions() == ["homeassistant/status", "homeassistant/+/gw-test/+/config"]
    ours = "homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_101-door_door/config"
    stale = "homeassistant/binary_sensor/gw-test/sensegate_gw-test_dev_removed_door/config"
    await bridge.on_message(ours, b"{}")
    await bridge.on_message(stale, b"")  # already deleted
    await bridge.on_message("homeassistant/binary_sensor/other-gw/x/config", b"{}")
    assert pub.sent == []
    await bridge.on_message(stale, b"{}")
    assert pub.sent == [(stale, "", True)]


# ------------------------------------------------------------------------------ real broker


async def _messages(client: aiomqtt.Client) -> AsyncIterator[tuple[str, bytes | str]]:
    async for msg in client.messages:
        assert isinstance(msg.payload, bytes)
        yield msg.topic.value, msg.payload


class _Watcher:
    """A subscriber recording (topic, payload, retain) on some filters."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.broker = broker
        self.filters = filters
        self.seen: list[tuple[str, str, bool]] = []
        self.changed = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=f"w-{uuid.uuid4().hex[:8]}") as c:
            self.client = c
            for f in self.filters:
                await c.subscribe(f, qos=1)
            self._ready.set()
            async for msg in c.messages:
                assert isinstance(msg.payload, bytes)
                self.seen.append((msg.topic.value, msg.payload.decode(), msg.retain))
                self.changed.set()

    async def wait_for(self, check: Any) -> None:
        async with asyncio.timeout(10):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def __aenter__(self) -> _Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
def ha_names() -> Iterator[tuple[str, str]]:
    """A gateway id and a discovery prefix of this test's own: the broker is shared."""
    tag = uuid.uuid4().hex[:8]
    yield f"gw-{tag}", f"ha-{tag}"


@pytest.mark.integration
async def test_bridge_against_mosquitto(mosquitto: Mosquitto, ha_names: tuple[str, str]) -> None:
    gateway_id, prefix = ha_names
    config = parse_config({**minimal_site(), "gateway": {"id": gateway_id, "site": "测试小区"}})
    settings = HaSettings(enabled=True, discovery_prefix=prefix, status_topic=f"{prefix}/status")
    discovery = {t: p for t, p, _ in discovery_messages(config, settings)}
    stale = f"{prefix}/binary_sensor/{gateway_id}/sensegate_{gateway_id}_dev_gone_door/config"

    async with _Watcher(mosquitto, f"{prefix}/#") as old:  # a config left by an earlier setup
        assert old.client is not None
        await old.client.publish(stale, b'{"name":"old"}', qos=1, retain=True)

    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"ha-{gateway_id}") as client:

        async def publish(topic: str, payload: str, retain: bool) -> None:
            await client.publish(topic, payload.encode(), qos=1, retain=retain)

        bridge = HaBridge(config, publish, settings)
        for f in bridge.subscriptions():
            await client.subscribe(f, qos=1)
        async with _Watcher(mosquitto, f"{prefix}/#") as live:
            runner = asyncio.create_task(bridge.run(_messages(client)))
            # The stale config is deleted (an empty retained message).
            await live.wait_for(lambda: (stale, "", False) in live.seen)
        try:
            async with _Watcher(mosquitto, f"{prefix}/#", f"sensegate/{gateway_id}/ha/#") as late:
                # A subscriber arriving later finds every config retained, and nothing stale.
                await late.wait_for(lambda: {t for t, _, r in late.seen if r} >= set(discovery))
                assert {t: p for t, p, r in late.seen if r and t.startswith(prefix)} == discovery
                smoke = json.loads(discovery[next(t for t in discovery if "101-smoke_smoke" in t)])
                assert smoke["device"]["name"] == "1号楼1单元101室 厨房 烟感"
                count = f"sensegate/{gateway_id}/ha/site/open_alerts"
                bridge.update_alerts([])
                await late.wait_for(lambda: (count, "0", False) in late.seen)

                # Home Assistant restarts: its birth message makes the bridge announce again,
                # configs first, then the states it knows.
                late.seen.clear()
                assert late.client is not None
                await late.client.publish(f"{prefix}/status", b"online", qos=1)
                await late.wait_for(lambda: (count, "0", False) in late.seen)
                again = [t for t, _, r in late.seen if not r]
                assert set(again) >= set(discovery)
                assert max(again.index(t) for t in discovery) < again.index(count)

            async with _Watcher(mosquitto, f"sensegate/{gateway_id}/ha/#") as states:
                bridge.update([_event("101-smoke", Family.SMOKE, Kind.SMOKE_ALARM)])
                topic = f"sensegate/{gateway_id}/ha/101-smoke/smoke"
                await states.wait_for(lambda: (topic, "ON", False) in states.seen)
            async with _Watcher(mosquitto, f"sensegate/{gateway_id}/ha/101-smoke/smoke") as later:
                await later.wait_for(lambda: (topic, "ON", True) in later.seen)  # retained
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert runner.cancelled()
