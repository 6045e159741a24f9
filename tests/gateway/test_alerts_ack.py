"""Acknowledgement from where people are, through a running gateway and a real broker: the
MQTT command topic (signed commands, as their key), the CLI and the console's JSON API (as its
token); notifications on the gateway's own MQTT channel.
Only a person the site knows may acknowledge: a typo is refused with the ids it is close to,
and the ladder goes on (on a virtual clock with the notifier's rig, and on each real path).
Over MQTT only a sender that proves itself may: an unsigned, badly signed, stale or replayed
command is refused as unauthenticated, and the ladder goes on (issue 13)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.alerts.commands import apply_command, sign_command
from gateway.cli.app import main as cli
from gateway.models import AlertState, Family, Kind, Severity
from gateway.runtime import Gateway
from gateway.store import Store
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, Subscriber, eventually, running, site_config
from tests.gateway.test_notify import rig, settle
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


# Tier 1 is paged this long after the alert if nobody acknowledged: long after a refused ack.
CLIMB = "3s"


def _people_site(gateway_id: str) -> dict[str, Any]:
    """Two tiers — the duty officer at once, security after CLIMB — and besides staff a
    registered visitor and a family contact of the resident of 101 (contact:r1:0)."""
    site = _site(gateway_id)
    site["staff"] = [*site["staff"], {"id": "s-wang", "name": "王保安", "role": "security", "phone": "13800000002"}]
    site["visitors"] = [{"id": "v-zhang", "name": "张社工", "role": "community_worker", "households": ["1-1-101"]}]
    contact = {"name": "王小明", "phone": "13800000003", "relation": "儿子"}
    site["residents"] = [{**site["residents"][0], "contacts": [contact]}]
    tiers = [{"to": ["on_duty"], "channels": ["app"]}, {"after": CLIMB, "to": ["s-wang"], "channels": ["app"]}]
    site["ladders"] = [{"id": "all", "repeat": "once", "tiers": tiers}]
    return site


def _config_file(site: dict[str, Any], tmp_path: Path, mosquitto: Mosquitto) -> Path:
    """The site as a file for the CLI, with the store of ``site_config(site, tmp_path, …)``."""
    import tomli_w

    path = tmp_path / "site.toml"
    site = {**site, "gateway": {**site["gateway"], "data_dir": str(tmp_path / "data")}}
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    path.write_text(tomli_w.dumps(site), encoding="utf-8")
    return path


def _people_acts(store: Store, alert_id: str) -> list[tuple[str, str]]:
    """Acknowledgements and resolves in the audit trail, with who."""
    return [(r.action, r.actor) for r in store.alert_log(alert_id) if r.action in ("acknowledged", "resolved")]


def _tiers_paged(store: Store, alert_id: str) -> list[tuple[object, float]]:
    return [(dict(r.detail or {}).get("tier"), r.at) for r in store.alert_log(alert_id) if r.action == "paged"]


async def test_an_ack_by_an_unknown_person_is_refused_with_close_ids_and_the_critical_ladder_climbs(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        (alert,) = r.store.alerts(open_only=True)
        assert alert.severity is Severity.CRITICAL  # 一级: SOS
        refused = {
            by: apply_command(r.alerts, {"action": action, "alert": alert.id[:6], "by": by, "via": via})
            for action, by, via in (
                ("ack", "gaurd", "cli"),
                ("ack", "nobody-here", "mqtt"),
                ("ack", "钱保安", "http"),  # a name instead of the id
                ("resolve", "bos", "http"),
                ("ack", "rule:sos_pressed", "mqtt"),  # a rule's name is no person's
            )
        }
        assert refused["gaurd"] == {
            "action": "ack",
            "request_id": None,
            "ok": False,
            "error": "unknown person 'gaurd'; did you mean 'guard'?",
            "reason": "unknown_person",
            "suggestions": ["guard"],
        }
        assert refused["nobody-here"]["suggestions"] == []
        assert "unknown person 'nobody-here': name a staff id" in refused["nobody-here"]["error"]
        assert refused["钱保安"]["suggestions"] == ["guard"] and refused["bos"]["suggestions"] == ["boss"]
        assert all(not res["ok"] and res["reason"] == "unknown_person" for res in refused.values())
        assert len(r.twins["sms"].sent) == 1  # the clock has not moved: tier 1 comes after the refusals
        await r.advance(121)
        assert r.to("sms")[1] == ("escalated", ("guard",))  # nobody acknowledged: tier 1 is paged
    still = r.store.alert(alert.id)
    assert still is not None and still.state is AlertState.ESCALATED and still.acked_by == ""
    assert _people_acts(r.store, alert.id) == []


@pytest.mark.parametrize("by", ["guard", "v-zhang", "contact:r1:0"])
async def test_staff_a_visitor_or_a_family_contact_acknowledges_and_the_ladder_stops(tmp_path: Path, by: str) -> None:
    visitor = {"id": "v-zhang", "name": "张社工", "role": "community_worker", "households": ["1-1-101"]}
    r = rig(tmp_path, visitors=[visitor])
    async with r.running():
        r.feed(Kind.SOS_PRESSED, Family.SOS, "101-sos")
        await settle()
        (alert,) = r.store.alerts(open_only=True)
        result = apply_command(r.alerts, {"action": "ack", "alert": alert.id, "by": by, "via": "cli"})
        assert result["ok"] and result["alert"]["acked_by"] == by
        await r.advance(600, step=30)
    assert [k for k, _ in r.to("sms")] == ["raised", "acknowledged"]
    assert _people_acts(r.store, alert.id) == [("acknowledged", by)]


def _key(gateway: Gateway, name: str, role: str = "duty") -> str:
    """An MQTT signing key for an integration, as `sensegate tokens create NAME --mqtt` makes."""
    key = f"sgk_{name}-test-key-0123456789abcdefghij"
    assert gateway.store.add_mqtt_key(name, key, role, gateway.clock.now())
    return key


def _signed(command: dict[str, Any], name: str, key: str, ts: float | None = None) -> str:
    return json.dumps(sign_command(command, name, key, int(time.time() if ts is None else ts)), ensure_ascii=False)


def _results(results: Subscriber) -> Any:
    def result(request_id: str) -> dict[str, Any] | None:
        return next((r for r in results.json() if r["request_id"] == request_id), None)

    return result


async def test_an_sos_is_paged_on_mqtt_and_acknowledged_over_the_command_topic(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_site("gw-ack"), tmp_path, mosquitto.host, mosquitto.port)
    prefix = config.topic_prefix
    notes = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/notifications/#")
    results = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/commands/result")
    result = _results(results)
    try:
        async with running(config) as gateway:
            key = _key(gateway, "duty-app")
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency"}')
                (page,) = await eventually(notes.json, what="the page")
                assert page["kind"] == "raised" and page["recipients"][0]["id"] == "s-li"
                alert_id = page["alert_id"]
                assert alert_id in page["text"]
                pub.publish(f"{prefix}/alerts/commands", "{not json")
                # Issue 13: any client of the broker acknowledged, in anyone's name, by a prefix.
                claim = {"action": "ack", "alert": alert_id[:6], "by": "s-li", "request_id": "r0"}
                pub.publish(f"{prefix}/alerts/commands", json.dumps(claim))
                refused = await eventually(lambda: result("r0"), what="the refusal")
                assert refused["ok"] is False and refused["reason"] == "unauthenticated"
                assert refused["action"] == "ack" and "must be signed" in refused["error"]
                command = {"action": "ack", "alert": alert_id, "request_id": "r1"}
                pub.publish(f"{prefix}/alerts/commands", _signed(command, "duty-app", key))
                taken = await eventually(lambda: result("r1"), what="the command result")
                assert taken["ok"] and taken["alert"]["acked_by"] == "token:duty-app"
                acked = await eventually(lambda: len(notes.json()) == 2 and notes.json()[1], what="the ack notice")
                assert acked["kind"] == "acknowledged" and "duty-app" in acked["text"]
                alert = gateway.store.alert(alert_id)
                assert alert is not None and alert.state is AlertState.ACKNOWLEDGED and alert.acked_via == "mqtt"
                counters = gateway.store.counters()
                assert counters.get("malformed.bad_command") == 1 and counters.get("commands.unauthenticated") == 1
                assert [r["reason"] for r in gateway.store.rejected_payloads()] == ["bad_command", "unauthenticated"]
    finally:
        notes.close()
        results.close()


async def test_the_cli_acknowledges_and_resolves_through_the_running_gateway(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site("gw-cli-ack")
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = _config_file(site, tmp_path, mosquitto)
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


def _console_site(site: dict[str, Any]) -> dict[str, Any]:
    return {**site, "console": {"enabled": True, "port": 0}}


async def _console_url(gateway: Gateway) -> str:
    server = gateway.console_server
    assert server is not None
    await asyncio.wait_for(server.started.wait(), 10)
    return f"http://127.0.0.1:{server.port}"


async def test_the_json_api_lists_shows_acknowledges_and_resolves_as_its_token(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_console_site(_site("gw-api")), tmp_path, mosquitto.host, mosquitto.port)
    auth = {"Authorization": "Bearer sgt_desk-secret-0123456789abcdef"}
    async with running(config) as gateway:
        gateway.store.add_api_token("desk", "sgt_desk-secret-0123456789abcdef", "duty", gateway.clock.now())
        url = await _console_url(gateway)
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
        (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
        await eventually(lambda: gateway.store.notifications(alert.id), what="the page")
        async with httpx.AsyncClient(base_url=url, headers=auth) as http:
            assert (await http.get("/api/v1/alerts", headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (await http.get("/api/v1/alerts", headers={"Authorization": ""})).status_code == 401
            r = await http.get("/api/v1/alerts")
            assert r.status_code == 200 and [a["id"] for a in r.json()["alerts"]] == [alert.id]
            r = await http.post(f"/api/v1/alerts/{alert.id}/ack", json={"note": "在路上"})
            body = r.json()
            assert r.status_code == 200 and body["alert"]["state"] == "acknowledged"
            assert body["alert"]["acked_by"] == "token:desk" and body["alert"]["acked_via"] == "api"
            r = await http.post(f"/api/v1/alerts/{alert.id}/ack", json={"by": "s-li"})  # people have identities
            assert r.status_code == 400 and "by" in r.json()["error"]
            assert (await http.post("/api/v1/alerts/ffffffffffff/ack", json={})).status_code == 404
            r = await http.post(f"/api/v1/alerts/{alert.id}/resolve", json={"note": "已处置"})
            assert r.status_code == 200 and r.json()["alert"]["resolve_note"] == "已处置"
            r = await http.post(f"/api/v1/alerts/{alert.id}/resolve", json={})
            assert r.status_code == 409 and "already resolved" in r.json()["error"]
            r = await http.get(f"/api/v1/alerts/{alert.id[:6]}")
        body = r.json()
        actions = [(t["action"], t["actor"], t["channel"]) for t in body["trail"]]
        assert r.status_code == 200
        assert actions.index(("acknowledged", "token:desk", "api")) < actions.index(("resolved", "token:desk", "api"))
        assert body["notifications"] and body["notifications"][0]["state"] == "sent"


async def test_a_resolve_from_any_client_of_the_broker_no_longer_silences_a_smoke_alarm(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # Issue 13, as reported: `mosquitto_pub -t <prefix>/alerts/commands -m '{"action":"resolve",
    # "alert":"49db","by":"s-li"}'` resolved a smoke alarm. Any client: a Wi-Fi plug is one.
    config = site_config(_site("gw-ack-anyone"), tmp_path, mosquitto.host, mosquitto.port)
    commands = f"{config.topic_prefix}/alerts/commands"
    results = Subscriber(mosquitto.host, mosquitto.port, f"{commands}/result")
    try:
        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port, client_id="wifi-plug") as plug:
                plug.publish("zigbee2mqtt/1号楼/101/烟感", '{"smoke": true, "battery": 100}')
                (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the smoke alert")
                for alert_id in (alert.id[:4], alert.id):
                    command = {"action": "resolve", "alert": alert_id, "by": "s-li", "request_id": alert_id}
                    plug.publish(commands, json.dumps(command))
                refusals = await eventually(lambda: len(results.json()) == 2 and results.json(), what="2 answers")
            assert [(r["request_id"], r["ok"], r["reason"]) for r in refusals] == [
                (alert.id[:4], False, "unauthenticated"),
                (alert.id, False, "unauthenticated"),
            ]
            still = gateway.store.alert(alert.id)
            assert still is not None and still.is_open and still.resolved_by == ""
            assert gateway.store.commands(pending_only=False) == []  # nothing was even queued
            assert gateway.store.counters()["commands.unauthenticated"] == 2
    finally:
        results.close()


async def test_mqtt_commands_that_prove_no_sender_are_refused_and_the_ladder_climbs(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_people_site("gw-ack-who"), tmp_path, mosquitto.host, mosquitto.port)
    prefix = config.topic_prefix
    notes = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/notifications/#")
    results = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/commands/result")
    result = _results(results)
    try:
        async with running(config) as gateway:
            key = _key(gateway, "guard-app")
            installer = _key(gateway, "maintenance-app", role="installer")
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency"}')
                (page,) = await eventually(notes.json, what="the page")
                alert_id = page["alert_id"]
                ack = {"action": "ack", "alert": alert_id}
                attempts = {
                    "claim": json.dumps({**ack, "by": "s-li", "request_id": "claim"}),
                    "wrong-key": _signed({**ack, "request_id": "wrong-key"}, "guard-app", "sgk_" + "x" * 40),
                    "stale": _signed({**ack, "request_id": "stale"}, "guard-app", key, time.time() - 300),
                    "no-key": _signed({**ack, "request_id": "no-key"}, "nobody", key),
                }
                for payload in attempts.values():
                    pub.publish(f"{prefix}/alerts/commands", payload)
                for request_id in attempts:
                    refused = await eventually(lambda r=request_id: result(r), what=f"the refusal of {request_id}")
                    assert refused["ok"] is False and refused["reason"] == "unauthenticated", refused
                # An installer's key may only take maintenance tickets, as on the console's API.
                resolve = {"action": "resolve", "alert": alert_id, "request_id": "installer"}
                pub.publish(f"{prefix}/alerts/commands", _signed(resolve, "maintenance-app", installer))
                forbidden = await eventually(lambda: result("installer"), what="the installer's refusal")
                assert forbidden["ok"] is False and forbidden["reason"] == "forbidden"
                assert len(notes.json()) == 1  # refused before tier 1 was due …
                climbed = await eventually(lambda: len(notes.json()) > 1 and notes.json()[1], what="tier 1")
                assert climbed["kind"] == "escalated" and [p["id"] for p in climbed["recipients"]] == ["s-wang"]
                alert = gateway.store.alert(alert_id)
                assert alert is not None and alert.state is AlertState.ESCALATED and alert.acked_by == ""
                assert _people_acts(gateway.store, alert_id) == []
                # … and the guard's app, signing, may take it — once.
                signed = _signed({**ack, "request_id": "guard"}, "guard-app", key)
                pub.publish(f"{prefix}/alerts/commands", signed)
                taken = await eventually(lambda: result("guard"), what="the guard app's ack")
                assert taken["ok"] and taken["alert"]["acked_by"] == "token:guard-app"
                pub.publish(f"{prefix}/alerts/commands", signed)  # replayed by whoever saw it
                await eventually(lambda: len([r for r in results.json() if r["request_id"] == "guard"]) == 2)
                replayed = [r for r in results.json() if r["request_id"] == "guard"][1]
                assert replayed["reason"] == "unauthenticated" and "nonce was used already" in replayed["error"]
                assert _people_acts(gateway.store, alert_id) == [("acknowledged", "token:guard-app")]
                assert gateway.store.counters()["commands.unauthenticated"] == len(attempts) + 1
    finally:
        notes.close()
        results.close()


async def test_a_signed_command_replayed_after_a_restart_is_refused(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = site_config(_site("gw-ack-replay"), tmp_path, mosquitto.host, mosquitto.port)
    prefix = config.topic_prefix
    results = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/commands/result")
    try:
        async with running(config) as gateway:
            key = _key(gateway, "duty-app")
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency"}')
                (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
                signed = _signed({"action": "resolve", "alert": alert.id, "request_id": "r"}, "duty-app", key)
                pub.publish(f"{prefix}/alerts/commands", signed)
                await eventually(lambda: results.json(), what="the result")
        async with running(config) as gateway:  # same store: the nonce is remembered
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(f"{prefix}/alerts/commands", signed)
                await eventually(lambda: len(results.json()) == 2, what="the second result")
            first, second = results.json()
            assert first["ok"] and second["reason"] == "unauthenticated" and "nonce" in second["error"]
            assert gateway.store.counters()["commands.unauthenticated"] == 1
    finally:
        results.close()


async def test_the_cli_refuses_an_unknown_person_at_once_or_reports_the_gateways_refusal(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _people_site("gw-cli-who")
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = str(_config_file(site, tmp_path, mosquitto))
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
        (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
        # With the config the CLI knows the people: refused before anything is queued.
        code = await asyncio.to_thread(cli, ["alerts", "ack", "-c", config_file, alert.id, "--by", "s-lii"])
        assert code == 1 and "error: unknown person 's-lii'; did you mean 's-li'?" in capsys.readouterr().err
        assert gateway.store.commands(pending_only=False) == []
        # With the store only it does not: the gateway refuses, and the CLI reports that.
        store_only = ["alerts", "ack", "--store", str(config.store_path), alert.id, "--by", "nobody-here"]
        code = await asyncio.to_thread(cli, store_only)
        assert code == 1 and "error: unknown person 'nobody-here'" in capsys.readouterr().err
        (refused,) = gateway.store.commands(pending_only=False)
        assert refused.result is not None and refused.result["reason"] == "unknown_person"
        await eventually(lambda: len(_tiers_paged(gateway.store, alert.id)) == 2, what="tier 1")
        _, (tier, climbed_at) = _tiers_paged(gateway.store, alert.id)
        assert tier == 1 and refused.done_at is not None and climbed_at > refused.done_at
        assert _people_acts(gateway.store, alert.id) == []
        contact = ["alerts", "ack", "-c", config_file, alert.id, "--by", "contact:r1:0"]
        assert await asyncio.to_thread(cli, contact) == 0 and "已确认" in capsys.readouterr().out
        assert _people_acts(gateway.store, alert.id) == [("acknowledged", "contact:r1:0")]


async def test_the_json_api_refuses_a_revoked_token_and_a_named_person_and_the_ladder_climbs(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_console_site(_people_site("gw-api-who")), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        gateway.store.add_api_token("old", "sgt_old-0123456789abcdefghijkl", "duty", gateway.clock.now())
        gateway.store.revoke_api_token("old", gateway.clock.now())
        gateway.store.add_api_token("guard-app", "sgt_guard-0123456789abcdefghij", "duty", gateway.clock.now())
        url = await _console_url(gateway)
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SOS_TOPIC, '{"action":"emergency"}')
        (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the alert")
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.post(
                f"/api/v1/alerts/{alert.id}/ack",
                json={},
                headers={"Authorization": "Bearer sgt_old-0123456789abcdefghijkl"},
            )
            assert r.status_code == 401
            guard = {"Authorization": "Bearer sgt_guard-0123456789abcdefghij"}
            r = await http.post(f"/api/v1/alerts/{alert.id}/resolve", json={"by": "s-wang"}, headers=guard)
            assert r.status_code == 400
            refused_at = gateway.clock.now()
            await eventually(lambda: len(_tiers_paged(gateway.store, alert.id)) == 2, what="tier 1")
            _, (tier, climbed_at) = _tiers_paged(gateway.store, alert.id)
            assert tier == 1 and climbed_at > refused_at
            still = gateway.store.alert(alert.id)
            assert still is not None and still.state is AlertState.ESCALATED
            assert _people_acts(gateway.store, alert.id) == []
            r = await http.post(f"/api/v1/alerts/{alert.id}/ack", json={}, headers=guard)
            assert r.status_code == 200 and r.json()["alert"]["acked_by"] == "token:guard-app"
