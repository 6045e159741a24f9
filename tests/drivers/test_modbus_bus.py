"""The Modbus bus poller: edges, offline after N failed polls, port loss and back-off on a virtual
clock with an in-memory client; then the real thing through a pty and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.modbus_bus import EdgeFilter, ModbusBus, PortSettings
from drivers.modbus_profiles import Profile, builtin_profiles
from gateway.clock import SystemClock, VirtualClock
from gateway.errors import PayloadError
from gateway.models import Kind, Observation
from simulators.modbus_detector import PtyModbusBus, SimDetector

PROFILES = builtin_profiles()
GAS = PROFILES["GENERIC-GAS"]
SMOKE = PROFILES["GENERIC-SMOKE"]

Record = tuple[str, Observation, str]


def hb(conc: float, status: str = "ok", fault: str = "") -> Observation:
    return Observation(Kind.HEARTBEAT, {"concentration": conc, "unit": "%LEL", "status": status, "fault": fault})


# ------------------------------------------------------------------ edges


def test_edge_filter_emits_alarm_edges_only() -> None:
    f = EdgeFilter(telemetry_interval=60, deadband=2)
    clear, alarm = Observation(Kind.GAS_CLEAR), Observation(Kind.GAS_ALARM, {"level": "low"})
    assert f.admit([clear, hb(0)], 0) == [clear, hb(0)]  # first reading: the state, once
    assert f.admit([clear, hb(1)], 1) == []  # same state, concentration within the deadband
    assert f.admit([alarm, hb(30)], 2) == [alarm, hb(30)]  # alarm rises
    assert f.admit([alarm, hb(30)], 3) == []
    high = Observation(Kind.GAS_ALARM, {"level": "high"})
    assert f.admit([high, hb(31)], 4) == [high]  # a new level is an edge; 1 %LEL is not telemetry
    assert f.admit([clear, hb(31)], 5) == [clear]
    assert f.admit([clear, hb(31)], 65) == [hb(31)]  # the periodic telemetry


def test_edge_filter_fault_once_and_telemetry_on_change() -> None:
    f = EdgeFilter(telemetry_interval=60, deadband=2)
    f.admit([Observation(Kind.GAS_CLEAR), hb(0)], 0)
    fault = Observation(Kind.SENSOR_FAULT, {"fault": "sensor_lost"})
    assert f.admit([Observation(Kind.GAS_CLEAR), fault, hb(0, fault="sensor_lost")], 1) == [
        fault,
        hb(0, fault="sensor_lost"),
    ]
    assert f.admit([Observation(Kind.GAS_CLEAR), fault, hb(0, fault="sensor_lost")], 2) == []
    assert f.admit([Observation(Kind.GAS_CLEAR), hb(0)], 3) == [hb(0)]  # the fault cleared: telemetry says so
    assert f.admit([hb(0, status="warmup")], 4) == [hb(0, status="warmup")]
    assert f.admit([hb(3, status="warmup")], 5) == [hb(3, status="warmup")]  # beyond the deadband


# ------------------------------------------------------------------ the poller on a virtual clock


class FakeLine:
    """An in-memory RS-485 line: the simulator's detectors answer, or time out, or the port is gone."""

    def __init__(self) -> None:
        self.units: dict[int, SimDetector] = {}
        self.present = True
        self.clients: list[FakeClient] = []

    def factory(self, settings: PortSettings) -> FakeClient:
        client = FakeClient(self)
        self.clients.append(client)
        return client


class FakeClient:
    def __init__(self, line: FakeLine) -> None:
        self.line = line
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected and self.line.present

    async def connect(self) -> bool:
        self._connected = self.line.present
        return self._connected

    def close(self) -> None:
        self._connected = False

    async def _read(self, fc: int, address: int, count: int, device_id: int) -> Any:
        if not self.connected:
            raise ConnectionException("Not connected")
        unit = self.line.units.get(device_id)
        if unit is None or unit.mute:
            raise ModbusIOException("No response received after 0 retries")
        from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

        request = ReadHoldingRegistersRequest(address=address, count=count, dev_id=device_id)
        request.function_code = fc
        return unit.answer(request)

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        return await self._read(3, address, count, device_id)

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        return await self._read(4, address, count, device_id)


@pytest.fixture
async def virtual() -> AsyncIterator[tuple[VirtualClock, FakeLine, ModbusBus, list[Record]]]:
    clock = VirtualClock()
    line = FakeLine()
    line.units = {1: SimDetector(1, GAS), 2: SimDetector(2, SMOKE)}
    bus = ModbusBus(
        "/dev/serial/by-id/usb-test-port0",
        [("gas-101", 1, GAS), ("smoke-101", 2, SMOKE)],
        clock,
        poll_interval=2.0,
        offline_after=3,
        backoff_initial=1.0,
        backoff_max=8.0,
        client_factory=line.factory,
    )
    records: list[Record] = []

    async def emit(device_id: str, observations: list[Observation], raw: str) -> None:
        records.extend((device_id, o, raw) for o in observations)

    task = asyncio.create_task(bus.run(emit))
    await clock.advance(0)
    try:
        yield clock, line, bus, records
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kinds(records: list[Record], device: str) -> list[Kind]:
    return [o.kind for d, o, _ in records if d == device]


async def test_first_poll_reports_online_and_state(virtual: Any) -> None:
    _clock, _line, _bus, records = virtual
    assert kinds(records, "gas-101") == [Kind.ONLINE, Kind.GAS_CLEAR, Kind.HEARTBEAT]
    assert kinds(records, "smoke-101") == [Kind.ONLINE, Kind.SMOKE_CLEAR, Kind.HEARTBEAT]
    gas_clear = next(r for r in records if r[1].kind == Kind.GAS_CLEAR)
    assert gas_clear[2] == "8000" + "0000" * 5 + "0001"  # the registers, hex


async def test_alarm_for_one_device_only(virtual: Any) -> None:
    clock, line, _bus, records = virtual
    records.clear()
    line.units[1].alarm("high", concentration=55)
    await clock.advance(2)
    assert [(d, o.kind) for d, o, _ in records] == [("gas-101", Kind.GAS_ALARM), ("gas-101", Kind.HEARTBEAT)]
    assert records[0][1].values == {"level": "high"}
    await clock.advance(2)
    assert len(records) == 2  # no repeats while the alarm holds
    line.units[1].clear()
    await clock.advance(2)
    assert kinds(records, "gas-101")[2:] == [Kind.GAS_CLEAR, Kind.HEARTBEAT]


async def test_offline_after_n_failed_polls_then_online(virtual: Any) -> None:
    clock, line, bus, records = virtual
    records.clear()
    line.units[2].mute = True
    await clock.advance(2)
    await clock.advance(2)
    assert kinds(records, "smoke-101") == []  # 2 failures: not yet
    await clock.advance(2)
    assert kinds(records, "smoke-101") == [Kind.OFFLINE]
    offline = records[-1][1]
    assert offline.values == {"port": "/dev/serial/by-id/usb-test-port0", "reason": "timeout", "failures": 3}
    await clock.advance(10)
    assert kinds(records, "smoke-101") == [Kind.OFFLINE]  # reported once
    assert kinds(records, "gas-101") == []  # the other detector is unaffected
    line.units[2].mute = False
    await clock.advance(2)
    assert kinds(records, "smoke-101") == [Kind.OFFLINE, Kind.ONLINE, Kind.HEARTBEAT]
    counts = bus.counters.take()
    assert counts["smoke-101.failures"] == counts["smoke-101.timeouts"] == 8
    assert "gas-101.failures" not in counts
    assert bus.counters.take() == {}


async def test_port_lost_reopens_with_capped_backoff(virtual: Any) -> None:
    clock, line, bus, records = virtual
    records.clear()
    line.present = False
    await clock.advance(2)
    assert sorted(kinds(records, "gas-101") + kinds(records, "smoke-101")) == [Kind.OFFLINE, Kind.OFFLINE]
    assert {r[1].values["reason"] for r in records} == {"port_lost"}
    opened = len(line.clients)
    await clock.advance(1 + 2 + 4 + 8 + 8)  # back-off 1, 2, 4, 8, then capped at 8
    assert len(line.clients) - opened == 5
    assert len(records) == 2  # open failures after the loss are not reported again
    line.present = True
    await clock.advance(8)
    assert kinds(records, "gas-101") == [Kind.OFFLINE, Kind.ONLINE, Kind.HEARTBEAT]
    assert kinds(records, "smoke-101") == [Kind.OFFLINE, Kind.ONLINE, Kind.HEARTBEAT]
    assert bus.counters.get("reconnects") == 1


async def _run_one(
    unit: SimDetector, profile: Profile, seconds: float
) -> tuple[ModbusBus, list[Record], list[tuple[str, PayloadError, str]]]:
    clock = VirtualClock()
    line = FakeLine()
    line.units = {1: unit}
    records: list[Record] = []
    malformed: list[tuple[str, PayloadError, str]] = []

    async def emit(device_id: str, observations: list[Observation], raw: str) -> None:
        records.extend((device_id, o, raw) for o in observations)

    async def on_malformed(device_id: str, exc: PayloadError, raw: str) -> None:
        malformed.append((device_id, exc, raw))

    bus = ModbusBus(
        "p", [("det", 1, profile)], clock, offline_after=1, client_factory=line.factory, on_malformed=on_malformed
    )
    task = asyncio.create_task(bus.run(emit))
    try:
        await clock.advance(0)  # let the bus start and reach its first sleep
        await clock.advance(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return bus, records, malformed


async def test_exception_answer_is_not_a_failure() -> None:
    # the unit answers from the smoke map: the gas profile's reads are illegal addresses (exception 02)
    bus, records, _ = await _run_one(SimDetector(1, SMOKE), GAS, 10)
    assert [o.kind for _, o, _ in records] == [Kind.ONLINE]
    assert bus.counters.get("exceptions") >= 5
    assert bus.counters.get("failures") == 0


async def test_undecodable_registers_are_counted_and_handed_over() -> None:
    unit = SimDetector(1, GAS)
    unit.alarm("low")
    narrow = GAS.model_copy(update={"alarm": GAS.alarm.model_copy(update={"levels": {"high": 1}})})
    bus, records, malformed = await _run_one(unit, narrow, 4)
    assert [o.kind for _, o, _ in records] == [Kind.ONLINE]
    assert malformed and malformed[0][0] == "det" and malformed[0][1].reason == "unknown_code"
    assert malformed[0][2].startswith("8001")
    assert bus.counters.get("det.malformed") == len(malformed)


def test_constructor_refuses_a_bad_bus() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="unique"):
        ModbusBus("p", [("a", 1, GAS), ("b", 1, GAS)], clock)
    with pytest.raises(ValueError, match="1–247"):
        ModbusBus("p", [("a", 0, GAS)], clock)
    with pytest.raises(ValueError, match="at least one"):
        ModbusBus("p", [], clock)


# ------------------------------------------------------------------ through a real pty


async def _until(cond: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_two_detectors_on_one_pty_bus(tmp_path: Path) -> None:
    sim = PtyModbusBus(tmp_path / "ttyRS485")
    gas = sim.add(1, GAS)
    smoke = sim.add(7, SMOKE)
    sim.open()
    bus = ModbusBus(
        str(sim.link),
        [("gas-1-101", 1, GAS), ("smoke-1-101", 7, SMOKE)],
        SystemClock(),
        poll_interval=0.05,
        offline_after=2,
        timeout=0.15,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    records: list[Record] = []

    async def emit(device_id: str, observations: list[Observation], raw: str) -> None:
        records.extend((device_id, o, raw) for o in observations)

    def seen(device: str, kind: Kind, after: int = 0) -> bool:
        return any(d == device and o.kind == kind for d, o, _ in records[after:])

    task = asyncio.create_task(bus.run(emit))
    try:
        await _until(
            lambda: seen("gas-1-101", Kind.GAS_CLEAR) and seen("smoke-1-101", Kind.SMOKE_CLEAR), "first states"
        )

        mark = len(records)
        gas.alarm("high", concentration=48)
        await _until(lambda: seen("gas-1-101", Kind.GAS_ALARM, mark), "gas alarm")
        alarm = next(o for d, o, _ in records[mark:] if o.kind == Kind.GAS_ALARM)
        assert alarm.values == {"level": "high"}
        tele = next(o for d, o, _ in records[mark:] if o.kind == Kind.HEARTBEAT and d == "gas-1-101")
        assert tele.values["concentration"] == 48.0 and tele.values["unit"] == "%LEL"
        assert not any(d == "smoke-1-101" for d, _, _ in records[mark:])  # that device only

        mark = len(records)
        gas.clear()
        await _until(lambda: seen("gas-1-101", Kind.GAS_CLEAR, mark), "gas clear")

        mark = len(records)
        smoke.mute = True
        await _until(lambda: seen("smoke-1-101", Kind.OFFLINE, mark), "smoke offline")
        assert not seen("gas-1-101", Kind.OFFLINE, mark)
        smoke.mute = False
        await _until(lambda: seen("smoke-1-101", Kind.ONLINE, mark), "smoke back online")

        mark = len(records)
        sim.vanish()
        await _until(
            lambda: seen("gas-1-101", Kind.OFFLINE, mark) and seen("smoke-1-101", Kind.OFFLINE, mark), "port lost"
        )
        mark = len(records)
        sim.reappear()  # a new /dev/pts/N behind the same link
        smoke.set(levels=("alarm",))
        await _until(
            lambda: seen("smoke-1-101", Kind.SMOKE_ALARM, mark) and seen("gas-1-101", Kind.ONLINE, mark), "recovery"
        )
        assert bus.counters.get("reconnects") >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sim.close()
