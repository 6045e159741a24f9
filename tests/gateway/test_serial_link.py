"""SerialLink on a virtual clock with an in-memory port: back-off, idle timeout, up/down reports,
counters and the radar latch. No real time passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drivers import mr60fda1, mr60fda2
from drivers.radar_latch import RadarLatch
from drivers.serial_link import Frames, LinkDown, LinkItem, LinkUp, Port, SerialLink
from gateway.clock import VirtualClock
from gateway.errors import ConfigError, TransportError
from gateway.models import Kind, Observation
from gateway.site.config import parse_config
from tests.gateway.factories import minimal_site


class MemoryPort:
    """The in-memory twin of a serial port."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.written: list[bytes] = []
        self.closed = False

    async def read(self) -> bytes:
        item = await self.queue.get()
        if item is None or self.closed:
            self.closed = True
            raise TransportError("lost")
        return item

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class Ports:
    """An opener that fails while ``present`` is False and records the times it was called."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.present = True
        self.opened: list[MemoryPort] = []
        self.attempts: list[float] = []

    async def __call__(self, path: str, baudrate: int) -> Port:
        self.attempts.append(self.clock.monotonic())
        if not self.present:
            raise TransportError(f"cannot open {path}: no such file")
        port = MemoryPort()
        self.opened.append(port)
        return port


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def start(codec: Any = mr60fda1, **kwargs: Any) -> tuple[SerialLink, Ports, list[LinkItem], asyncio.Task[None]]:
    clock = VirtualClock()
    ports = Ports(clock)
    items: list[LinkItem] = []

    async def handle(item: LinkItem) -> None:
        items.append(item)

    link = SerialLink(
        "/dev/ttyX", codec, clock, opener=ports, idle_timeout=10, backoff_initial=1, backoff_max=8, **kwargs
    )
    task = asyncio.create_task(link.run(handle))
    await settle()
    return link, ports, items, task


FALL = mr60fda1.encode(Observation(Kind.FALL_DETECTED))
BEAT = mr60fda1.encode(Observation(Kind.HEARTBEAT))


async def test_frames_up_down_and_capped_backoff() -> None:
    link, ports, items, task = await start()
    clock = link.clock
    assert isinstance(clock, VirtualClock)
    try:
        port = ports.opened[0]
        port.queue.put_nowait(b"\x00noise" + FALL[:4])
        port.queue.put_nowait(FALL[4:] + BEAT)
        await settle()
        assert isinstance(items[0], LinkUp)
        assert isinstance(items[1], Frames) and items[1].frames == (FALL, BEAT)
        assert link.counters.take() == {"bytes": 6 + len(FALL) + len(BEAT), "frames": 2, "resync_bytes": 6}
        # unplugged: a read error, and the port node is gone for a while
        ports.present = False
        port.queue.put_nowait(None)
        await settle()
        assert isinstance(items[2], LinkDown) and items[2].reason == "read_error"
        await clock.advance(60)
        # back-off 1 (after the session), then 2, 4, 8, 8 … between failed opens, one "down" only
        gaps = [b - a for a, b in zip(ports.attempts, ports.attempts[1:], strict=False)]
        assert gaps[:5] == [1, 2, 4, 8, 8]
        assert sum(isinstance(i, LinkDown) for i in items) == 1
        ports.present = True
        await clock.advance(8)
        ports.opened[-1].queue.put_nowait(BEAT)
        await settle()
        assert isinstance(items[-2], LinkUp) and isinstance(items[-1], Frames)
        assert link.counters.reopens == 1
    finally:
        task.cancel()


async def test_silence_beyond_the_idle_timeout_reopens_the_port() -> None:
    link, ports, items, task = await start()
    clock = link.clock
    assert isinstance(clock, VirtualClock)
    try:
        ports.opened[0].queue.put_nowait(BEAT)
        await settle()
        await clock.advance(9.9)
        assert len(ports.opened) == 1 and not ports.opened[0].closed
        await clock.advance(0.2)
        assert ports.opened[0].closed
        assert isinstance(items[-1], LinkDown) and items[-1].reason == "silent"
        await clock.advance(1)
        assert len(ports.opened) == 2
        # noise alone does not count as the device talking
        ports.opened[1].queue.put_nowait(b"\xff" * 20)
        await clock.advance(10.1)
        assert ports.opened[1].closed and sum(isinstance(i, LinkUp) for i in items) == 1
    finally:
        task.cancel()


async def test_mr60fda2_gets_settings_on_open_and_a_keepalive_when_quiet() -> None:
    link, ports, _, task = await start(mr60fda2, settings={"install_height": 2.5, "sensitivity": 20})
    clock = link.clock
    assert isinstance(clock, VirtualClock)
    try:
        port = ports.opened[0]
        assert [mr60fda2.parse(w)[0] for w in port.written] == [
            mr60fda2.SET_HEIGHT,
            mr60fda2.SET_SENSITIVITY,
            mr60fda2.GET_PARAMETERS,
        ]
        await clock.advance(5.1)
        assert mr60fda2.parse(port.written[-1])[0] == mr60fda2.GET_PARAMETERS and len(port.written) == 4
    finally:
        task.cancel()


def test_latch_keeps_alarms_and_thins_repeats() -> None:
    latch = RadarLatch(refresh=300, level_step=10)
    present = Observation(Kind.PRESENCE, {"present": True})
    assert latch.admit(present, 0) == present
    assert latch.admit(present, 1) is None  # a repeat
    assert latch.admit(present, 301) == present  # refreshed
    assert latch.admit(Observation(Kind.MOTION, {"level": 40}), 0) is not None
    assert latch.admit(Observation(Kind.MOTION, {"level": 45}), 1) is None
    assert latch.admit(Observation(Kind.MOTION, {"level": 55}), 2) is not None
    assert latch.admit(Observation(Kind.MOTION, {"level": 0}), 3) is not None
    fall = Observation(Kind.FALL_DETECTED)
    assert latch.admit(fall, 4) == fall and latch.admit(fall, 5) == fall  # alarms are never thinned
    residence = latch.admit(Observation(Kind.RESIDENCE, {"present": True}), 6)
    assert residence is not None and residence.values == {"present": True, "fall_active": True}
    latch.admit(Observation(Kind.FALL_CLEARED), 7)
    assert latch.state()["fall_active"] is False
    assert latch.thinned == 2


def _serial_site(*devices: dict[str, Any]) -> dict[str, Any]:
    site = minimal_site()
    site["devices"].extend({"family": "fall", "household": "1-1-101", "model": "MR60FDA1", **d} for d in devices)
    return site


def test_serial_config_is_checked() -> None:
    port = {"port": "/dev/ttyUSB0", "protocol": "mr60fda1"}
    site = _serial_site(
        {"id": "r1", "serial": port},
        {"id": "r2", "serial": port},  # same port
        {"id": "r3", "serial": {**port, "port": "/dev/ttyUSB1"}, "mqtt": {"format": "native"}},  # both
        {"id": "r4"},  # neither
        {"id": "r5", "model": "MR60FDA2", "serial": {**port, "port": "/dev/ttyUSB2"}},  # wrong protocol
        {"id": "r6", "serial": {**port, "port": "/dev/ttyUSB3", "radar": {"sensitivity": 5}}},  # mr60fda2 only
        {"id": "r7", "serial": {"port": "ttyUSB4", "protocol": "mr60fda3", "baudd": 1}},
    )
    with pytest.raises(ConfigError) as info:
        parse_config(site, file="site.toml", environ={})
    found = [str(p) for p in info.value.problems]
    where = "site.toml: devices['r7'].serial"
    assert any(p.startswith(f"{where}.port: expected an absolute device path") for p in found)
    assert any(p.startswith(f"{where}.protocol: expected 'mr60fda1' or 'mr60fda2'") for p in found)
    assert any(
        p.startswith(f"{where}.baudd: expected no such key (allowed here: backoff_initial, backoff_max") for p in found
    )
    site["devices"].pop()
    with pytest.raises(ConfigError) as info:
        parse_config(site, file="site.toml", environ={})
    found = [str(p) for p in info.value.problems]
    assert found == [
        "site.toml: devices['r2'].serial.port: expected a port not used by devices['r1'] (a radar needs its own "
        "port), "
        "found '/dev/ttyUSB0'",
        "site.toml: devices['r3']: expected exactly one of mqtt = {…}, serial = {…}, modbus = {…} or osdp = {…} "
        "(how the device is reached), found mqtt and serial",
        "site.toml: devices['r4']: expected exactly one of mqtt = {…}, serial = {…}, modbus = {…} or osdp = {…} "
        "(how the device is reached), found none",
        "site.toml: devices['r5'].model: expected a known mr60fda1 model (MR60FDA1), found 'MR60FDA2'",
        "site.toml: devices['r6'].serial.radar: expected no radar settings for mr60fda1 (mr60fda2 only), found a table",
    ]
