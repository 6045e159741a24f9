"""The command line as an installer meets it: `check`, `run` and `simulate` on a config (the shipped
ones among them), and `status`: what they see of a gateway's store; `sensegate alerts ack /
resolve` refusing, before anything is queued, a person the site config does not name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import tomli_w

from gateway.alerts.path import AlertPath
from gateway.cli.app import main as cli
from gateway.clock import VirtualClock
from gateway.models import Family, Kind
from gateway.site.config import load_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import event, minimal_site
from tests.servers import Mosquitto

ROOT = Path(__file__).resolve().parents[2]


def test_status_shows_counters_queues_and_open_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = minimal_site(
        outputs=[{"type": "influxdb_v1", "name": "influx", "url": "http://127.0.0.1:1", "database": "x"}]
    )
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    assert cli(["status", "-c", str(path)]) == 0  # before the first run: nothing yet is no error
    assert "no events yet" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # and nothing created on the gateway's behalf

    config = load_config(path)
    store = Store(config.store_path)
    stored = store.append(
        [event(), event(Kind.SOS_PRESSED, Family.SOS, device="101-sos")],
        {"influx": None},
        counts={"malformed.bad_json": 2},
    )
    AlertPath(Registry(config), store, VirtualClock(), config.topic_prefix, site_rules(config)).process(stored)
    store.close()

    assert cli(["status", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 events" in out
    assert "  accepted = 2" in out and "  malformed.bad_json = 2" in out
    assert "  pending.influx = 2" in out
    assert "[一级(特别重大)]" in out and "【紧急呼叫】" in out
    assert "  disk: store files " in out and "DISK FULL" not in out

    store = Store(config.store_path)  # what the running gateway writes while its disk is full
    store.set_meta("disk.state", json.dumps({"full": True, "refusing": True, "at": 1_767_225_600.0}))
    store.close()
    assert cli(["status", "-c", str(path)]) == 0
    assert "磁盘已满 DISK FULL since 2026-01-01 08:00" in capsys.readouterr().out  # the site's time


def _site_with_an_sos(tmp_path: Path) -> tuple[Path, str]:
    """A site file with staff, a visitor and a family contact, and a store with an open SOS alert."""
    site = minimal_site()
    site["gateway"]["data_dir"] = "data"
    site["staff"] = [{"id": "s-li", "name": "李值班", "role": "property"}]
    site["visitors"] = [{"id": "v-zhang", "name": "张社工", "role": "community_worker", "households": ["1-1-101"]}]
    site["residents"][0]["contacts"] = [{"name": "王小明", "phone": "13800000003", "relation": "儿子"}]
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    config = load_config(path)
    store = Store(config.store_path)
    stored = store.append([event(Kind.SOS_PRESSED, Family.SOS, device="101-sos")], {})
    AlertPath(Registry(config), store, VirtualClock(), config.topic_prefix, site_rules(config)).process(stored)
    (alert,) = store.alerts(open_only=True)
    store.close()
    return path, alert.id


def _queued(path: Path) -> list[dict[str, object]]:
    store = Store(load_config(path).store_path)
    try:
        return [c.body for c in store.commands(pending_only=False)]
    finally:
        store.close()


def test_alerts_ack_refuses_an_unknown_person_before_queueing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, alert_id = _site_with_an_sos(tmp_path)
    for action, by, expected in (
        ("ack", "s-lii", "error: unknown person 's-lii'; did you mean 's-li'?"),
        ("ack", "李值班", "error: unknown person '李值班'; did you mean 's-li'?"),  # the name, not the id
        ("ack", "contact:r1:1", "did you mean 'contact:r1:0'?"),  # 王秀英 has one contact: number 0
        ("resolve", "nobody-here", "error: unknown person 'nobody-here': name a staff id, a visitor id"),
    ):
        assert cli(["alerts", action, "-c", str(path), alert_id, "--by", by, "--wait", "0"]) == 1
        assert expected in capsys.readouterr().err
    assert _queued(path) == []


@pytest.mark.parametrize("by", ["s-li", "v-zhang", "contact:r1:0"])
def test_alerts_ack_queues_an_ack_by_staff_a_visitor_or_a_family_contact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    path, alert_id = _site_with_an_sos(tmp_path)
    # No gateway runs here: queued, for it to apply when it does.
    assert cli(["alerts", "ack", "-c", str(path), alert_id, "--by", by, "--wait", "0"]) == 3
    assert "queued" in capsys.readouterr().out
    assert [c["by"] for c in _queued(path)] == [by]


def test_check_and_run_refuse_a_roster_time_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``run`` would refuse at start-up, ``check`` refuses: exit 2, the field named, no traceback."""
    site = minimal_site(
        staff=[{"id": "s-li", "name": "李师傅", "role": "property"}],
        roster=[{"person": "s-li", "start": "25:00", "end": "08:00"}],
        channels=[{"type": "mqtt", "id": "app"}],
    )
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    for command in ("check", "run"):
        assert cli([command, "-c", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("config error: 1 problem(s)\n"), err
        assert 'roster[0].start: expected a local time "HH:MM", e.g. "07:00", found \'25:00\'' in err
    assert not (tmp_path / "data").exists()  # run stopped before opening anything


# ------------------------------------------------------------------ the shipped configs, as an installer meets them

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SHIPPED = sorted(CONFIG_DIR.glob("*.toml"))
# The environment of an installer's shell: none of the gateway's secrets.
NO_SECRETS = {k: v for k, v in os.environ.items() if not k.startswith(("SENSEGATE_", "INFLUX_", "WECOM_"))}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_checks_ok_without_its_secrets(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in set(os.environ) - set(NO_SECRETS):
        monkeypatch.delenv(key)
    assert cli(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {path}\n")
    unset = [line.strip() for line in out.splitlines() if "found unset" in line]
    if "env:" in path.read_text(encoding="utf-8"):  # an env: secret not set here is listed, not refused
        assert "sensegate run needs them:" in out and unset, out


def test_run_refuses_to_start_without_a_secret_check_only_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = minimal_site(
        mqtt={"password": "env:SENSEGATE_TEST_UNSET"},
        channels=[{"type": "wecom", "id": "wecom", "token": "env:SENSEGATE_TEST_UNSET_KEY"}],
    )
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    unset = "expected environment variable SENSEGATE_TEST_UNSET to be set, found unset"
    assert cli(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "secrets not available here (2); sensegate run needs them:" in out
    assert f"mqtt.password: {unset}" in out
    assert cli(["run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    # one line per secret: no second complaint about the empty value it stands for
    assert err.splitlines()[0] == "config error: 2 problem(s)", err
    assert f"mqtt.password: {unset}" in err and "channels['wecom'].token: expected environment variable" in err
    assert not (tmp_path / "data").exists()


def test_simulate_says_in_one_line_what_it_cannot_play(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = minimal_site()
    # A native water sensor is a valid device, but the simulator has no model of one.
    site["devices"].append(
        {"id": "101-water", "family": "water", "model": "x", "household": "1-1-101", "mqtt": {"format": "native"}}
    )
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    assert cli(["simulate", "-c", str(path), "--broker", "127.0.0.1:1", "--incidents", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot simulate {path}: no simulator for native model 'x' as a water device")
    assert len(err.splitlines()) == 1, err


@pytest.mark.integration
async def test_every_shipped_config_simulates_with_incidents(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``sensegate simulate --incidents`` on each shipped config (its topics moved aside, so the
    shared broker's other users see nothing) publishes its devices and the demo's incidents
    that the config has devices for; all run side by side for 10 s."""

    copies = {}
    for path in SHIPPED:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        tag = uuid.uuid4().hex[:8]
        data.setdefault("mqtt", {}).update(
            zigbee2mqtt_base=f"z2m-{tag}", rtl_433_topic=f"rtl-{tag}/+/events", native_base=f"native-{tag}"
        )
        copies[path] = tmp_path / path.name
        copies[path].write_text(tomli_w.dumps(data), encoding="utf-8")

    async def simulate(path: Path) -> tuple[Path, int, str, str]:
        copy = copies[path]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "gateway.cli", "simulate", "-c", str(copy), "--incidents", "--duration", "10"),
            *("--broker", f"{mosquitto.host}:{mosquitto.port}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**NO_SECRETS, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return path, proc.returncode or 0, out.decode(), err.decode()

    results = await asyncio.gather(*(simulate(path) for path in SHIPPED))
    for path, code, out, err in results:
        assert code == 0 and "Traceback" not in err, f"{path.name}: {err[-2000:]}"
        lines = out.splitlines()
        assert lines[-1].startswith("published "), f"{path.name}: {out}"
        planned = [line for line in lines if line.startswith("incident at ")]
        if any(line.startswith("incident at 8 s: sos in ") for line in planned):
            assert "incidents: sos " in lines[-1], f"{path.name}: {lines[-1]}"
        for line in lines:
            if line.startswith("no incident "):
                assert line.endswith("device"), line
    by_name = {path.name: out for path, _, out, _ in results}
    assert "incident at 18 s: smoke in 3-2-502" in by_name["example-site.toml"]  # the flat with a smoke detector


def test_devices_lists_every_device_and_filters_by_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 12: the inventory an installer walks the block with, from what the devices really sent.
    site = minimal_site()
    site["gateway"]["data_dir"] = "data"
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    config = load_config(path)
    registry = Registry(config)
    now = time.time()  # the command reads the wall clock: "silent" is measured from now
    events = registry.decode("zigbee2mqtt/1号楼/101/烟感", b'{"smoke":false,"battery":9,"linkquality":120}', now)
    events += registry.decode("zigbee2mqtt/1号楼/101/门磁", b'{"contact":true,"battery":95,"linkquality":12}', now)
    store = Store(config.store_path)
    store.append(events, {})
    store.close()

    assert cli(["devices", "-c", str(path), "--json"]) == 0
    rows = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {d.id for d in config.devices}  # every device, heard or not
    assert rows["101-smoke"]["battery"] == 9 and "battery" in rows["101-smoke"]["problems"]
    assert rows["101-door"]["link_quality"] == 12 and rows["101-door"]["problems"] == ["weak"]
    assert rows["101-sos"]["last_seen"] is None and rows["101-sos"]["problems"] == ["silent"]

    assert cli(["devices", "-c", str(path), "--problem", "battery"]) == 0
    out = capsys.readouterr().out
    assert "101-smoke" in out and "低电量" in out and "101-door" not in out and "共 1 /" in out
    assert cli(["devices", "-c", str(path), "--problem", "signal", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "101-door" in out and "weak signal" in out and "101-smoke" not in out
    assert cli(["devices", "-c", str(path), "--problem", "silent", "--json"]) == 0
    silent = {json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()}
    assert "101-sos" in silent and "101-smoke" not in silent
