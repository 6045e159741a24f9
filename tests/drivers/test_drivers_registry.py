"""Walk the registries: every format and every model is complete, documented and consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import drivers
from drivers import native, rtl433, zigbee2mqtt
from gateway.models import Family, Kind

README = (Path(drivers.__file__).parent / "README.md").read_text(encoding="utf-8")

# One sample per model, as the device publishes it. Adding a model without a sample fails below.
Z2M_SAMPLES: dict[str, str] = {
    "HS1SA": '{"battery":96.5,"linkquality":92,"enrolled":true,"smoke":true,"battery_low":false}',
    "TS0205": '{"smoke":false,"battery_low":false,"tamper":false,"battery":100,"linkquality":87}',
    "MCCGQ11LM": '{"contact":false,"battery":100,"voltage":3005,"temperature":25,"linkquality":120}',
    "TS0215A_sos": '{"action":"emergency","battery":100,"linkquality":110}',
    "HS1EB": '{"action":"single","battery":90}',
    "MIR-HE200-TY_fall": '{"presence":true,"fall_down_status":"fall"}',
    "HS2FD-EF1-3.0": '{"occupancy":true,"fall_status":"fall_alarm"}',
    "FDS315": '{"status":"falling"}',
}
RTL_SAMPLES: dict[str, tuple[dict[str, Any], dict[str, str] | None]] = {
    "Kerui-Security": ({"model": "Kerui-Security", "id": 123456, "cmd": 14, "opened": 1, "state": "open"}, None),
    "Chuango-Security": ({"model": "Chuango-Security", "id": 12345, "cmd": "Alarm", "cmd_id": 2}, None),
    "Generic-Remote": ({"model": "Generic-Remote", "id": 4660, "cmd": 10}, {"10": "sos_pressed"}),
    "Honeywell-Security": (
        {"model": "Honeywell-Security", "id": 1, "channel": 8, "contact_open": 1, "alarm": 0, "tamper": 0},
        None,
    ),
    "Interlogix-Security": (
        {"model": "Interlogix-Security", "subtype": "contact", "id": "a1b2c3", "switch1": "open", "battery_ok": 1},
        None,
    ),
    "DSC-Security": ({"model": "DSC-Security", "id": 2501272, "closed": 0, "tamper": 0, "battery_ok": 1}, None),
    "Visonic-Powercode": ({"model": "Visonic-Powercode", "id": "6f4770", "alarm": 1, "tamper": 0}, None),
    "Smoke-GS558": ({"model": "Smoke-GS558", "id": 12345, "unit": 3, "learn": 0}, None),
}


def test_formats_registry() -> None:
    assert {"zigbee2mqtt": zigbee2mqtt, "rtl_433": rtl433, "native": native} == drivers.FORMATS
    for name, module in drivers.FORMATS.items():
        assert module.__doc__, name
        assert f"`{name}`" in README or name in README


def test_every_model_has_a_sample() -> None:
    assert set(Z2M_SAMPLES) == set(zigbee2mqtt.MODELS)
    assert set(RTL_SAMPLES) == set(rtl433.MODELS)


@pytest.mark.parametrize("model", sorted(zigbee2mqtt.MODELS))
def test_z2m_model(model: str) -> None:
    spec = zigbee2mqtt.MODELS[model]
    assert isinstance(spec.family, Family) and spec.description
    observations = zigbee2mqtt.decode_state(Z2M_SAMPLES[model].encode(), model)
    assert observations, "the sample must say something"
    assert {obs.kind for obs in observations} <= spec.emits  # what it says it emits is what it decodes
    payload = zigbee2mqtt.encode_state(model, observations)
    assert zigbee2mqtt.decode_state(payload, model) == observations
    actions = spec.default_actions
    if actions is not None:
        assert all(kind in Kind._value2member_map_ for kind in actions.values())
    assert f"`{model}`" in README, f"add {model} to the table in drivers/README.md"


@pytest.mark.parametrize("model", sorted(rtl433.MODELS))
def test_rtl433_model(model: str) -> None:
    spec = rtl433.MODELS[model]
    assert isinstance(spec.family, Family) and spec.description
    assert rtl433.normalise_codes(model, spec.table) == dict(spec.table)  # built-in tables are valid tables
    for table in spec.subtypes.values():
        rtl433.normalise_codes(model, table)
    msg, codes = RTL_SAMPLES[model]
    observations = rtl433.decode(msg, codes)
    assert observations and observations[0].kind != Kind.HEARTBEAT
    if codes is None:
        assert {obs.kind for obs in observations} <= spec.emits
    key = rtl433.device_key(msg)
    again = rtl433.parse(rtl433.encode(key[0], key[1], observations, key[2], codes))
    assert rtl433.device_key(again) == key
    assert rtl433.decode(again, codes) == observations
    assert f"`{model}`" in README, f"add {model} to the table in drivers/README.md"


def test_size_guard_is_shared() -> None:
    assert native.MAX_PAYLOAD == 64 * 1024
    assert zigbee2mqtt.load_json is native.load_json  # type: ignore[attr-defined]
    assert rtl433.load_json is native.load_json  # type: ignore[attr-defined]
