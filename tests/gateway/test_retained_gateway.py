"""Retained alarm states against real Mosquitto: a smoke alarm that began while the gateway was
down reaches it only as the broker's retained copy (zigbee2mqtt publishes at QoS 0, which the
broker does not queue for a disconnected client). It must alert once — not again on every
restart, and not again after a person resolved it (gateway/ingest/retained.py).

Each test uses its own zigbee2mqtt base topic, so its retained messages reach no other test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.commands import sign_command
from gateway.alerts.path import RETAINED_EN, RETAINED_ZH
from gateway.models import RETAINED, AlertState, Kind
from gateway.runtime import Gateway
from gateway.site.config import SiteConfig
from tests.gateway.factories import minimal_site
from tests.gateway.harness import GatewayProcess, Publisher, Subscriber, eventually, open_store, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

# What a HEIMAN HS1SA in alarm makes zigbee2mqtt publish (tamper is not one of its fields).
SMOKE_ON = '{"smoke": true, "battery": 90, "linkquality": 120, "tamper": false}'
SMOKE_OFF = '{"smoke": false, "battery": 90, "linkquality": 118, "tamper": false}'


class Site:
    """A site with its own gateway id and zigbee2mqtt base topic on the shared broker."""

    def __init__(self, mosquitto: Mosquitto, tmp_path: Path) -> None:
        self.mosquitto = mosquitto
        self.tmp_path = tmp_path
        tag = uuid.uuid4().hex[:8]
        self.base = f"z2m_{tag}"
        self.site = minimal_site()
        self.site["gateway"] = {**self.site["gateway"], "id": f"gw_{tag}"}
        self.site["staff"] = [{"id": "staff-1", "name": "李值班", "role": "property"}]  # who resolves
        self.smoke = f"{self.base}/1号楼/101/烟感"
        self.config: SiteConfig = site_config(
            self.site, tmp_path, mosquitto.host, mosquitto.port, zigbee2mqtt_base=self.base
        )

    def publish(self, topic: str, payload: str, **kw: Any) -> None:
        with Publisher(self.mosquitto.host, self.mosquitto.port, client_id=f"z2m-{uuid.uuid4().hex[:8]}") as pub:
            pub.publish(topic, payload, **kw)

    def z2m_state(self, payload: str) -> None:
        """As zigbee2mqtt does with ``retain: true`` and its default QoS 0."""
        self.publish(self.smoke, payload, qos=0, retain=True)

    def skipped(self) -> int:
        """Retained replays skipped so far, read from the store file (no gateway running)."""
        with open_store(self.tmp_path / "data" / "store.sqlite3") as store:
            return store.counters().get("retained_skipped", 0)

    def clear(self) -> None:
        self.publish(self.smoke, "", qos=1, retain=True)  # an empty retained message deletes it


@pytest.fixture
def site(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Site]:
    s = Site(mosquitto, tmp_path)
    try:
        yield s
    finally:
        s.clear()


async def _replayed(gateway: Gateway, skipped_before: int) -> None:
    """Wait until the gateway has received (and skipped) the retained copy again, and a little
    longer for anything it might (wrongly) raise from it."""
    await eventually(
        lambda: gateway.store.counters().get("retained_skipped", 0) > skipped_before, what="the retained replay"
    )
    await asyncio.sleep(0.5)


async def test_a_retained_smoke_alarm_from_before_the_start_raises_an_alert(site: Site) -> None:
    site.z2m_state(SMOKE_ON)  # the detector alarmed while the gateway was down
    events = Subscriber(site.mosquitto.host, site.mosquitto.port, f"{site.config.topic_prefix}/alerts/events")
    try:
        async with running(site.config) as gateway:
            (alert,) = await eventually(lambda: gateway.store.alerts(), what="the smoke alert")
            stored = gateway.store.events_after(0)
            published = await eventually(lambda: events.json(), what="the published transition")
    finally:
        events.close()
    assert (alert.rule, alert.device_id, alert.state) == ("smoke_alarm", "101-smoke", AlertState.RAISED)
    assert alert.message_zh.startswith("【火警】") and alert.message_zh.endswith(RETAINED_ZH)
    assert alert.message_en.endswith(RETAINED_EN)
    assert [(e.kind, e.values.get(RETAINED)) for e in stored] == [(Kind.SMOKE_ALARM, True)]
    assert published[0]["transition"] == "raised" and published[0]["alert"]["id"] == alert.id


async def test_a_clean_restart_with_the_same_retained_alarm_raises_no_second_alert(site: Site) -> None:
    site.z2m_state(SMOKE_ON)
    async with running(site.config) as gateway:
        (first,) = await eventually(lambda: gateway.store.alerts(), what="the smoke alert")
    for _ in range(2):
        skipped = site.skipped()
        async with running(site.config) as gateway:
            await _replayed(gateway, skipped)
            assert gateway.store.alerts() == [first]  # not raised again, not even updated
            assert gateway.store.event_count() == 1


async def test_a_restart_after_sigkill_with_the_same_retained_alarm_raises_no_second_alert(site: Site) -> None:
    site.z2m_state(SMOKE_ON)
    store_path = site.tmp_path / "data" / "store.sqlite3"
    config = dict(site.site)
    config["gateway"] = {**site.site["gateway"], "data_dir": str(store_path.parent)}
    config["mqtt"] = {"host": site.mosquitto.host, "port": site.mosquitto.port, "zigbee2mqtt_base": site.base}
    config["alerts"] = {"console": False}
    proc = GatewayProcess(config, site.tmp_path)
    proc.start()
    try:
        await eventually(lambda: store_path.exists(), what="the gateway to create its store")
        with open_store(store_path) as store:
            (first,) = await eventually(lambda: store.alerts(), within=30, what="the smoke alert")
            proc.kill()  # SIGKILL: no orderly stop
            proc.start()
            await eventually(
                lambda: store.counters().get("retained_skipped", 0) >= 1, within=30, what="the retained replay"
            )
            await asyncio.sleep(0.5)
            assert store.alerts() == [first]
            assert store.event_count() == 1
    finally:
        proc.stop()


async def test_an_alarm_a_person_resolved_is_not_raised_again_on_restart(site: Site) -> None:
    site.z2m_state(SMOKE_ON)
    async with running(site.config) as gateway:
        (alert,) = await eventually(lambda: gateway.store.alerts(), what="the smoke alert")
        key = "sgk_duty-desk-test-key-0123456789abcdef"
        gateway.store.add_mqtt_key("duty-desk", key, "duty", gateway.clock.now())
        command = {"action": "resolve", "alert": alert.id, "note": "厨房油烟，已确认无火情"}
        signed = sign_command(command, "duty-desk", key, int(gateway.clock.now()))
        site.publish(f"{site.config.topic_prefix}/alerts/commands", json.dumps(signed, ensure_ascii=False))
        await eventually(lambda: not gateway.store.alerts(open_only=True), what="the alert resolved")
    # The detector's retained message still says smoke: true, from before the resolution.
    skipped = site.skipped()
    async with running(site.config) as gateway:
        await _replayed(gateway, skipped)
        (resolved,) = gateway.store.alerts()
    assert (resolved.id, resolved.state, resolved.resolved_by) == (alert.id, AlertState.RESOLVED, "token:duty-desk")


async def test_a_retained_alarm_newer_than_the_clear_last_seen_raises_an_alert(site: Site) -> None:
    site.z2m_state(SMOKE_OFF)
    async with running(site.config) as gateway:
        await eventually(
            lambda: [e.kind for e in gateway.store.events_after(0)] == [Kind.SMOKE_CLEAR], what="the clear state"
        )
    site.z2m_state(SMOKE_ON)  # at QoS 0 while the gateway is down: only the retained copy is kept
    async with running(site.config) as gateway:
        (alert,) = await eventually(lambda: gateway.store.alerts(), what="the smoke alert")
        kinds = [e.kind for e in gateway.store.events_after(0)]
    assert alert.rule == "smoke_alarm" and alert.message_zh.endswith(RETAINED_ZH)
    assert kinds == [Kind.SMOKE_CLEAR, Kind.SMOKE_ALARM]
