"""The site pages in a real browser (Debian's headless chromium through chromium-driver, as in
test_console_browser.py): a gateway running in-process with a real Mosquitto, devices reporting
real zigbee2mqtt payloads; the household card and the device list on a 360 px phone without
scrolling sideways. Screenshots to docs/img/ with SENSEGATE_SCREENSHOTS=1 (docs/console.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.care.checkin import checkin_event
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.servers import Mosquitto
from tests.web.test_console_browser import (
    _phone,
    _shot,
    _sign_in,
    _site,
    _start,
    _until,
    browser,  # noqa: F401 - the fixture
    pytestmark,  # noqa: F401 - the same marks: integration, browser, skipped without chromium
)

FITS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


async def _open(driver: Any, url: str, ready: str, what: str) -> None:
    await asyncio.to_thread(driver.get, url)
    await _until(driver, ready, what)


async def test_the_household_card_and_the_device_list_fit_a_360_px_phone(
    mosquitto: Mosquitto,
    tmp_path: Path,
    browser: Any,  # noqa: F811 - the fixture
) -> None:
    config = site_config(_site("gw-pages"), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        url = await _start(gateway)
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish("zigbee2mqtt/1号楼/101/门磁", '{"contact":false,"battery":93,"linkquality":142}')
            pub.publish("zigbee2mqtt/1号楼/101/烟感", '{"smoke":false,"battery":11,"linkquality":27}')
            pub.publish("zigbee2mqtt/2号楼/201/SOS", '{"battery":64,"linkquality":88}')
            pub.publish("zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency","battery":97,"linkquality":120}')
        await eventually(lambda: len(gateway.store.device_states()) >= 4, what="four devices in device_state")
        await eventually(lambda: len(gateway.store.alerts(open_only=True)) >= 1, what="the SOS alert")
        now = gateway.clock.now()
        ev, row = checkin_event(gateway.config, "1-1-101", "v-zhang", now - 3600, now, "量血压，情况良好", "cli")
        gateway.store.append_visit(ev, row)

        await asyncio.to_thread(_phone, browser)
        await _sign_in(browser, url, "s-li")
        await _open(browser, f"{url}/households/1-1-101", "document.getElementById('d-101-smoke') !== null", "the card")
        assert await asyncio.to_thread(browser.execute_script, "return document.documentElement.clientWidth") == 360
        assert await asyncio.to_thread(browser.execute_script, f"return {FITS}"), "the card scrolls sideways"
        card = await asyncio.to_thread(lambda: browser.find_element("tag name", "main").text)
        assert "王秀英" in card and "王小明" in card and "低电量" in card and "LQI 27" in card and "量血压" in card
        await asyncio.to_thread(_shot, browser, "console-household-phone.png", tmp_path)

        await asyncio.to_thread(_phone, browser)
        await _open(browser, f"{url}/devices", "document.querySelector('table.devices') !== null", "the devices")
        assert await asyncio.to_thread(browser.execute_script, f"return {FITS}"), "the device list scrolls sideways"
        await asyncio.to_thread(_shot, browser, "console-devices-phone.png", tmp_path)
        await asyncio.to_thread(_phone, browser)
        await _open(browser, f"{url}/devices?problem=battery", "document.querySelector('table.devices') !== null", "")
        rows = await asyncio.to_thread(
            browser.execute_script, "return [...document.querySelectorAll('tr.dev')].map(r => r.id)"
        )
        assert rows == ["d-101-smoke"]
        assert await asyncio.to_thread(browser.execute_script, f"return {FITS}")

        # The wall screen: the building's grid and the month's visits.
        await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        await _open(browser, f"{url}/buildings/1", "document.querySelector('.grid') !== null", "the building")
        await asyncio.to_thread(_shot, browser, "console-building-desktop.png", tmp_path)
        await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        await _open(browser, f"{url}/visits", "document.querySelector('table.workers') !== null", "the visits")
        text = await asyncio.to_thread(lambda: browser.find_element("tag name", "main").text)
        assert "月探访率" in text and "量血压" in text
        await asyncio.to_thread(_shot, browser, "console-visits-desktop.png", tmp_path)
