"""A running gateway saves the rules' state behind the alerts: an alarm's alert at once, the
engine's state (and the cursor that bounds what a restart feeds again, and what the disk may
evict) once a minute, from the housekeeping (gateway/alerts/path.py ``checkpoint_behind``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import VirtualClock
from gateway.runtime import HOUSEKEEPING_INTERVAL, RULES_CHECKPOINT_INTERVAL
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


async def test_the_rules_state_follows_the_alerts_within_a_minute(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = site_config(minimal_site(), tmp_path, mosquitto.host, mosquitto.port)
    clock = VirtualClock()
    with Publisher(mosquitto.host, mosquitto.port, "rules-state") as pub:
        async with running(config, clock=clock) as gateway:
            store = gateway.store
            # A real TS0215A press, as zigbee2mqtt publishes it.
            pub.publish("zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency","battery":100,"linkquality":110}')
            await eventually(lambda: store.alerts(), what="the SOS's alert")
            alerts_at = store.cursor("alerts")
            assert alerts_at > store.cursor("rules") == gateway.alerts.replay_from

            async def housekeeping(seconds: float) -> None:
                for _ in range(round(seconds / HOUSEKEEPING_INTERVAL)):
                    await clock.advance(HOUSEKEEPING_INTERVAL)
                    await asyncio.sleep(0.2)  # its work in worker threads, in real time

            await housekeeping(RULES_CHECKPOINT_INTERVAL - 2 * HOUSEKEEPING_INTERVAL)
            assert store.cursor("rules") < alerts_at  # not every 10 s
            await housekeeping(2 * HOUSEKEEPING_INTERVAL)
            await eventually(lambda: store.cursor("rules") >= alerts_at, within=10, what="the rules' checkpoint")
            assert gateway.alerts.replay_from == store.cursor("rules")
            assert store.rule_state() == gateway.alerts.engine.export()
