"""The wired devices of a site on pseudo-terminals (``SerialSimulators``) and ``sensegate simulate``
starting them next to the MQTT devices."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from drivers import SERIAL_CODECS
from drivers.modbus_bus import ModbusBus
from drivers.modbus_profiles import builtin_profiles
from drivers.serial_link import Frames, LinkItem, SerialLink
from gateway.clock import SystemClock, VirtualClock
from gateway.models import Kind, Observation
from gateway.site.config import SiteConfig, parse_config
from simulators.block import demo_site, render_toml
from simulators.pty import PtyPort
from simulators.runner import (
    GAS_LEAK_AT,
    GAS_LEAK_FOR,
    WIRED_FALL_AT,
    WIRED_FALL_RECOVER,
    SerialSimulators,
    pty_place_problem,
)
from tests.servers import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
PROFILES = builtin_profiles()


def _site(tmp_path: Path) -> dict[str, Any]:
    """The demo block (two buildings: one wired radar, one Modbus bus) with its ports in tmp_path."""
    return demo_site(
        2,
        2,
        data_dir=str(tmp_path),
        radar_port=str(tmp_path / "ttyMR60FDA1"),
        modbus_port=str(tmp_path / "ttyRS485"),
    )


def test_ports_a_simulator_cannot_create_are_named_and_left_out() -> None:
    config = parse_config(demo_site(2, 2))  # /dev/serial/by-id/… ports, as an installer writes them
    sims = SerialSimulators(config, clock=VirtualClock())
    assert not sims and not sims.radars and not sims.buses
    radar, bus = sims.skipped
    assert radar.startswith("serial radar 2-1-101-fall: not simulated on /dev/serial/by-id/usb-Seeed_MR60FDA1")
    assert bus.startswith("Modbus bus b1 (1-2-101-gas, 1-1-stair-smoke): not simulated on /dev/serial/by-id/")
    assert all("writable directory" in line for line in sims.skipped)


def test_a_device_node_or_a_running_simulator_is_never_replaced(tmp_path: Path) -> None:
    assert pty_place_problem(str(tmp_path / "ttyX")) == ""
    assert "does not exist" in pty_place_problem(str(tmp_path / "no" / "ttyX"))
    (tmp_path / "file").write_text("")
    assert "is not a simulator's pty link" in pty_place_problem(str(tmp_path / "file"))
    (tmp_path / "usb").symlink_to("/dev/ttyUSB0")
    assert "a link to /dev/ttyUSB0" in pty_place_problem(str(tmp_path / "usb"))
    (tmp_path / "stale").symlink_to("/dev/pts/987654")  # left by a simulator that was killed
    assert pty_place_problem(str(tmp_path / "stale")) == ""
    live = PtyPort(tmp_path / "live")
    live.open()
    try:
        assert "in use" in pty_place_problem(str(live.link))
    finally:
        live.close()
    if os.geteuid() != 0:  # root may write anywhere
        assert "not writable" in pty_place_problem("/proc/ttyX")


async def test_the_script_raises_and_clears_a_gas_alarm_and_plays_a_wired_fall(tmp_path: Path) -> None:
    config = parse_config(_site(tmp_path))
    clock = VirtualClock()
    sims = SerialSimulators(config, clock=clock)
    assert not sims.skipped
    assert set(sims.radars) == {"2-1-101-fall"} and set(sims.buses) == {"b1"}
    assert {d: det.unit_id for d, det in sims.detectors.items()} == {"1-2-101-gas": 1, "1-1-stair-smoke": 2}
    sims.open()
    stop = asyncio.Event()
    task = asyncio.create_task(sims.run(stop, incidents=True))
    await clock.advance(0)  # let the script start its timers at t = 0
    try:
        assert os.readlink(tmp_path / "ttyRS485").startswith("/dev/pts/")
        assert sims.describe()[1].startswith(f"Modbus bus b1 on {tmp_path / 'ttyRS485'} → /dev/pts/")
        gas, radar = sims.detectors["1-2-101-gas"], sims.radars["2-1-101-fall"]
        await clock.advance(GAS_LEAK_AT - 0.5)
        assert not gas.state.levels and radar.sim.present
        await clock.advance(1)
        assert gas.state.levels == ("low", "high") and gas.state.concentration > 0
        assert sims.detectors["1-1-stair-smoke"].state.levels == ()  # one detector only
        await clock.advance(GAS_LEAK_FOR)
        assert not gas.state.levels
        await clock.advance(WIRED_FALL_AT - GAS_LEAK_AT - GAS_LEAK_FOR)
        assert radar.sim.fallen
        await clock.advance(WIRED_FALL_RECOVER)
        assert not radar.sim.fallen
    finally:
        stop.set()
        await clock.advance(5)
        await asyncio.wait_for(task, 5)
        sims.close()
    assert not (tmp_path / "ttyRS485").exists() and not (tmp_path / "ttyMR60FDA1").is_symlink()


async def _until(cond: Any, what: str, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _write_config(tmp_path: Path, site: dict[str, Any], broker: Mosquitto) -> Path:
    # Topics of its own: other tests' gateways on the shared broker must not see this traffic
    # (zigbee2mqtt availability is retained).
    tag = uuid.uuid4().hex[:8]
    site["mqtt"] = {
        "host": broker.host,
        "port": broker.port,
        "zigbee2mqtt_base": f"z2m-{tag}",
        "rtl_433_topic": f"rtl-{tag}/+/events",
        "native_base": f"native-{tag}",
    }
    path = tmp_path / "site.toml"
    path.write_text(render_toml(site), encoding="utf-8")
    return path


async def _simulate(config: Path, broker: Mosquitto, duration: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "simulate",
        "-c",
        str(config),
        "--broker",
        f"{broker.host}:{broker.port}",
        "--duration",
        str(duration),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=config.parent,
    )


@pytest.mark.integration
async def test_simulate_starts_the_serial_simulators_next_to_the_mqtt_ones(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = _site(tmp_path)
    config: SiteConfig = parse_config(site)
    path = _write_config(tmp_path, site, mosquitto)
    proc = await _simulate(path, mosquitto, 8)
    bus_port, radar_port = config.modbus_buses[0].port, str(tmp_path / "ttyMR60FDA1")
    records: list[tuple[str, Observation]] = []
    frames: list[Kind] = []

    async def emit(device_id: str, observations: list[Observation], raw: str) -> None:
        records.extend((device_id, o) for o in observations)

    async def handle(item: LinkItem) -> None:
        if isinstance(item, Frames):
            frames.extend(o.kind for f in item.frames for o in SERIAL_CODECS["mr60fda1"].decode(f))

    # What the gateway would do: poll the bus and read the radar, at the configured paths.
    bus = ModbusBus(
        bus_port,
        [("gas", 1, PROFILES["GENERIC-GAS"]), ("smoke", 2, PROFILES["GENERIC-SMOKE"])],
        SystemClock(),
        poll_interval=0.1,
        timeout=0.3,
        backoff_initial=0.1,
        backoff_max=0.2,
    )
    link = SerialLink(radar_port, SERIAL_CODECS["mr60fda1"], SystemClock(), backoff_initial=0.1, backoff_max=0.2)
    readers = [asyncio.create_task(bus.run(emit)), asyncio.create_task(link.run(handle))]
    try:
        await _until(lambda: {d for d, o in records if o.kind == Kind.ONLINE} == {"gas", "smoke"}, "both detectors")
        assert any(d == "gas" and o.kind == Kind.GAS_CLEAR for d, o in records)  # no incidents asked for
        await _until(lambda: Kind.HEARTBEAT in frames and Kind.MOTION in frames, "the radar's frames")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.wait(readers)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    assert any(line.startswith(f"simulating Modbus bus b1 on {bus_port} → /dev/pts/") for line in lines), lines
    assert any(line.startswith(f"simulating serial radar 2-1-101-fall (mr60fda1) on {radar_port}") for line in lines)
    assert lines[-1].startswith("published ") and "not simulated" not in err.decode()
    assert not (tmp_path / "ttyRS485").is_symlink() and not (tmp_path / "ttyMR60FDA1").is_symlink()  # cleaned up


@pytest.mark.integration
async def test_simulate_says_which_wired_devices_it_cannot_simulate(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = _write_config(tmp_path, demo_site(2, 2, data_dir=str(tmp_path)), mosquitto)  # /dev/serial/by-id ports
    proc = await _simulate(path, mosquitto, 1)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    skipped = [line for line in err.decode().splitlines() if line.startswith("not simulated: ")]
    assert len(skipped) == 2 and "2-1-101-fall" in skipped[0] and "Modbus bus b1" in skipped[1]
    assert out.decode().splitlines()[-1].startswith("published ")
