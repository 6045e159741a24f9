"""Acknowledgement from where people are, through a running gateway and a real broker: the
MQTT command topic and the CLI; notifications on the gateway's own MQTT channel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.app import main as cli
from gateway.models import AlertState
from gateway.site.config import parse_config
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, Subscriber, eventually, running, site_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

SOS_TOPIC = "zigbee2mqtt/1号楼/101/SOS"


def _site(gateway_id: str) -> dict[str, Any]:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "id": gateway_id}
    site["staff"] = [{"id": "s-li", "name": "李值班", "role": "property", "phone": "13800000001"}]
    site["channels"] = [{"type": "mqtt", "id": "app"}]
    site["roster"] = [{"person": "s-li"}]
    site["ladders"] = [{"id": "all", "tiers": [{"to": ["on_duty"], "channels": ["app"]}]}]
    site["routes"] = [{"ladder": "all"}]
    return site


async def test_an_sos_is_paged_on_mqtt_and_acknowledged_over_the_command_topic(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_site("gw-ack"), tmp_path, mosquitto.host, mosquitto.port)
    prefix = config.topic_prefix
    notes = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/notifications/#")
    results = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/commands/result")
    try:
        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency"}')
                (page,) = await eventually(notes.json, what="the page")
                assert page["kind"] == "raised" and page["recipients"][0]["id"] == "s-li"
                alert_id = page["alert_id"]
                assert alert_id in page["text"]
                pub.publish(f"{prefix}/alerts/commands", "{not json")
                pub.publish(
                    f"{prefix}/alerts/commands",
                    json.dumps({"action": "ack", "alert": alert_id[:6], "by": "s-li", "request_id": "r1"}),
                )
                (result,) = await eventually(results.json, what="the command result")
                assert result["ok"] and result["request_id"] == "r1" and result["alert"]["acked_by"] == "s-li"
                acked = await eventually(lambda: len(notes.json()) == 2 and notes.json()[1], what="the ack notice")
                assert acked["kind"] == "acknowledged" and "李值班" in acked["text"]
                alert = gateway.store.alert(alert_id)
                assert alert is not None and alert.state is AlertState.ACKNOWLEDGED and alert.acked_via == "mqtt"
                assert gateway.store.counters().get("malformed.bad_command") == 1
    finally:
        notes.close()
        results.close()


async def test_the_cli_acknowledges_and_resolves_through_the_running_gateway(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomli_w

    site = _site("gw-cli-ack")
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = tmp_path / "site.toml"
    site = {**site, "gateway": {**site["gateway"], "data_dir": str(tmp_path / "data")}}
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    config_file.write_text(tomli_w.dumps(site), encoding="utf-8")
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
        (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
        code = await asyncio.to_thread(cli, ["alerts", "ack", "-c", str(config_file), alert.id[:8], "--by", "s-li"])
        assert code == 0 and "已确认" in capsys.readouterr().out
        code = await asyncio.to_thread(
            cli, ["alerts", "resolve", "-c", str(config_file), alert.id, "--by", "s-li", "--note", "误按，已电话确认"]
        )
        assert code == 0
        code = await asyncio.to_thread(cli, ["alerts", "ack", "-c", str(config_file), alert.id, "--by", "s-li"])
        assert code == 1 and "already resolved" in capsys.readouterr().err
    assert cli(["alerts", "show", "-c", str(config_file), alert.id]) == 0
    shown = capsys.readouterr().out
    for line in ("raised", "paged", "delivered", "acknowledged", "resolved", "处置记录: 误按，已电话确认"):
        assert line in shown
    assert cli(["alerts", "list", "-c", str(config_file)]) == 0 and "no open alerts" in capsys.readouterr().out


async def test_the_http_api_lists_shows_acknowledges_and_resolves_with_a_token(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    import urllib3

    site = _site("gw-api")
    site["notify"] = {"api": {"port": 0, "token": "env:SENSEGATE_API_TOKEN"}}
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    site["alerts"] = {"console": False}
    config = parse_config(site, file="<test>", environ={"SENSEGATE_API_TOKEN": "s3cret-token-0123"})
    http = urllib3.PoolManager()
    auth = {"Authorization": "Bearer s3cret-token-0123"}

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        assert gateway.api is not None
        url = f"http://127.0.0.1:{gateway.api.port}/api/v1/alerts{path}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        r = http.request(method, url, body=data, headers=auth if headers is None else headers)
        return r.status, json.loads(r.data)

    async with running(config) as gateway:
        await eventually(lambda: gateway.api is not None and gateway.api.port, what="the API")
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
        (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
        status, _ = await asyncio.to_thread(call, "GET", "", None, {"Authorization": "Bearer wrong"})
        assert status == 401
        status, _ = await asyncio.to_thread(call, "GET", "", None, {})
        assert status == 401
        status, body = await asyncio.to_thread(call, "GET", "")
        assert status == 200 and [a["id"] for a in body["alerts"]] == [alert.id]
        status, body = await asyncio.to_thread(call, "POST", f"/{alert.id}/ack", {"by": "s-li", "note": "在路上"})
        assert status == 200 and body["alert"]["state"] == "acknowledged" and body["alert"]["acked_via"] == "http"
        status, body = await asyncio.to_thread(call, "POST", f"/{alert.id}/ack", {"note": "nobody"})
        assert status == 400 and "by" in body["error"]
        status, body = await asyncio.to_thread(call, "POST", "/ffffffffffff/ack", {"by": "s-li"})
        assert status == 404
        status, body = await asyncio.to_thread(call, "POST", f"/{alert.id}/resolve", {"by": "s-li", "note": "已处置"})
        assert status == 200 and body["alert"]["resolve_note"] == "已处置"
        status, body = await asyncio.to_thread(call, "POST", f"/{alert.id}/resolve", {"by": "s-li"})
        assert status == 409 and "already resolved" in body["error"]
        status, body = await asyncio.to_thread(call, "GET", f"/{alert.id[:6]}")
        actions = [(r["action"], r["actor"], r["channel"]) for r in body["trail"]]
        assert status == 200
        assert actions.index(("acknowledged", "s-li", "http")) < actions.index(("resolved", "s-li", "http"))
        assert body["notifications"] and body["notifications"][0]["state"] == "sent"
