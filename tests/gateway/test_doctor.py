"""`sensegate doctor` against real servers: Mosquitto with a password file (right and wrong
password, and down), InfluxDB 1.x with auth (accepted, wrong password, read-only user, no such
database, down), a radar and a Modbus bus on pseudo-terminals answering, a missing port, the
clock before the install date or the newest event, a damaged store, loose file modes; and the
exit code: 0 ok, 1 warnings, 2 failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.cli.doctor import Doctor, Finding, Level, exit_code
from gateway.clock import SystemClock
from gateway.site.config import load_config, parse_config
from gateway.store import Store
from simulators.block import demo_site
from simulators.runner import SerialSimulators
from tests.gateway.factories import event, minimal_site
from tests.servers import InfluxDB1, Mosquitto, ServerError, http_request

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOW = 1_795_305_600.0  # 2026-11-22T16:00:00Z


class AuthInflux(InfluxDB1):
    """InfluxDB 1.x with auth on: admin (all privileges), reader (READ on db sg), database sg."""

    def prepare(self) -> None:
        super().prepare()
        self.conf_path.write_text(self.conf_path.read_text().replace("auth-enabled = false", "auth-enabled = true"))

    def start(self) -> AuthInflux:
        super().start()
        for q in (
            "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES",
            "CREATE DATABASE sg",
            "CREATE USER reader WITH PASSWORD 'reader-pw'",
            "GRANT READ ON sg TO reader",
        ):
            status, body = http_request(
                "POST", f"{self.url}/query?" + urllib.parse.urlencode({"q": q, "u": "admin", "p": "admin-pw"})
            )
            if status != 200:
                raise ServerError(f"{q}: {status} {body!r}")
        return self


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    d = tmp_path_factory.mktemp("mqtt-auth")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "gw", "s3cret"], check=True)
    (d / "passwd").chmod(0o644)
    broker = Mosquitto(extra_config=["allow_anonymous false", f"password_file {d / 'passwd'}"])
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture(scope="module")
def influx() -> Iterator[AuthInflux]:
    server = AuthInflux()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def write(tmp_path: Path, site: dict[str, Any], broker: Mosquitto, password: str = "s3cret") -> Path:
    site = dict(site)
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    site["mqtt"] = {"host": broker.host, "port": broker.port, "username": "gw", "password": password}
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    path.chmod(0o640)
    return path


def doctor(path: Path, now: float = NOW, probe: float = 0.5, **kwargs: Any) -> list[Finding]:
    config = load_config(path, mode_problems=[])  # as `sensegate doctor` loads it: a bad mode is a finding
    d = Doctor(config, path, now=lambda: now, installed_at=lambda: NOW - 86400, probe_seconds=probe, **kwargs)
    return asyncio.run(d.run())


def of(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check or f.check.startswith(check + " ")]


def test_broker_credentials_accepted_refused_and_broker_down(auth_broker: Mosquitto, tmp_path: Path) -> None:
    path = write(tmp_path, minimal_site(), auth_broker)
    (ok,) = of(doctor(path, synchronised=lambda: True), "broker")
    assert ok.level is Level.OK and "credentials accepted" in ok.what

    wrong = write(tmp_path, minimal_site(), auth_broker, password="wrong")
    (refused,) = of(doctor(wrong, synchronised=lambda: True), "broker")
    assert refused.level is Level.FAIL and "credentials refused" in refused.what
    assert "password_file" in refused.fix_en and "密码" in refused.fix_zh

    auth_broker.stop()
    try:
        (down,) = of(doctor(path, synchronised=lambda: True), "broker")
    finally:
        auth_broker.start()
    assert down.level is Level.FAIL and "unreachable" in down.what and "mosquitto" in down.fix_zh


def test_influxdb_outputs_by_an_empty_write(auth_broker: Mosquitto, influx: AuthInflux, tmp_path: Path) -> None:
    def output(name: str, user: str, password: str, database: str = "sg") -> dict[str, Any]:
        return {
            "type": "influxdb_v1",
            "name": name,
            "url": influx.url,
            "database": database,
            "username": user,
            "password": password,
        }

    site = minimal_site(
        outputs=[
            output("good", "admin", "admin-pw"),
            output("badpw", "admin", "nope"),
            output("readonly", "reader", "reader-pw"),
            output("nodb", "admin", "admin-pw", "missing"),
        ]
    )
    found = doctor(write(tmp_path, site, auth_broker), synchronised=lambda: True)
    by = {f.check: f for f in found if f.check.startswith("output ")}
    assert by["output good"].level is Level.OK and "empty write was accepted" in by["output good"].what
    assert by["output badpw"].level is Level.FAIL and "credentials refused" in by["output badpw"].what
    assert by["output readonly"].level is Level.FAIL and "no write permission" in by["output readonly"].what
    assert by["output nodb"].level is Level.FAIL and "not found" in by["output nodb"].what
    # Nothing was written by the check.
    query = {"q": "SHOW MEASUREMENTS", "db": "sg", "u": "admin", "p": "admin-pw"}
    status, body = http_request("POST", f"{influx.url}/query?" + urllib.parse.urlencode(query))
    assert status == 200 and b'"series"' not in body

    influx.stop()
    try:
        down = of(doctor(write(tmp_path, site, auth_broker), synchronised=lambda: True), "output good")
    finally:
        influx.start()
    assert down[0].level is Level.FAIL and "unreachable" in down[0].what


def test_wired_devices_answering_and_a_missing_port(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Two buildings: the demo block's wired radar is in building 2, its Modbus bus in building 1.
    ports = {"radar_port": str(tmp_path / "ttyRADAR"), "modbus_port": str(tmp_path / "ttyRS485")}
    site = demo_site(2, 2, data_dir=str(tmp_path / "data"), **ports)
    site["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port}
    config = parse_config(site, file="<test>")
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    path.chmod(0o640)
    sims = SerialSimulators(config, clock=SystemClock())

    async def probe() -> list[Finding]:
        stop = asyncio.Event()
        sims.open()
        try:
            play = asyncio.create_task(sims.run(stop, incidents=False))
            d = Doctor(config, path, now=time.time, synchronised=lambda: True, probe_seconds=4.0)
            found = await d.run()
            stop.set()
            await asyncio.wait_for(play, 10)
            return found
        finally:
            sims.close()

    found = asyncio.run(probe())
    serial = [f for f in found if f.check.startswith("serial ")]
    assert serial and all(f.level is Level.OK and "frames in 4 s" in f.what for f in serial), serial
    modbus = [f for f in found if f.check.startswith("modbus ")]
    assert modbus and all(f.level is Level.OK and "answered a read" in f.what for f in modbus), modbus

    # The radar's adapter unplugged: its port is gone.
    (tmp_path / "gone").mkdir()
    site["devices"] = [
        {**d, "serial": {**d["serial"], "port": str(tmp_path / "gone" / "ttyUSB9")}} if "serial" in d else d
        for d in site["devices"]
    ]
    site["modbus_buses"] = []
    site["devices"] = [d for d in site["devices"] if "modbus" not in d]
    path.write_text(tomli_w.dumps(site))
    found = doctor(path, now=time.time(), synchronised=lambda: True)
    (missing,) = [f for f in found if f.check.startswith("serial ")]
    assert missing.level is Level.FAIL and "ttyUSB9 does not exist" in missing.what
    assert "/dev/serial/by-id/" in missing.fix_en and "USB" in missing.fix_zh


def test_clock_before_the_install_or_the_newest_event_and_unsynchronised(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = write_plain(tmp_path, mosquitto)
    store = Store(load_config(path).store_path)
    store.append([event(t=NOW + 3600)], {})
    store.close()
    (behind,) = of(doctor(path, now=NOW, synchronised=lambda: None), "clock")
    assert behind.level is Level.FAIL and "before the newest stored event" in behind.what and "RTC" in behind.fix_en
    (boot,) = of(doctor(path, now=NOW - 30 * 86400, synchronised=lambda: None), "clock")
    assert boot.level is Level.FAIL and "before SenseGate was installed" in boot.what
    (unsynced,) = of(doctor(path, now=NOW + 7200, synchronised=lambda: False), "clock")
    assert unsynced.level is Level.WARN and "not synchronised" in unsynced.what and "NTP" in unsynced.fix_zh
    (fine,) = of(doctor(path, now=NOW + 7200, synchronised=lambda: True), "clock")
    assert fine.level is Level.OK


def write_plain(tmp_path: Path, broker: Mosquitto) -> Path:
    site = minimal_site()
    site["gateway"] = {**site["gateway"], "data_dir": str(tmp_path / "data")}
    site["mqtt"] = {"host": broker.host, "port": broker.port}
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    path.chmod(0o640)
    return path


def test_store_integrity_and_file_modes_and_the_exit_code(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = write_plain(tmp_path, mosquitto)
    found = doctor(path, now=time.time(), synchronised=lambda: True)
    assert exit_code(found) == 0, [f for f in found if f.level]
    (store_ok,) = of(found, "store")
    assert "no store yet" in store_ok.what

    store_path = load_config(path).store_path
    Store(store_path).close()
    (store_ok,) = of(doctor(path, now=time.time(), synchronised=lambda: True), "store")
    assert store_ok.level is Level.OK and "quick_check ok" in store_ok.what
    with store_path.open("r+b") as f:  # page 2, the root of the first table, overwritten
        f.seek(4096)
        f.write(b"\xff" * 4096)
    bad = of(doctor(path, now=time.time(), synchronised=lambda: True), "store")
    assert bad[0].level is Level.FAIL and "sensegate restore" in bad[0].fix_en

    store_path.unlink()
    path.chmod(0o666)
    secret = tmp_path / "mqtt.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    text = path.read_text().replace("port = ", f'password = "file:{secret}"\nport = ', 1)
    path.write_text(text)
    found = doctor(path, now=time.time(), synchronised=lambda: True)
    files = {f.what.split(" is ")[0]: f for f in of(found, "file")}
    assert files[f"config {path}"].level is Level.FAIL and "chmod o-w" in files[f"config {path}"].fix_en
    assert files[f"secret {secret}"].level is Level.FAIL and "chmod 600" in files[f"secret {secret}"].fix_en
    assert exit_code(found) == 2
    path.chmod(0o644)
    secret.chmod(0o600)
    found = doctor(path, now=time.time(), synchronised=lambda: True)
    assert exit_code(found) == 1  # a config readable by all: a warning only


def test_the_command_prints_findings_and_exits_by_the_worst(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = write_plain(tmp_path, mosquitto)
    path.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "doctor", "-c", str(path), "--probe", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: timedatectl may say not synchronised
    assert "[ok  ] broker:" in proc.stdout and "[warn] file: config" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].endswith("failures")
