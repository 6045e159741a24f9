"""Modbus RTU detectors end to end: a simulated RS-485 bus on a real pty, the real gateway.

``simulators.modbus_detector.PtyModbusBus`` answers polls with registers made by the profile's
own ``encode``; the gateway opens the pty through a symlink (as it would open
/dev/serial/by-id/…) with pymodbus, stores what the detectors report and runs the rules on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_profiles import Profile, builtin_profiles
from gateway.models import Event, Kind
from gateway.runtime import Gateway
from simulators.modbus_detector import PtyModbusBus
from tests.gateway.factories import minimal_site
from tests.gateway.harness import eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

PROFILES = builtin_profiles()
GAS, SMOKE = PROFILES["GENERIC-GAS"], PROFILES["GENERIC-SMOKE"]
OFFLINE_AFTER = 2


def _site(tmp_path: Path) -> dict[str, Any]:
    site = minimal_site()
    site["modbus_buses"] = [
        {
            "id": "b1",
            "port": str(tmp_path / "ttyRS485"),
            # Long enough that a busy CI machine's scheduling delay is no timeout of the healthy
            # unit (0.15 s was: its failures counter is asserted absent below).
            "timeout": 0.6,
            "poll_interval": 0.05,
            "offline_after": OFFLINE_AFTER,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        }
    ]
    site["devices"] += [
        {
            "id": "101-gas",
            "family": "gas",
            "model": "GENERIC-GAS",
            "household": "1-1-101",
            "room": "厨房",
            "modbus": {"bus": "b1", "unit_id": 1, "profile": "GENERIC-GAS"},
        },
        {
            "id": "102-smoke",
            "family": "smoke",
            "model": "GENERIC-SMOKE",
            "household": "1-1-102",
            "room": "客厅",
            "modbus": {"bus": "b1", "unit_id": 7, "profile": "GENERIC-SMOKE"},
        },
    ]
    return site


def events(gateway: Gateway, device: str) -> list[Event]:
    return [e for e in gateway.store.events_after(0, 10_000) if e.device_id == device]


def kinds(gateway: Gateway, device: str) -> list[Kind]:
    return [e.kind for e in events(gateway, device)]


async def test_gas_alarm_raises_and_resolves_the_alert_and_a_mute_unit_goes_offline(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    sim = PtyModbusBus(tmp_path / "ttyRS485")
    gas = sim.add(1, GAS)
    smoke = sim.add(7, SMOKE)
    sim.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await eventually(
                lambda: Kind.GAS_CLEAR in kinds(gateway, "101-gas") and Kind.SMOKE_CLEAR in kinds(gateway, "102-smoke"),
                what="both detectors online and clear",
            )
            assert kinds(gateway, "101-gas")[0] == Kind.ONLINE

            gas.alarm("high", concentration=48)
            alarm = (await eventually(lambda: [e for e in events(gateway, "101-gas") if e.kind == Kind.GAS_ALARM]))[0]
            assert alarm.values == {"level": "high"} and alarm.family.value == "gas"
            assert alarm.source == "modbus:GENERIC-GAS" and alarm.model == "GENERIC-GAS"
            assert alarm.location.building == "1" and alarm.location.household == "101"
            assert alarm.location.room == "厨房"
            assert alarm.raw.startswith("8003" + "0030")  # valid + low + high bits; 48 %LEL
            tele = [e for e in events(gateway, "101-gas") if e.kind == Kind.HEARTBEAT]
            assert tele[-1].values["concentration"] == 48.0 and tele[-1].values["unit"] == "%LEL"
            raised = await eventually(
                lambda: [a for a in gateway.store.alerts() if a.rule == "gas_alarm"], what="the gas alert"
            )
            assert raised[0].device_id == "101-gas" and raised[0].severity == 2
            assert "燃气报警" in raised[0].message_zh
            assert Kind.SMOKE_ALARM not in kinds(gateway, "102-smoke")  # that detector only

            gas.clear()
            await eventually(lambda: kinds(gateway, "101-gas").count(Kind.GAS_CLEAR) == 2, what="gas clear")
            await eventually(
                lambda: not [a for a in gateway.store.alerts(open_only=True) if a.rule == "gas_alarm"],
                what="the gas alert resolved",
            )

            smoke.mute = True  # unplugged from the bus; the gas detector keeps answering
            offline = await eventually(
                lambda: [e for e in events(gateway, "102-smoke") if e.kind == Kind.OFFLINE], what="offline"
            )
            assert offline[0].values == {"port": str(sim.link), "reason": "timeout", "failures": OFFLINE_AFTER}
            assert Kind.OFFLINE not in kinds(gateway, "101-gas")
            smoke.mute = False
            await eventually(lambda: kinds(gateway, "102-smoke").count(Kind.ONLINE) == 2, what="online again")

            counters = await eventually(
                lambda: (c := gateway.store.counters()).get("modbus.b1.102-smoke.timeouts", 0) >= OFFLINE_AFTER and c,
                what="the bus counters",
            )
            assert counters["modbus.b1.polls"] >= counters["modbus.b1.101-gas.polls"] > 0
            assert counters["modbus.b1.failures"] >= OFFLINE_AFTER
            assert "modbus.b1.101-gas.failures" not in counters
    finally:
        sim.close()


async def test_undeclared_alarm_bits_are_counted_and_kept_as_rejected(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # The detector sets a bit its profile does not declare (the site's map is wrong or old).
    levels = {**SMOKE.alarm.levels, "prealarm": 3}
    odd: Profile = SMOKE.model_copy(update={"alarm": SMOKE.alarm.model_copy(update={"levels": levels})})
    sim = PtyModbusBus(tmp_path / "ttyRS485")
    sim.add(1, GAS)
    smoke = sim.add(7, odd)
    sim.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await eventually(lambda: Kind.SMOKE_CLEAR in kinds(gateway, "102-smoke"), what="the smoke detector")
            smoke.alarm("prealarm")
            await eventually(lambda: gateway.store.counters().get("malformed.unknown_code"), what="malformed")
            rejected = gateway.store.rejected_payloads()
            assert rejected[0]["topic"] == "modbus/b1/102-smoke" and rejected[0]["reason"] == "unknown_code"
            assert rejected[0]["payload"] == "0009"
            assert Kind.SMOKE_ALARM not in kinds(gateway, "102-smoke")  # an alarm nobody can read is not guessed
            assert Kind.OFFLINE not in kinds(gateway, "102-smoke")  # it answered: it is there
    finally:
        sim.close()
