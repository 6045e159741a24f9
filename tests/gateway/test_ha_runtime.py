"""Home Assistant discovery wired into a running gateway (the bridge itself: test_ha_discovery.py);
a detector smoked in test mode starts nothing in Home Assistant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import tomli_w

from gateway.cli.app import main as cli
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


async def test_a_detector_smoked_in_test_mode_shows_no_smoke_in_home_assistant(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = minimal_site(home_assistant={"enabled": True})
    site["gateway"] = {**site["gateway"], "id": "gw-ha-test"}
    site["staff"] = [{"id": "s-zhou", "name": "周师傅", "role": "maintenance", "phone": "13800000002"}]
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = tmp_path / "site.toml"
    on_disk = {**site, "gateway": {**site["gateway"], "data_dir": str(tmp_path / "data")}}
    config_file.write_text(tomli_w.dumps({**on_disk, "mqtt": {"host": mosquitto.host, "port": mosquitto.port}}))
    smoke = '{"battery":96,"linkquality":92,"smoke":true,"battery_low":false}'  # canned: no test bit

    def smoke_states() -> list[bytes]:
        return [p for t, p, _ in states.messages if t.endswith("/101-smoke/smoke")]

    with Subscriber(mosquitto.host, mosquitto.port, f"{config.topic_prefix}/ha/101-smoke/#") as states:
        async with running(config) as gateway:
            start = ["testmode", "start", "-c", str(config_file), "--household", "1-1-101", "--for", "30m"]
            assert await asyncio.to_thread(cli, [*start, "--by", "s-zhou"]) == 0
            capsys.readouterr()
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish("zigbee2mqtt/1号楼/101/烟感", smoke)
                # The battery's percent is shown; the smoke is not.
                await eventually(
                    lambda: any(t.endswith("/101-smoke/battery") and p == b"96" for t, p, _ in states.messages),
                    what="the battery from the tested detector",
                )
                assert [w.rule for w in gateway.store.would_haves()] == ["smoke_alarm"]
                assert b"ON" not in smoke_states()

                end = ["testmode", "end", "-c", str(config_file), "--household", "1-1-101", "--by", "s-zhou"]
                assert await asyncio.to_thread(cli, end) == 0
                pub.publish("zigbee2mqtt/1号楼/101/烟感", smoke)
                await eventually(lambda: b"ON" in smoke_states(), what="the real smoke ON")
                assert smoke_states() == [b"ON"]  # and none before it, from the test
