"""The demo block: a valid, realistic site config, and config/demo.toml kept in sync with it."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from drivers import rtl433, zigbee2mqtt
from gateway.models import Family
from gateway.site.config import NativeSource, Rtl433Source, Zigbee2MqttSource, load_config, parse_config
from simulators.block import FALL_MODELS, MODBUS_BUS_PORT, SMOKE_MODELS, SOS_MODELS, demo_site, render_toml

DEMO_TOML = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
FAMILIES = {Family.DOOR, Family.SMOKE, Family.FALL, Family.SOS}


def test_demo_site_validates_with_the_expected_shape() -> None:
    config = parse_config(demo_site())
    assert [b.id for b in config.buildings] == ["1", "2"]
    assert [b.name for b in config.buildings] == ["1号楼", "2号楼"]
    assert len(config.households) == 40
    assert config.households[0].id == "1-1-101" and config.households[0].number == "101"
    assert {h.unit for h in config.households} == {"1", "2"}

    zigbee_by_home: dict[str, Counter[Family]] = {h.id: Counter() for h in config.households}
    for d in config.devices:
        if isinstance(d.mqtt, Zigbee2MqttSource):
            zigbee_by_home[d.household][d.family] += 1
            assert d.mqtt.friendly_name.startswith(f"{d.household[0]}号楼/"), d.mqtt.friendly_name
            assert d.family == zigbee2mqtt.MODELS[d.model].family
    # Four zigbee devices in every flat (a door contact, a smoke detector, a fall radar, an SOS
    # button) — but building 2's first flat, whose fall radar is wired (MR60FDA1 on a UART).
    (wired,) = [d for d in config.devices if d.serial is not None]
    assert (wired.id, wired.model, wired.room) == ("2-1-101-fall", "MR60FDA1", "卫生间")
    assert wired.serial is not None and wired.serial.protocol == "mr60fda1"
    assert zigbee_by_home.pop("2-1-101") == Counter(dict.fromkeys(FAMILIES - {Family.FALL}, 1))
    assert all(c == Counter(dict.fromkeys(FAMILIES, 1)) for c in zigbee_by_home.values())
    names = [d.mqtt.friendly_name for d in config.devices if isinstance(d.mqtt, Zigbee2MqttSource)]
    assert len(set(names)) == len(names) == 159
    assert "1号楼/1单元/101/门磁" in names

    models = Counter(d.model for d in config.devices)
    assert set(FALL_MODELS) | set(SMOKE_MODELS) | set(SOS_MODELS) | {"MCCGQ11LM"} <= set(models)
    assert all(d.room in ("卫生间", "卧室") for d in config.devices if d.family == Family.FALL and d.household)


def test_one_modbus_bus_with_a_gas_detector_and_a_smoke_transmitter() -> None:
    config = parse_config(demo_site())
    (bus,) = config.modbus_buses
    assert bus.port == MODBUS_BUS_PORT
    on_bus = {d.id: d for d in config.devices if d.modbus is not None}
    assert set(on_bus) == {"1-1-202-gas", "1-1-stair-smoke"}
    gas, smoke = on_bus["1-1-202-gas"], on_bus["1-1-stair-smoke"]
    assert (gas.family, gas.model, gas.household, gas.room) == (Family.GAS, "GENERIC-GAS", "1-1-202", "厨房")
    assert (smoke.family, smoke.model, smoke.building, smoke.household) == (Family.SMOKE, "GENERIC-SMOKE", "1", "")
    assert all(d.modbus is not None and d.modbus.bus == bus.id for d in on_bus.values())
    # the shipped EXAMPLE profiles, on unit ids of their own
    assert {d.modbus.profile for d in on_bus.values() if d.modbus} == {"GENERIC-GAS", "GENERIC-SMOKE"}
    assert len({d.modbus.unit_id for d in on_bus.values() if d.modbus}) == 2
    # wherever the ports go (sensegate demo: the data dir), and with one flat only
    site = parse_config(demo_site(1, 1, radar_port="/tmp/x/ttyA", modbus_port="/tmp/x/ttyB"))
    assert site.modbus_buses[0].port == "/tmp/x/ttyB"
    assert [d.household for d in site.devices if d.family == Family.GAS] == ["1-1-101"]


def test_public_area_devices() -> None:
    config = parse_config(demo_site())
    public = [d for d in config.devices if not d.household]
    assert all(d.building for d in public)
    access = [d for d in public if isinstance(d.mqtt, NativeSource)]
    assert sorted(d.building for d in access) == ["1", "2"]  # one access controller per building
    assert all(d.family == Family.DOOR for d in access)
    rtl = [d for d in config.devices if isinstance(d.mqtt, Rtl433Source)]
    assert {d.model for d in rtl} >= {"Kerui-Security", "Generic-Remote", "Chuango-Security"}
    assert all(d.model in rtl433.MODELS for d in rtl)
    pendants = [d for d in rtl if d.model == "Generic-Remote"]
    assert pendants and all(d.mqtt.codes for d in pendants if isinstance(d.mqtt, Rtl433Source))
    # a pendant is worn by an elder living alone
    alone = {r.household for r in config.residents if r.lives_alone}
    assert all(d.household in alone for d in pendants)


def test_residents_and_people_living_alone() -> None:
    config = parse_config(demo_site())
    by_home = Counter(r.household for r in config.residents)
    assert set(by_home) == {h.id for h in config.households}  # nobody's flat is empty
    alone = [r for r in config.residents if r.lives_alone]
    assert 0.25 <= len(alone) / len(config.households) <= 0.35
    for r in alone:
        assert by_home[r.household] == 1
        assert r.risk_tier in ("high", "medium")
        relations = {c.relation for c in r.contacts}
        assert {"子女", "网格员"} <= relations
        assert all(c.phone.isdigit() and len(c.phone) == 11 for c in r.contacts)
    # the first flat of each building is a lone, high-risk elder's (the demo incidents rely on it)
    firsts = {f"{b}-1-101" for b in ("1", "2")}
    assert {r.household for r in alone if r.risk_tier == "high"} >= firsts
    assert all(len(r.name) in (2, 3) for r in config.residents)


@pytest.mark.parametrize(("buildings", "households"), [(1, 1), (1, 3), (3, 7), (4, 30)])
def test_other_sizes_validate(buildings: int, households: int) -> None:
    config = parse_config(demo_site(buildings, households, gateway_id="g1", data_dir="/tmp/x"))
    assert len(config.buildings) == buildings
    assert len(config.households) == buildings * households
    assert config.gateway.id == "g1"
    assert any(r.lives_alone for r in config.residents)


def test_demo_site_is_stable() -> None:
    assert demo_site() == demo_site()
    with pytest.raises(ValueError):
        demo_site(0, 20)


def test_render_round_trips() -> None:
    site = demo_site()
    text = render_toml(site)
    assert text.startswith("# SenseGate demo site")
    assert "python -m simulators.block" in text.splitlines()[4]
    assert tomllib.loads(text) == site
    small = demo_site(1, 2)
    assert tomllib.loads(render_toml(small)) == small


def test_committed_demo_toml_is_a_fresh_render() -> None:
    assert DEMO_TOML.read_text(encoding="utf-8") == render_toml(demo_site()), (
        "config/demo.toml is out of date: .venv/bin/python -m simulators.block > config/demo.toml"
    )


def test_committed_demo_toml_loads() -> None:
    config = load_config(DEMO_TOML)
    assert len(config.devices) == len(demo_site()["devices"])
    assert config.gateway.data_dir == DEMO_TOML.parent / "sensegate-demo-data"
