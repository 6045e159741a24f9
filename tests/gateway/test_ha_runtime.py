"""Home Assistant discovery wired into a running gateway (the bridge itself: test_ha_discovery.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, Subscriber, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


async def test_a_running_gateway_announces_its_devices_and_publishes_states(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = minimal_site(home_assistant={"enabled": True})
    site["gateway"] = {**site["gateway"], "id": "gw-ha"}
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    configs = Subscriber(mosquitto.host, mosquitto.port, "homeassistant/+/+/+/config")
    states = Subscriber(mosquitto.host, mosquitto.port, f"{config.topic_prefix}/ha/#")
    try:
        async with running(config):
            # The announcements come one by one: wait for the classes, not for a count of them.
            await eventually(
                lambda: {"smoke", "safety", "door"} <= {c.get("device_class") for c in configs.json()},
                what="discovery configs of a smoke detector, an SOS button and a door",
            )
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish("zigbee2mqtt/1号楼/101/烟感", '{"smoke": true}')
            await eventually(
                lambda: any(t.endswith("/101-smoke/smoke") and p == b"ON" for t, p, _ in states.messages),
                what="the smoke state ON",
            )
    finally:
        configs.close()
        states.close()
