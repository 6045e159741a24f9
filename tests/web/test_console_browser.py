"""The duty desk in a real browser: Debian's headless chromium driven through its
chromium-driver (Selenium; nothing downloaded), against a gateway running in-process with a real
Mosquitto. An SOS published as a real zigbee2mqtt payload reaches the live board within 2 s;
one tap on 确认 stops the ladder and the audit trail names who signed in; the board fits a
360 px phone. Screenshots go to pytest's tmp dir, or to docs/img/ with SENSEGATE_SCREENSHOTS=1
(how docs/console.md's pictures are made)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.cli.app import main as cli
from gateway.runtime import Gateway
from gateway.site.config import parse_config
from gateway.web.auth import hash_password
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.receivers import Receiver
from tests.servers import Mosquitto, free_port
from tests.web.helpers import PASSWORD, two_buildings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver (./scripts/test installs them)",
    ),
]

SOS_TOPIC = "zigbee2mqtt/1号楼/101/SOS"
CLIMB = 6.0  # seconds until tier 2 is paged if nobody acknowledges


def _site(gateway_id: str) -> dict[str, Any]:
    site = two_buildings()
    site["gateway"] = {**site["gateway"], "id": gateway_id, "site": "幸福里小区"}
    site["console"] = {"enabled": True, "port": 0}
    site["channels"] = [{"type": "mqtt", "id": "app"}]
    site["roster"] = [{"person": "s-li"}]
    site["staff"][0]["phone"] = "13800000001"
    tiers = [
        {"to": ["family", "on_duty"], "channels": ["app"]},
        {"after": f"{CLIMB:g}s", "to": ["s-boss"], "channels": ["app"]},
    ]
    site["ladders"] = [{"id": "emergency", "repeat": "once", "tiers": tiers}]
    site["routes"] = [{"ladder": "emergency"}]
    site["residents"][0]["contacts"] = [{"name": "王小明", "phone": "13800000003", "relation": "儿子"}]
    return site


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN"):
        options.add_argument(arg)
    # Web Audio without a real sound card, and without the gesture rule getting in the test's way.
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot: docs/img/<name> with SENSEGATE_SCREENSHOTS=1, else in tmp_path."""
    out = ROOT / "docs" / "img" if os.environ.get("SENSEGATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return document.documentElement.clientWidth")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": max(height, 300), "deviceScaleFactor": 1, "mobile": width < 500},
    )
    path = out / name
    driver.save_screenshot(str(path))
    return path


def _phone(driver: Any) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True}
    )


async def _sign_in(driver: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    def go() -> None:
        driver.get(f"{url}/login")
        driver.find_element(By.NAME, "user").send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()

    await asyncio.to_thread(go)  # the gateway runs on this loop: the browser is driven from a thread
    await _until(driver, "document.getElementById('board') !== null", "the board after signing in")


async def _until(driver: Any, script: str, what: str, within: float = 10.0) -> None:
    """Poll the page from a thread: a WebDriver call waits for a navigation in progress, and the
    gateway that must answer it runs on this loop (a call made on the loop deadlocks until the
    renderer times out)."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(driver.execute_script, f"return {script}"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _start(gateway: Gateway) -> str:
    assert gateway.console_server is not None
    await asyncio.wait_for(gateway.console_server.started.wait(), 10)
    for person in ("s-li", "s-boss"):
        gateway.store.set_password_hash(person, hash_password(PASSWORD), gateway.clock.now())
    return f"http://127.0.0.1:{gateway.console_server.port}"


async def test_an_sos_reaches_the_board_within_2_s_and_one_tap_stops_the_ladder_in_the_signed_in_name(
    mosquitto: Mosquitto, tmp_path: Path, browser: Any
) -> None:
    config = site_config(_site("gw-browser"), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        url = await _start(gateway)
        await _sign_in(browser, url, "s-li")
        await _until(browser, "document.getElementById('live').classList.contains('on')", "the event stream")
        await asyncio.to_thread(browser.find_element("id", "sound").click)  # the one gesture a browser needs
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pressed = time.monotonic()
            pub.publish(SOS_TOPIC, '{"action":"emergency","battery":97,"linkquality":120}')
            await _until(browser, "document.querySelector('li.alert.sev1') !== null", "the SOS on the board", 5)
            took = time.monotonic() - pressed
        assert took < 2.0, f"the SOS took {took:.2f} s to reach the board"
        (alert,) = gateway.store.alerts(open_only=True)
        await _until(browser, "document.body.dataset.beeping === '1'", "the alarm sound")
        await _until(browser, "document.querySelector('li.alert .ladder li.paged') !== null", "tier 1 paged")
        await _until(browser, "document.querySelector('li.alert .ladder li.next') !== null", "who is next")
        await asyncio.to_thread(_shot, browser, "console-board-desktop.png", tmp_path)
        await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        await asyncio.to_thread(browser.find_element("css selector", f"#a-{alert.id} button.ack").click)
        await _until(browser, "document.querySelector('li.alert .acked') !== null", "确认人 on the card")
        await _until(browser, "document.body.dataset.beeping === '0'", "the alarm to stop")
        card = await asyncio.to_thread(lambda: browser.find_element("css selector", f"#a-{alert.id}").text)
        assert "确认人：李值班 (s-li)" in card and "已确认，停止升级" in card
        # Past the time tier 2 was due: nobody else was paged.
        await asyncio.sleep(max(0.0, alert.raised_at + CLIMB + 1.5 - gateway.clock.now()))
        paged = [dict(r.detail or {}).get("tier") for r in gateway.store.alert_log(alert.id) if r.action == "paged"]
        assert paged == [0]
        acts = [(r.action, r.actor, r.channel) for r in gateway.store.alert_log(alert.id) if r.action == "acknowledged"]
        assert acts == [("acknowledged", "s-li", "console")]
        await asyncio.to_thread(browser.get, f"{url}/alerts/{alert.id}")
        trail = await asyncio.to_thread(lambda: browser.find_element("css selector", "ol.trail").text)
        assert "确认" in trail and "李值班 (s-li)" in trail and "停止升级" in trail
        assert "第2级" not in trail
        await asyncio.to_thread(_shot, browser, "console-alert-desktop.png", tmp_path)


async def test_the_board_fits_a_360_px_phone_without_scrolling_sideways(
    mosquitto: Mosquitto, tmp_path: Path, browser: Any
) -> None:
    config = site_config(_site("gw-phone"), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        url = await _start(gateway)
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
            pub.publish("zigbee2mqtt/1号楼/101/烟感", '{"smoke":true,"battery":88}')
        alerts = await eventually(lambda: len(gateway.store.alerts(open_only=True)) == 2, what="two alerts")
        assert alerts
        await asyncio.to_thread(_phone, browser)
        await _sign_in(browser, url, "s-li")
        await _until(browser, "document.querySelectorAll('li.alert').length === 2", "both alerts")
        await _until(browser, "document.querySelector('li.alert .ladder li.paged') !== null", "the ladder")
        await asyncio.to_thread(browser.execute_script, "document.querySelector('details.resolve').open = true")
        fits = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        width = await asyncio.to_thread(browser.execute_script, "return document.documentElement.clientWidth")
        assert width == 360
        assert await asyncio.to_thread(browser.execute_script, f"return {fits}")
        await asyncio.to_thread(_shot, browser, "console-board-phone.png", tmp_path)
        await asyncio.to_thread(_phone, browser)
        sos = next(a for a in gateway.store.alerts(open_only=True) if a.rule.startswith("sos"))
        await asyncio.to_thread(browser.get, f"{url}/alerts/{sos.id}")
        assert await asyncio.to_thread(browser.execute_script, f"return {fits}")
        await asyncio.to_thread(_shot, browser, "console-alert-phone.png", tmp_path)
        await asyncio.to_thread(_phone, browser)
        await asyncio.to_thread(browser.get, f"{url}/lang/en?next=/")
        await _until(browser, "document.querySelectorAll('li.alert').length === 2", "the English board")
        assert "Open alerts" in await asyncio.to_thread(lambda: browser.find_element("tag name", "h1").text)
        assert await asyncio.to_thread(browser.execute_script, f"return {fits}")


async def test_a_test_mode_set_from_the_cli_shows_on_the_open_board_until_it_ends(
    mosquitto: Mosquitto, tmp_path: Path, browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site("gw-testmode-board")
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    on_disk = {**site, "gateway": {**site["gateway"], "data_dir": str(tmp_path / "data")}}
    config_file = tmp_path / "site.toml"
    config_file.write_text(tomli_w.dumps({**on_disk, "mqtt": {"host": mosquitto.host, "port": mosquitto.port}}))
    banner = "document.querySelector('#board .testmodes')"
    async with running(config) as gateway:
        url = await _start(gateway)
        await _sign_in(browser, url, "s-li")  # the person on duty, who cannot set one
        await _until(browser, "document.getElementById('live').classList.contains('on')", "the event stream")
        assert await asyncio.to_thread(browser.execute_script, f"return {banner} === null")
        scope = ["-c", str(config_file), "--household", "1-1-101", "--by", "s-fix"]
        assert await asyncio.to_thread(cli, ["testmode", "start", *scope, "--for", "30m"]) == 0
        await _until(browser, f"{banner} !== null", "the test mode on the open board", 5)
        text = await asyncio.to_thread(browser.execute_script, f"return {banner}.innerText")
        assert "以下范围的报警不会通知任何人" in text and "1号楼1单元101室 · 周师傅 · 至" in text
        await asyncio.to_thread(_shot, browser, "console-board-testmode.png", tmp_path)
        await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
        assert await asyncio.to_thread(cli, ["testmode", "end", *scope]) == 0
        await _until(browser, f"{banner} === null", "the banner to go once the test mode ends", 5)
    capsys.readouterr()


def test_the_browser_tests_can_run_here() -> None:
    """If chromium is there, the driver Debian pairs with it is too (no silent skip by half)."""
    assert shutil.which("chromium") and shutil.which("chromedriver")


async def test_a_one_tap_link_from_a_wecom_page_acknowledges_in_chromium_without_a_password(
    mosquitto: Mosquitto, tmp_path: Path, browser: Any
) -> None:
    # The link as the WeCom robot endpoint received it, opened on a "phone" with no session: the
    # page shows the alert and one 确认; the tap acknowledges as the paged person, via "link".
    port = free_port()
    with Receiver() as rx:
        site = _site("gw-link")
        site["console"] = {"enabled": True, "port": port, "public_url": f"http://127.0.0.1:{port}"}
        site["channels"] = [{"type": "wecom", "id": "wecom", "url": rx.wecom_url, "token": "env:WECOM_KEY"}]
        site["ladders"][0]["tiers"][0]["to"] = ["on_duty"]
        for tier in site["ladders"][0]["tiers"]:
            tier["channels"] = ["wecom"]
        site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
        site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
        site["alerts"] = {"console": False}
        config = parse_config(site, file="<test>", environ={"WECOM_KEY": rx.wecom_key})
        async with running(config) as gateway:
            await _start(gateway)
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency"}')

            def link() -> str | None:
                for d in rx.deliveries("wecom"):
                    content = d.body.get("markdown", {}).get("content", "") if d.msgtype == "markdown" else ""
                    if found := re.search(r"\((http://127\.0\.0\.1:\d+/ack/[^)\s]+)\)", content):
                        return found.group(1)
                return None

            url = await eventually(link, what="the one-tap link in the WeCom page")
            (alert,) = gateway.store.alerts(open_only=True)
            await asyncio.to_thread(_phone, browser)
            await asyncio.to_thread(browser.get, url)  # what a chat app's preview would fetch: no act
            assert gateway.store.alert(alert.id).acked_at is None  # type: ignore[union-attr]
            await asyncio.to_thread(browser.find_element("css selector", "form.tap button.ack").click)
            await eventually(lambda: gateway.store.alert(alert.id).acked_at, what="the acknowledgement")  # type: ignore[union-attr]
            page = await asyncio.to_thread(lambda: browser.find_element("tag name", "body").text)
            assert "李值班" in page
            acts = [(r.actor, r.channel) for r in gateway.store.alert_log(alert.id) if r.action == "acknowledged"]
            assert acts == [("s-li", "link")]
            fits = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
            assert await asyncio.to_thread(browser.execute_script, f"return {fits}")
            await asyncio.to_thread(_shot, browser, "console-onetap-phone.png", tmp_path)
