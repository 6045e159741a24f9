"""An SOS through a running gateway reaches people on every channel at once: a real broker, a
real HTTP receiver checking the generic signature and the WeCom / DingTalk robot formats, and
the GSM modem simulator on a pty (the SMS decodes back to the exact Chinese text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import PayloadError
from gateway.site.config import parse_config
from simulators.gsm_modem import PtyModem
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, eventually, running
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
