"""Test mode through a running gateway, a real broker and a real InfluxDB (issue 12): the CLI
queues the command, the gateway applies it; a detector smoked in test mode pages nobody and its
point carries the tag test=true; once test mode is ended the same press is a paged 火警 and its
point has no test tag."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.cli.app import main as cli
from gateway.store import Store
from tests.gateway.factories import minimal_site
from tests.gateway.harness import Publisher, eventually, running, site_config
from tests.servers import InfluxDB1, Mosquitto

pytestmark = pytest.mark.integration

SMOKE_TOPIC = "zigbee2mqtt/1号楼/101/烟感"
SMOKE = '{"battery":96,"linkquality":92,"smoke":true,"battery_low":false}'  # canned smoke: no test bit
CLEAR = '{"battery":96,"linkquality":92,"smoke":false,"battery_low":false}'


def _site(influx: InfluxDB1, database: str) -> dict[str, Any]:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "id": f"gw-tm-{uuid.uuid4().hex[:6]}"}
    site["staff"] = [
        {"id": "s-li", "name": "李值班", "role": "property", "phone": "13800000001"},
        {"id": "s-zhou", "name": "周师傅", "role": "maintenance", "phone": "13800000002"},
    ]
    site["channels"] = [{"type": "mqtt", "id": "app"}]
    site["roster"] = [{"person": "s-li"}]
    site["ladders"] = [{"id": "all", "tiers": [{"to": ["on_duty"], "channels": ["app"]}]}]
    site["routes"] = [{"ladder": "all"}]
    site["outputs"] = [
        {
            "type": "influxdb_v1",
            "name": "influx",
            "url": influx.url,
            "database": database,
            "create_database": True,
            "flush_interval": 0.2,
            "backoff_initial": 0.2,
            "timeout": 2.0,
        }
    ]
    return site


def _config_file(site: dict[str, Any], tmp_path: Path, mosquitto: Mosquitto) -> str:
    path = tmp_path / "site.toml"
    site = {**site, "gateway": {**site["gateway"], "data_dir": str(tmp_path / "data")}}
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    path.write_text(tomli_w.dumps(site), encoding="utf-8")
    return str(path)


def _pages(store: Store) -> list[str]:
    return [n.key for a in store.alerts(limit=1000) for n in store.notifications(a.id)]


async def test_a_detector_smoked_in_test_mode_pages_nobody_and_its_point_is_tagged(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"tm_{uuid.uuid4().hex[:10]}"
    site = _site(influxdb_v1, database)
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = _config_file(site, tmp_path, mosquitto)
    async with running(config) as gateway:
        start = ["testmode", "start", "-c", config_file, "--household", "1-1-101", "--for", "30m", "--by", "s-zhou"]
        assert await asyncio.to_thread(cli, start) == 0
        assert "1号楼1单元101室" in capsys.readouterr().out
        assert await asyncio.to_thread(cli, ["status", "-c", config_file]) == 0
        assert "测试模式 test mode 1: 1号楼1单元101室 by s-zhou, 30 min left" in capsys.readouterr().out
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish(SMOKE_TOPIC, SMOKE)
            pub.publish(SMOKE_TOPIC, CLEAR)
            await eventually(lambda: gateway.store.counters().get("forwarded.influx", 0) >= 4, what="the points")
            assert gateway.store.alerts(limit=100) == [] and _pages(gateway.store) == []
            assert [w.rule for w in gateway.store.would_haves()] == ["smoke_alarm"]

            end = ["testmode", "end", "-c", config_file, "--household", "1-1-101", "--by", "s-zhou"]
            assert await asyncio.to_thread(cli, end) == 0
            pub.publish(SMOKE_TOPIC, SMOKE)
            (alert,) = await eventually(lambda: gateway.store.alerts(open_only=True), what="the real alarm")
            assert alert.rule == "smoke_alarm"
            await eventually(lambda: _pages(gateway.store), what="the page to the person on duty")
            await eventually(lambda: gateway.store.counters().get("forwarded.influx", 0) >= 6, what="the points")

    alarms = influxdb_v1.query(database, "SELECT seq, test_mode, test FROM smoke WHERE event = 'smoke_alarm'")
    assert [(r["test"], r["test_mode"]) for r in alarms] == [("true", 1.0), (None, None)]
    real = influxdb_v1.query(database, "SELECT seq FROM smoke WHERE event = 'smoke_alarm' AND test != 'true'")
    assert [r["seq"] for r in real] == [alarms[1]["seq"]]  # a point without the tag is "not a test"
    tags = {r["tagKey"] for r in influxdb_v1.query(database, 'SHOW TAG KEYS FROM "smoke"')}
    assert "test" in tags

    assert cli(["testmode", "list", "-c", config_file, "--all"]) == 0
    listed = capsys.readouterr().out
    assert "1号楼1单元101室" in listed and "ended by s-zhou" in listed
    assert cli(["testmode", "show", "-c", config_file, "1"]) == 0
    shown = capsys.readouterr().out
    for line in ("started", "s-zhou via cli", "ended", "would have raised", "【火警】"):
        assert line in shown, line


async def test_the_cli_refuses_an_unknown_person_or_scope_before_queueing(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(influxdb_v1, "unused")
    site["outputs"] = []
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = _config_file(site, tmp_path, mosquitto)
    async with running(config) as gateway:
        bad_person = ["testmode", "start", "-c", config_file, "--building", "1", "--by", "s-zho"]
        assert await asyncio.to_thread(cli, bad_person) == 1
        assert "did you mean 's-zhou'" in capsys.readouterr().err
        bad_scope = ["testmode", "start", "-c", config_file, "--household", "1-1-10", "--by", "s-zhou"]
        assert await asyncio.to_thread(cli, bad_scope) == 1
        assert "no household '1-1-10'" in capsys.readouterr().err
        too_long = ["testmode", "start", "-c", config_file, "--building", "1", "--for", "25h", "--by", "s-zhou"]
        assert await asyncio.to_thread(cli, too_long) == 1  # the gateway's refusal, reported
        assert "at most 24 h" in capsys.readouterr().err
        assert gateway.store.commands(pending_only=True) == []
        assert gateway.store.test_modes() == []


async def test_a_walk_test_from_the_cli(
    mosquitto: Mosquitto, influxdb_v1: InfluxDB1, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(influxdb_v1, "unused")
    site["outputs"] = []
    config = site_config(site, tmp_path, mosquitto.host, mosquitto.port)
    config_file = _config_file(site, tmp_path, mosquitto)
    async with running(config) as gateway:
        start = ["commission", "start", "-c", config_file, "--household", "1-1-101", "--by", "s-zhou"]
        assert await asyncio.to_thread(cli, start) == 0
        assert "现场调试 walk test 1: 1号楼1单元101室 (4 devices)" in capsys.readouterr().out
        with Publisher(mosquitto.host, mosquitto.port) as pub:
            pub.publish("zigbee2mqtt/1号楼/101/SOS", '{"action":"emergency","battery":100,"linkquality":35}')
            pub.publish(SMOKE_TOPIC, '{"smoke":true,"test":true,"battery":12,"linkquality":90,"battery_low":true}')
        await eventually(lambda: len(gateway.store.commission_seen(1)) == 2, what="two devices ticked off")
        assert await asyncio.to_thread(cli, ["commission", "status", "-c", config_file]) == 0
        status = capsys.readouterr().out
        assert "已上报 seen 2/4" in status and "101-door" in status and "请开门或刷卡" in status
        assert "信号弱" in status and "低电量" in status and "【紧急呼叫】" in status
        finish = ["commission", "finish", "-c", config_file, "--by", "s-zhou"]
        assert await asyncio.to_thread(cli, finish) == 0
        out = capsys.readouterr().out
        assert "2/4 devices seen, 2 not seen" in out and "未上报 not seen: 101-door" in out
        assert gateway.store.alerts(limit=10) == []  # the press was in the walk test's test mode
    report = tmp_path / "report.csv"
    assert cli(["commission", "report", "-c", config_file, "--format", "csv", "--out", str(report)]) == 0
    text = report.read_text(encoding="utf-8")
    assert text.startswith("\ufeff楼栋") and text.count("未上报") == 2
    assert cli(["commission", "report", "-c", config_file]) == 0
    assert "<h1>现场调试报告</h1>" in capsys.readouterr().out
