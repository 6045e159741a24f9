"""Serial fall radars end to end, through real pseudo-terminals and a real broker.

The simulated radar (``simulators.serial_radar.PtyRadar``) writes frames made by the driver's own
codec to a pty; the gateway opens the pty through a symlink (as it would open
/dev/serial/by-id/…), stores the events and raises alerts over Mosquitto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.models import Kind
from gateway.runtime import Gateway
from simulators.serial_radar import PtyRadar
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Subscriber, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


def _site(tmp_path: Path, protocol: str = "mr60fda1", **serial: Any) -> dict[str, Any]:
    site = minimal_site()
    model = "MR60FDA1" if protocol == "mr60fda1" else "MR60FDA2"
    site["devices"].append(
        {
            "id": "101-radar",
            "family": "fall",
            "model": model,
            "household": "1-1-101",
            "room": "卫生间",
            "serial": {
                "port": str(tmp_path / "ttyRADAR"),
                "protocol": protocol,
                "idle_timeout": 3,
                "backoff_initial": 0.1,
                "backoff_max": 0.5,
                **serial,
            },
        }
    )
    return site


async def opened(gateway: Gateway, times: int = 1) -> None:
    """Wait until the gateway has the port open (bytes written before that are flushed by the open)."""
    await eventually(lambda: gateway.serial.links["101-radar"].opens >= times, what=f"open #{times} of the port")


def kinds(gateway: Gateway, device: str = "101-radar") -> list[Kind]:
    return [e.kind for e in gateway.store.events_after(0, 10_000) if e.device_id == device]


async def test_scripted_fall_reaches_the_store_and_raises_the_fall_alert(mosquitto: Mosquitto, tmp_path: Path) -> None:
    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda1", heartbeat_interval=0.5, level_interval=0.2)
    radar.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    alerts = Subscriber(mosquitto.host, mosquitto.port, f"{config.topic_prefix}/alerts/events")
    try:
        async with running(config) as gateway:
            await opened(gateway)
            radar.send(Kind.HEARTBEAT)
            await eventually(lambda: Kind.ONLINE in kinds(gateway), what="the radar online")
            radar.presence(True)
            await radar.fall(recover=False, still_after=0.2)
            found = await eventually(
                lambda: [a for a in alerts.json() if a["alert"]["rule"] == "fall"], what="the fall alert"
            )
            alert = found[0]["alert"]
            assert found[0]["transition"] == "raised" and alert["device_id"] == "101-radar"
            # 二级 at once; the rules escalate to 一级 after 60 s without recovery.
            assert alert["severity"] == 2 and alert["resident"] == "r1"
            assert "1号楼1单元101室 卫生间" in alert["message_zh"]
            await eventually(lambda: Kind.RESIDENCE in kinds(gateway), what="residence")
            events = [e for e in gateway.store.events_after(0, 10_000) if e.device_id == "101-radar"]
            fall = next(e for e in events if e.kind == Kind.FALL_DETECTED)
            assert fall.raw == "53 59 83 01 00 01 01 32 54 43" and fall.source == "serial:mr60fda1"
            assert fall.location.household == "101" and fall.location.room == "卫生间"
            residence = next(e for e in events if e.kind == Kind.RESIDENCE)
            assert residence.values == {"present": True, "fall_active": True}  # the escalation signal
            # The radar's stillness after the fall is no recovery: nothing downgraded the alert.
            assert [a["transition"] for a in alerts.json()] == ["raised"]
            counters = gateway.store.counters()
            assert counters["serial.101-radar.frames"] >= 5
            assert counters.get("serial.101-radar.bad_checksums", 0) == 0
    finally:
        alerts.close()
        radar.close()


async def test_port_vanishes_and_comes_back_as_another_pty(mosquitto: Mosquitto, tmp_path: Path) -> None:
    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda1")
    first = radar.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await opened(gateway)
            radar.send(Kind.FALL_DETECTED)
            await eventually(lambda: Kind.FALL_DETECTED in kinds(gateway), what="the fall before the unplug")
            radar.vanish()  # unplugged mid-stream
            await eventually(lambda: Kind.OFFLINE in kinds(gateway), what="offline")
            second = radar.reappear()
            assert second != first or radar.opens == 2
            # The gateway reopens by itself; the next frame after it did is delivered.
            await opened(gateway, 2)
            radar.send(Kind.FALL_CLEARED)
            await eventually(lambda: Kind.FALL_CLEARED in kinds(gateway), what="the clear after the replug")
            seen = kinds(gateway)
            assert seen.index(Kind.FALL_DETECTED) < seen.index(Kind.OFFLINE) < seen.index(Kind.FALL_CLEARED)
            assert seen.count(Kind.ONLINE) == 2
            offline = next(e for e in gateway.store.events_after(0, 1000) if e.kind == Kind.OFFLINE)
            assert offline.values["reason"] == "read_error"
            assert gateway.store.counters()["serial.101-radar.reopens"] >= 1
    finally:
        radar.close()


async def test_silent_radar_goes_offline_then_online_again(mosquitto: Mosquitto, tmp_path: Path) -> None:
    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda1")
    radar.open()
    config = site_config(_site(tmp_path, idle_timeout=1), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await opened(gateway)
            radar.send(Kind.HEARTBEAT)
            await eventually(lambda: Kind.ONLINE in kinds(gateway), what="online")
            # powered, port open, but nothing said: only the idle timeout can tell
            offline = await eventually(
                lambda: [e for e in gateway.store.events_after(0, 1000) if e.kind == Kind.OFFLINE], what="offline"
            )
            assert offline[0].values["reason"] == "silent"
            await opened(gateway, 2)
            radar.send(Kind.PRESENCE, present=True)
            await eventually(lambda: kinds(gateway).count(Kind.ONLINE) == 2, what="online again")
    finally:
        radar.close()


async def test_noise_bursts_are_counted_while_good_frames_around_them_decode(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda1", seed=7)
    radar.open()
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await opened(gateway)
            radar.send(Kind.HEARTBEAT)
            await eventually(lambda: Kind.ONLINE in kinds(gateway), what="online")
            noise = len(radar.noise(50))
            radar.send(Kind.PRESENCE, chunks=4, present=True)  # one frame over four writes
            bad = bytearray(radar.sim.report(Kind.FALL_DETECTED))
            bad[-3] ^= 0xFF  # a fall frame hit by line noise: rejected, counted
            radar.write(bytes(bad))
            noise += len(radar.noise(30))
            radar.send(Kind.MOTION, state="moving")
            radar.send(Kind.RESIDENCE, present=False)
            await eventually(lambda: Kind.RESIDENCE in kinds(gateway), what="the frames after the noise")
            seen = kinds(gateway)
            assert Kind.PRESENCE in seen and Kind.MOTION in seen and Kind.FALL_DETECTED not in seen
            counters = gateway.store.counters()
            assert counters["serial.101-radar.bad_checksums"] == 1
            assert counters["serial.101-radar.resync_bytes"] >= noise + 1
    finally:
        radar.close()


async def test_mr60fda2_gets_its_settings_and_reports_a_fall(mosquitto: Mosquitto, tmp_path: Path) -> None:
    radar = PtyRadar(tmp_path / "ttyRADAR", "mr60fda2")
    radar.open()
    site = _site(tmp_path, "mr60fda2", radar={"install_height": 2.5, "fall_threshold": 0.8, "sensitivity": 20})
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    try:
        async with running(config) as gateway:
            await opened(gateway)
            # the parameters query after the settings is answered: a heartbeat carrying them
            beats = await eventually(
                lambda: [e for e in gateway.store.events_after(0, 1000) if e.kind == Kind.HEARTBEAT], what="heartbeat"
            )
            assert beats[0].values == {"install_height": 2.5, "fall_threshold": pytest.approx(0.8), "sensitivity": 20}
            radar.send(Kind.FALL_DETECTED)
            await eventually(lambda: Kind.FALL_DETECTED in kinds(gateway), what="the fall")
            assert len(gateway.alerts.store.alerts(open_only=True)) == 1
    finally:
        radar.close()
