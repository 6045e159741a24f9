"""An SOS through a running gateway reaches people on every channel at once: a real broker, a
real HTTP receiver checking the generic signature and the WeCom / DingTalk robot formats, and
the GSM modem simulator on a pty (the SMS decodes back to the exact Chinese text)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway.errors import PayloadError
from gateway.site.config import parse_config
from simulators.gsm_modem import PtyModem
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, eventually, running
from tests.gateway.test_paging_policy import block
from tests.receivers import Receiver
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


async def test_an_sos_reaches_the_webhook_both_robots_and_a_phone(mosquitto: Mosquitto, tmp_path: Path) -> None:
    modem = PtyModem(tmp_path / "ttyGSM")
    modem.open()
    with Receiver() as rx:
        site = minimal_site()
        site["gateway"] = {**site["gateway"], "id": "gw-e2e", "data_dir": str(tmp_path / "data")}
        site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
        site["alerts"] = {"console": False}
        site["residents"][0]["contacts"] = [{"name": "王小明", "phone": "+8613800000001", "relation": "儿子"}]
        site["staff"] = [{"id": "s-li", "name": "李值班", "role": "property", "phone": "13800000002"}]
        site["roster"] = [{"person": "s-li"}]
        site["channels"] = [
            {"type": "webhook", "id": "console", "url": rx.webhook_url, "secret": "env:HOOK_SECRET"},
            {"type": "wecom", "id": "wecom", "url": rx.wecom_url, "token": "env:WECOM_KEY"},
            {
                "type": "dingtalk",
                "id": "dingtalk",
                "url": rx.dingtalk_url,
                "token": "env:DT_TOKEN",
                "secret": "env:DT_SECRET",
            },
            {"type": "sms", "id": "sms", "port": str(tmp_path / "ttyGSM"), "timeout": 2},
        ]
        site["ladders"] = [
            {"id": "now", "tiers": [{"to": ["family", "on_duty"], "channels": ["console", "wecom", "dingtalk", "sms"]}]}
        ]
        site["routes"] = [{"ladder": "now"}]
        env = {
            "HOOK_SECRET": rx.webhook_secret,
            "WECOM_KEY": rx.wecom_key,
            "DT_TOKEN": rx.dingtalk_token,
            "DT_SECRET": rx.dingtalk_secret,
        }
        config = parse_config(site, file="<test>", environ=env)
        try:
            async with running(config) as gateway:
                with Publisher(mosquitto.host, mosquitto.port) as pub:
                    pub.publish("zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency"}')
                for endpoint in ("webhook", "wecom", "dingtalk"):
                    await eventually(lambda e=endpoint: rx.deliveries(e), what=f"the {endpoint} delivery")  # type: ignore[misc]
                texts = await eventually(lambda: _complete(modem, 2), what="two whole SMS")
                (alert,) = gateway.store.alerts(open_only=True)
                delivered = {("delivered", c) for c in ("console", "wecom", "dingtalk", "sms")}
                await eventually(
                    lambda: delivered <= {(r.action, r.channel) for r in gateway.store.alert_log(alert.id)},
                    what="a delivery on every channel in the audit trail",
                )
                # The modem's health is checked on its own and kept for `sensegate status`.
                health = await eventually(lambda: gateway.store.metas("channel.").get("channel.sms"), what="health")
                assert json.loads(health)["registered"] is True
        finally:
            modem.close()
        (hook,) = rx.deliveries("webhook")
        body = hook.body
        assert body["alert_id"] == alert.id and body["kind"] == "raised"
        assert [r["id"] for r in body["recipients"]] == ["contact:r1:0", "s-li"]
        assert rx.rejected == [] and rx.duplicates == 0
        wecom_text = json.dumps([d.body for d in rx.deliveries("wecom")], ensure_ascii=False)
        assert "紧急呼叫" in wecom_text and alert.id in wecom_text
        assert "13800000002" in json.dumps(rx.deliveries("dingtalk")[0].body, ensure_ascii=False)
        sms = modem.texts("+8613800000001")
        assert len(sms) == 1 and sms[0].startswith("【一级(特别重大)·报警】紧急呼叫") and alert.id in sms[0]
        assert alert.message_zh in sms[0]  # the exact Chinese text, through UCS2 PDUs
        assert len(texts) == 2


def _complete(modem: PtyModem, count: int) -> list[str] | None:
    """The texts the modem was given, once ``count`` are whole (a long one goes out in parts)."""
    try:
        texts = modem.texts()
    except PayloadError:  # a concatenated message with parts still to come
        return None
    return texts if len(texts) >= count else None


async def test_thirteen_sos_then_a_smoke_alarm_the_smoke_page_reaches_the_person_on_duty_within_a_second(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # Issue 15: with the default hourly cap of 12, the 13 SOS pages used up the on-duty person's
    # budget and the smoke alarm waited for the summary (or the manager two minutes later).
    with Receiver() as rx:
        site = block()
        site["gateway"] = {**site["gateway"], "id": "gw-e2e", "data_dir": str(tmp_path / "data")}
        site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
        site["alerts"] = {"console": False}
        site["channels"] = [{"type": "webhook", "id": "duty-app", "url": rx.webhook_url, "secret": "env:HOOK_SECRET"}]
        for ladder in site["ladders"]:
            for tier in ladder["tiers"]:
                tier["channels"] = ["duty-app"]
        config = parse_config(site, file="<test>", environ={"HOOK_SECRET": rx.webhook_secret})

        def paged_to_duty(alert_id: str) -> bool:
            for d in rx.deliveries("webhook"):
                ids = [a["id"] for a in d.body["alert"].get("alerts", ())] or [d.body["alert_id"]]
                if alert_id in ids and "duty" in [r["id"] for r in d.body["recipients"]]:
                    return True
            return False

        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                for n in range(13):
                    b, h = 1 + n // 3, (101, 102, 103)[n % 3]
                    pub.publish(f"zigbee2mqtt/{b}/{h}/sos", '{"action":"emergency"}')

                def sos_alerts() -> list[str]:
                    found = [a.id for a in gateway.store.alerts() if a.rule.startswith("sos")]
                    return found if len(found) == 13 else []

                sos = await eventually(sos_alerts, what="13 SOS alerts")
                await eventually(lambda: all(paged_to_duty(a) for a in sos), within=15, what="13 SOS pages to duty")
                await asyncio.sleep(5.5)  # past the default 5 s group window: the storm's last group has gone
                started = time.monotonic()
                pub.publish("zigbee2mqtt/9/101/smoke", '{"smoke":true,"battery":90,"linkquality":120}')
                smoke = await eventually(
                    lambda: [a.id for a in gateway.store.alerts() if a.rule == "smoke_alarm"], within=1, what="smoke"
                )
                await eventually(
                    lambda: paged_to_duty(smoke[0]),
                    within=1.0 - (time.monotonic() - started),
                    what="the smoke page at the on-duty person's receiver within 1 s of the alarm",
                )
            log = gateway.store.alert_log(smoke[0])
            assert "held" not in [row.action for row in log]
    assert rx.rejected == []
