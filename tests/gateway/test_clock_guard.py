"""Device and gateway clocks: a device time far from the gateway's is not used to date the event
and is counted (``device_time_untrusted``); a gateway whose clock is behind the newest stored
event at start (a Pi without a real-time clock, before NTP) says so and counts it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.clock import VirtualClock
from gateway.site.registry import MAX_CLOCK_SKEW
from gateway.store import Store
from tests.gateway.factories import event, minimal_site
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


async def test_an_implausible_device_time_is_not_used_and_is_counted(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)
    device = next(d.id for d in config.devices if d.mqtt is not None and d.mqtt.format == "native")
    pub = Publisher(mosquitto.host, mosquitto.port, "clock-guard")
    try:
        async with running(config) as gateway:
            now = time.time()
            for t in (now - 5, now - MAX_CLOCK_SKEW - 3600, now + 10 * 365 * 86400):
                payload = {"kind": "heartbeat", "time": t}
                pub.publish(f"{config.mqtt.native_base}/{device}", json.dumps(payload))
            events = await eventually(lambda: gateway.store.events_after(0) if gateway.store.event_count() >= 3 else [])
            assert [e.time_source for e in events] == ["device", "gateway", "gateway"]
            assert all(abs(e.event_time - e.received_at) < 60 for e in events[1:])
            assert gateway.store.counters()["device_time_untrusted"] == 2
    finally:
        pub.close()


async def test_a_clock_behind_the_newest_stored_event_is_reported_at_start(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)
    store = Store(config.store_path)
    store.append([event(t=1_795_305_600.0)], {})
    store.close()
    clock = VirtualClock(start=1_795_305_600.0 - 86400)  # booted a day in the past
    async with running(config, clock=clock) as gateway:
        await eventually(lambda: gateway.store.counters().get("clock_behind_at_start") == 1)
    assert any("behind the newest stored event" in r.message for r in caplog.records)
