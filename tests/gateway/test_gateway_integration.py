"""The whole gateway against real Mosquitto, InfluxDB 1.x and VictoriaMetrics.

These are the foundation's acceptance tests: every payload format arrives in both outputs
with the documented schema; alerts are published; malformed input is counted and skipped;
an InfluxDB outage and a broker restart lose nothing; a SIGKILL mid-stream loses no accepted
event and duplicates no point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.models import AlertState
from tests.gateway.factories import minimal_site
from tests.gateway.harness import (
    GatewayProcess,
    Publisher,
    Subscriber,
    eventually,
    open_store,
    running,
    site_config,
)
from tests.servers import InfluxDB1, Mosquitto, Server, VictoriaMetrics

pytestmark = pytest.mark.integration

SMOKE_TOPIC = "zigbee2mqtt/1号楼/101/烟感"
DOOR_TOPIC = "zigbee2mqtt/1号楼/101/门磁"
SOS_TOPIC = "zigbee2mqtt/1号楼/101/SOS"
RTL_TOPIC = "rtl_433/pi-3/events"
GATE_TOPIC = "sensegate/in/gate-1"


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _site(
    tmp_path: Path, influx: InfluxDB1 | None = None, vm: VictoriaMetrics | None = None, **over: Any
) -> dict[str, Any]:
    site = minimal_site(**over)
    site["gateway"] = {**site["gateway"], "id": _unique("gw")}
    outputs = []
    if influx is not None:
        outputs.append(
            {
                "type": "influxdb_v1",
                "name": "influx",
                "url": influx.url,
                "database": _unique("db"),
                "create_database": True,
                "flush_interval": 0.2,
                "backoff_initial": 0.2,
                "backoff_max": 1.0,
                "timeout": 2.0,
            }
        )
    if vm is not None:
        outputs.append(
            {
                "type": "influxdb_v2",
                "name": "vm",
                "url": vm.url,
                "org": "community",
                "bucket": "sensegate",
                "token": "unused-by-vm",
                "flush_interval": 0.2,
            }
        )
    site["outputs"] = outputs
    return site


def _rtl_time() -> str:
    # rtl_433 prints the local time of its host (China Standard Time in deployment).
    return dt.datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")


def _publish_one_of_each(pub: Publisher) -> None:
    pub.publish(SMOKE_TOPIC, '{"battery":96.5,"linkquality":92,"enrolled":true,"smoke":true,"battery_low":false}')
    pub.publish(DOOR_TOPIC, '{"contact":false,"battery":100,"voltage":3005,"temperature":25,"linkquality":120}')
    pub.publish(
        RTL_TOPIC,
        json.dumps(
            {
                "time": _rtl_time(),
                "model": "Kerui-Security",
                "id": 123456,
                "cmd": 14,
                "opened": 1,
                "state": "open",
            }
        ),
    )
    pub.publish(
        GATE_TOPIC,
        json.dumps(
            {
                "v": 1,
                "kind": "access_granted",
                "values": {"credential": "card:123-4567", "person": "张三", "direction": "in"},
            },
            ensure_ascii=False,
        ),
    )


async def test_every_payload_format_reaches_influxdb_v1_and_the_v2_api(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, victoriametrics: VictoriaMetrics, tmp_path: Path
) -> None:
    site = _site(tmp_path, influxdb_v1, victoriametrics)
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    db = site["outputs"][0]["database"]
    gw_id = config.gateway.id
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            _publish_one_of_each(pub)
        await eventually(
            lambda: (
                gateway.store.counters().get("forwarded.influx", 0) >= 6
                and gateway.store.counters().get("forwarded.vm", 0) >= 6
            ),
            what="both outputs to confirm the events",
        )

    smoke = influxdb_v1.query(db, "SELECT * FROM smoke")
    alarm = [r for r in smoke if r["event"] == "smoke_alarm"]
    assert len(alarm) == 1
    row = alarm[0]
    assert row["device"] == "101-smoke" and row["model"] == "HS1SA" and row["source"] == "zigbee2mqtt"
    assert (row["building"], row["unit"], row["household"], row["room"]) == ("1", "1", "101", "厨房")
    assert (row["gateway"], row["site"]) == (gw_id, "测试小区")
    assert isinstance(row["seq"], int) and row["time_source"] == "gateway"
    battery = [r for r in smoke if r["event"] == "battery"]
    assert [(r["device"], r["battery"]) for r in battery] == [("101-smoke", 96.5)]

    door = influxdb_v1.query(db, "SELECT * FROM door")
    by_device = {r["device"]: r for r in door if r["event"] in ("door_opened", "access_granted")}
    assert set(by_device) == {"101-door", "main-door", "gate-1"}
    assert by_device["main-door"]["source"] == "rtl_433" and by_device["main-door"]["room"] == "单元门"
    assert by_device["gate-1"]["credential"] == "card:123-4567" and by_device["gate-1"]["person"] == "张三"
    assert "household" not in by_device["gate-1"] or by_device["gate-1"]["household"] is None  # public area

    # The same events through the v2 write API (VictoriaMetrics: metric = measurement_field).
    series = victoriametrics.wait_for_samples(f'smoke_seq{{gateway="{gw_id}"}}', samples=1)
    labels = {s["metric"]["event"]: s["metric"] for s in series}
    assert labels["smoke_alarm"]["device"] == "101-smoke" and labels["smoke_alarm"]["room"] == "厨房"
    doors = victoriametrics.wait_for_samples(f'door_seq{{gateway="{gw_id}"}}', samples=3)
    assert {s["metric"]["device"] for s in doors} >= {"101-door", "main-door", "gate-1"}


async def test_alerts_are_raised_published_and_auto_resolved(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    prefix = config.topic_prefix
    events = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/events")
    try:
        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port) as pub:
                pub.publish(SOS_TOPIC, '{"action":"emergency","battery":100,"linkquality":110}')
                pub.publish(SMOKE_TOPIC, '{"smoke":true,"battery":90}')
                pub.publish(SMOKE_TOPIC, '{"smoke":true,"battery":90}')  # a repeat: folded in
                pub.publish(SMOKE_TOPIC, '{"smoke":false,"battery":90}')  # clears the smoke alert
            got = await eventually(lambda: len(events.json()) >= 4 and events.json(), what="4 alert transitions")
            alerts = gateway.store.alerts()
    finally:
        events.close()

    assert [(m["transition"], m["alert"]["rule"]) for m in got] == [
        ("raised", "sos"),
        ("raised", "smoke_alarm"),
        ("updated", "smoke_alarm"),
        ("resolved", "smoke_alarm"),
    ]
    sos = got[0]["alert"]
    assert sos["severity"] == 1 and sos["severity_zh"] == "一级(特别重大)"
    assert "紧急呼叫" in sos["message_zh"] and "王秀英" in sos["message_zh"] and "独居老人" in sos["message_zh"]
    assert "SOS" in sos["message_en"]
    assert got[2]["alert"]["count"] == 2
    assert {a.rule: a.state for a in alerts} == {"sos": AlertState.RAISED, "smoke_alarm": AlertState.RESOLVED}

    # The retained state shows exactly the open alerts to a late subscriber.
    late = Subscriber(mosquitto.host, mosquitto.port, f"{prefix}/alerts/open/+")
    try:
        retained = await eventually(lambda: late.json(), what="retained open alerts")
        await asyncio.sleep(0.3)  # give any (wrongly) retained resolved alert time to show up too
        assert [a["rule"] for a in late.json()] == ["sos"] == [a["rule"] for a in retained]
    finally:
        late.close()


async def test_malformed_payloads_are_counted_and_skipped_while_good_traffic_continues(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    bad = [
        (SMOKE_TOPIC, b'{"smoke": tru'),  # bad JSON
        (SMOKE_TOPIC, b'{"smoke": "yes", "battery": 90}'),  # wrong type
        (SMOKE_TOPIC, b"[1, 2, 3]"),  # not an object
        ("zigbee2mqtt/9号楼/999/烟感", b'{"smoke": false}'),  # unknown device
        (GATE_TOPIC, b"\xff\xfe" + bytes(range(256)) * 4096),  # 1 MB garbage
        (RTL_TOPIC, b'{"model": "Kerui-Security", "id": 999999, "cmd": 14}'),  # unknown rtl_433 device
        (GATE_TOPIC, b'{"kind": "teleported"}'),  # unknown kind
    ]
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            for i in range(20):
                pub.publish(DOOR_TOPIC, json.dumps({"contact": i % 2 == 0, "linkquality": 100 + i}))
                topic, payload = bad[i % len(bad)]
                pub.publish(topic, payload)
        counters = await eventually(
            lambda: (
                (c := gateway.store.counters()).get("accepted", 0) >= 20
                and sum(v for k, v in c.items() if k.startswith("malformed.")) >= 20
                and c
            ),
            what="all good and bad messages to be handled",
        )
        rejected = gateway.store.rejected_payloads(limit=100)
        doors = [e for e in gateway.store.events_after(0, limit=1000) if e.device_id == "101-door"]

    assert len(doors) == 20  # every good message, in order
    assert [e.kind.value for e in doors[:2]] == ["door_closed", "door_opened"]
    malformed = {k.removeprefix("malformed."): v for k, v in counters.items() if k.startswith("malformed.")}
    assert sum(malformed.values()) == 20
    assert malformed["unknown_device"] >= 5 and malformed["too_large"] >= 2 and malformed["bad_json"] >= 2
    assert len(rejected) == 20
    big = [r for r in rejected if r["reason"] == "too_large"]
    assert big and big[0]["payload_bytes"] > 1_000_000 and len(str(big[0]["payload"])) <= 4096


async def test_influxdb_outage_of_a_minute_loses_nothing(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path, ensure_started: list[Server]
) -> None:
    site = _site(tmp_path, influxdb_v1)
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    db = site["outputs"][0]["database"]
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": -1}}))
            await eventually(lambda: gateway.store.counters().get("forwarded.influx", 0) >= 1, what="first write")
            ensure_started.append(influxdb_v1)
            influxdb_v1.stop()
            # A minute of traffic while the database is down.
            for n in range(120):
                pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": n}}))
                await asyncio.sleep(0.5)
            assert gateway.store.pending_count("influx") == 120
            assert gateway.store.counters().get("retried.influx", 0) >= 3
            influxdb_v1.start()
        await eventually(lambda: gateway.store.pending_count("influx") == 0, within=30, what="the backlog to drain")
    rows = influxdb_v1.query(db, "SELECT n FROM door WHERE device = 'gate-1'")
    assert sorted(r["n"] for r in rows) == [float(n) for n in range(-1, 120)]


async def test_broker_restart_mid_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    async with running(config) as gateway:
        with Publisher(mosquitto.host, mosquitto.port, client_id=_unique("pub")) as pub:
            for n in range(100):
                pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": n}}))
        mosquitto.restart()
        # paho's reconnect back-off (1 s doubling to 30 s) decides how long this takes.
        await eventually(lambda: gateway.ingest.connects >= 2, within=60, what="the gateway to reconnect")
        with Publisher(mosquitto.host, mosquitto.port, client_id=_unique("pub")) as pub:
            for n in range(100, 200):
                pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": n}}))
        await eventually(lambda: gateway.store.event_count() >= 200, within=30, what="all 200 events")
        ns = [e.values["n"] for e in gateway.store.events_after(0, limit=1000)]
    assert sorted(ns) == list(range(200))


async def test_sigkill_mid_stream_loses_no_accepted_event_and_duplicates_no_point(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path
) -> None:
    site = _site(tmp_path, influxdb_v1)
    site["gateway"]["data_dir"] = str(tmp_path / "data")
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    site["alerts"] = {"console": False}
    db = site["outputs"][0]["database"]
    total = 3000
    proc = GatewayProcess(site, tmp_path)
    proc.start()
    try:
        store_path = tmp_path / "data" / "store.sqlite3"
        await eventually(lambda: store_path.exists(), what="the gateway to create its store")
        with (
            Publisher(mosquitto.host, mosquitto.port, client_id=_unique("pub")) as pub,
            open_store(store_path) as store,
        ):

            def probe() -> bool:
                # Until the gateway has subscribed once, a new session keeps nothing: probe
                # (another device) until one arrives; from then on the session keeps all.
                pub.publish(f"{DOOR_TOPIC}/availability", "online")
                return store.event_count() >= 1

            await eventually(probe, what="the gateway to subscribe")
            for n in range(total):
                pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": n}}), qos=1)
                if n == total // 3:
                    killed_at = store.event_count()
                    proc.kill()  # SIGKILL: no chance to flush or say goodbye
                    proc.start()
        assert 0 < killed_at < total
        with open_store(store_path) as store:
            await eventually(
                lambda: sum(e.device_id == "gate-1" for e in store.events_after(0, limit=3 * total)) >= total,
                within=60,
                what=f"{total} events",
            )
            await eventually(lambda: store.pending_count("influx") == 0, within=60, what="influx to catch up")
            ns = [e.values["n"] for e in store.events_after(0, limit=3 * total) if e.device_id == "gate-1"]
    finally:
        proc.stop()
    assert sorted(ns) == list(range(total)), "every published event stored exactly once"
    rows = influxdb_v1.query(db, "SELECT COUNT(n) FROM door WHERE device = 'gate-1'")
    assert rows[0]["count"] == total, "one point per event: replays overwrite, never duplicate"


async def test_redelivery_of_stored_but_unacknowledged_messages_is_not_stored_twice(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window between commit and PUBACK, made deterministic: no PUBACK is sent."""
    import paho.mqtt.client as mqtt

    from gateway.mqtt_util import _Client

    config = site_config(_site(tmp_path), tmp_path, mosquitto.host, mosquitto.port)
    with monkeypatch.context() as m:
        m.setattr(mqtt.Client, "ack", lambda self, mid, qos: mqtt.MQTT_ERR_SUCCESS)
        m.setattr(_Client, "ack_many", lambda self, mids: mqtt.MQTT_ERR_SUCCESS)  # a batch's PUBACKs
        async with running(config) as gateway:
            with Publisher(mosquitto.host, mosquitto.port, client_id=_unique("pub")) as pub:
                for n in range(50):
                    pub.publish(GATE_TOPIC, json.dumps({"kind": "heartbeat", "values": {"n": n}}))
            await eventually(lambda: gateway.store.event_count() == 50, what="50 stored events")
    # Restart: the broker redelivers all 50 (DUP) on the persistent session.
    async with running(config) as gateway:
        counters = await eventually(
            lambda: (c := gateway.store.counters()).get("duplicates", 0) >= 50 and c, what="50 duplicates"
        )
        assert gateway.store.event_count() == 50
        assert counters["accepted"] == 50
    # And they were acknowledged this time: a third start receives nothing.
    async with running(config) as gateway:
        await asyncio.sleep(1.0)
        assert gateway.store.counters()["duplicates"] == 50
