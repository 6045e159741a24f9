"""The Modbus half of the serial ingest on a virtual clock: one bus, an in-memory line, a real store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from drivers.modbus_profiles import builtin_profiles
from gateway.clock import VirtualClock
from gateway.ingest.serial import COUNTER_FLUSH, SerialIngest
from gateway.models import Event, Kind
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from gateway.store import Store
from simulators.modbus_detector import SimDetector
from tests.drivers.test_modbus_bus import FakeLine
from tests.gateway.factories import minimal_site


async def test_bus_events_and_counters_reach_the_store_even_when_nothing_changes(tmp_path: Path) -> None:
    site = minimal_site()
    site["modbus_buses"] = [{"id": "b1", "port": "/dev/ttyUSB0", "poll_interval": 2, "offline_after": 2}]
    site["devices"].append(
        {
            "id": "101-gas",
            "family": "gas",
            "model": "GENERIC-GAS",
            "household": "1-1-101",
            "modbus": {"bus": "b1", "unit_id": 1, "profile": "GENERIC-GAS"},
        }
    )
    config = parse_config(site, environ={})
    clock = VirtualClock()
    line = FakeLine()
    line.units = {1: SimDetector(1, builtin_profiles()["GENERIC-GAS"])}
    store = Store(tmp_path / "store.sqlite3")
    stored: list[Event] = []

    async def on_stored(events: list[Event]) -> None:
        stored.extend(events)

    ingest = SerialIngest(config, Registry(config), store, clock, {}, on_stored, modbus_client_factory=line.factory)

    async def until(check: Callable[[], object], what: str) -> None:
        # The writer commits in a worker thread: wait for it (real time, bounded), not for a tick count.
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    writer = asyncio.create_task(ingest.run_writer())
    bus = asyncio.create_task(ingest.run_bus("b1"))
    try:
        await until(lambda: len(stored) == 3, "the first reading")
        assert [e.kind for e in stored] == [Kind.ONLINE, Kind.GAS_CLEAR, Kind.HEARTBEAT]
        assert all(e.source == "modbus:GENERIC-GAS" and e.device_id == "101-gas" for e in stored)
        first = store.counters()["modbus.b1.101-gas.polls"]
        # Quiet polls: nothing to store, but the counters still get there.
        await clock.advance(COUNTER_FLUSH + 2)
        await until(lambda: store.counters()["modbus.b1.101-gas.polls"] > first, "the counters of quiet polls")
        assert len(stored) == 3
        line.units[1].mute = True
        for _ in range(2):
            await clock.advance(2)
        await until(lambda: stored[-1].kind == Kind.OFFLINE, "offline")
        assert stored[-1].values["reason"] == "timeout"
    finally:
        bus.cancel()
        await asyncio.gather(bus, return_exceptions=True)
        await ingest.drain()  # what the bus counted since its last batch
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        counters = store.counters()
        store.close()
    # every poll is counted, the ones after the last event too
    assert counters["modbus.b1.polls"] == line.units[1].requests + counters["modbus.b1.failures"]
