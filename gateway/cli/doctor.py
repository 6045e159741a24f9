"""``sensegate doctor``: is this box ready to run the gateway, and if not, what to do about it.

Each check gives findings — ok, warning or failure — with a fix in Chinese and English:

- **broker**: connect with the config's credentials and TLS (the gateway's own aiomqtt client):
  unreachable, TLS refused, credentials refused;
- **outputs**: per InfluxDB output an *empty* write (``POST /write`` or ``/api/v2/write`` with no
  body). InfluxDB checks the credentials (401), the database or bucket (404) and the write
  permission (403) before it reads the body, and answers 204 to an empty one: proof that the
  gateway's writes will be accepted, without leaving a test point in somebody's database (a
  ``/ping`` answers without credentials, and a query proves only read access);
- **wired devices**: each serial port present and writable by us, then the gateway's own serial
  ingest (the same ``SerialLink``, ``ModbusBus`` and ``OsdpLink`` code) runs for a few seconds
  against a scratch store in memory: radar frames arriving, Modbus unit ids answering a read,
  OSDP readers coming online; the GSM modem's registration and signal through the SMS channel's
  own health check. While the gateway runs it owns the ports: they are not probed then;
- **clock**: ``timedatectl``'s ``NTPSynchronized`` where there is one; in any case the clock
  against the newest event in the store and the install date (a Pi has no real-time clock: it
  boots at the time it shut down, or in 1970, until NTP answers);
- **store**: ``PRAGMA quick_check``, its schema version, the disk space left, whether a gateway
  runs on it;
- **files**: the config and every ``file:`` secret not writable by others, secrets not readable
  by others.

Exit code (``exit_code``): 0 all ok, 1 warnings only, 2 any failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import os
import shutil
import sqlite3
import ssl
import stat
import subprocess
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

import gateway
from gateway.errors import StoreError
from gateway.site.config import InfluxV1Output, InfluxV2Output, SiteConfig


class Level(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def mark(self) -> str:
        return {Level.OK: "ok  ", Level.WARN: "warn", Level.FAIL: "FAIL"}[self]


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # broker, output <name>, serial <device>, modbus <bus>, osdp <bus>, modem <id>, clock, store, file
    level: Level
    what: str
    fix_zh: str = ""
    fix_en: str = ""

    def lines(self) -> list[str]:
        out = [f"[{self.level.mark}] {self.check}: {self.what}"]
        if self.fix_zh and self.fix_zh != self.fix_en:
            out.append(f"         处理: {self.fix_zh}")
        if self.fix_en:
            out.append(f"         {'处理 fix' if self.fix_zh == self.fix_en else 'fix'}: {self.fix_en}")
        return out


def exit_code(findings: list[Finding]) -> int:
    return int(max((f.level for f in findings), default=Level.OK))


# How far the clock may be behind the newest stored event before it is called wrong: an event
# can carry a receive time a little ahead of a clock that NTP then stepped back.
CLOCK_SLACK = 300.0
MIN_FREE_BYTES = 64 * 1024 * 1024


def install_date() -> float:
    """When this SenseGate was installed (its package files' time): a clock before it is wrong."""
    return Path(gateway.__file__).stat().st_mtime


def timedatectl_synchronised() -> bool | None:
    """``timedatectl show -p NTPSynchronized``: True / False, None where it cannot tell."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.strip()
    return {"yes": True, "no": False}.get(value) if proc.returncode == 0 else None


@dataclass
class Doctor:
    """The checks, with what they depend on injected: ``now`` (the wall clock), the time
    synchronisation query, the install date, how long wired devices are listened to."""

    config: SiteConfig
    config_path: Path
    now: Callable[[], float]
    synchronised: Callable[[], bool | None] = timedatectl_synchronised
    installed_at: Callable[[], float] = install_date
    probe_seconds: float = 6.0
    timeout: float = 5.0
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, level: Level, what: str, fix_zh: str = "", fix_en: str = "") -> None:
        self.findings.append(Finding(check, level, what, fix_zh, fix_en))

    async def run(self) -> list[Finding]:
        self.check_files()
        gateway_pid = self.check_store()
        self.check_clock()
        await self.check_broker()
        for output in self.config.outputs:
            await asyncio.to_thread(self.check_output, output)
        await self.check_wired(gateway_pid)
        return self.findings

    # ------------------------------------------------------------------ files

    def check_files(self) -> None:
        paths = [("config", self.config_path)]
        try:
            raw = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            raw = {}
        paths += [("secret", Path(p)) for p in sorted(set(_file_secrets(raw)))]
        env_file = self.config_path.parent / "secrets.env"
        if env_file.exists():
            paths.append(("secret", env_file))
        for kind, path in paths:
            if not path.is_absolute():
                path = (self.config_path.parent / path).resolve()
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except OSError as exc:
                self.add("file", Level.FAIL, f"{kind} {path}: {exc.strerror}", "检查路径是否正确", "check the path")
                continue
            if mode & 0o002:
                self.add(
                    "file",
                    Level.FAIL,
                    f"{kind} {path} is writable by everyone (mode {mode:04o})",
                    f"chmod o-w {path}（任何用户都能改写它）",
                    f"chmod o-w {path}: anyone on the box can change it",
                )
            elif kind == "secret" and mode & 0o004:
                self.add(
                    "file",
                    Level.FAIL,
                    f"secret {path} is readable by everyone (mode {mode:04o})",
                    f"chmod 600 {path}（或 640 root:sensegate）",
                    f"chmod 600 {path} (or 640 root:sensegate)",
                )
            elif kind == "config" and mode & 0o004:
                self.add(
                    "file",
                    Level.WARN,
                    f"config {path} is readable by everyone (mode {mode:04o}): it names every household",
                    f"chmod 640 {path}; chown root:sensegate {path}",
                    f"chmod 640 {path}; chown root:sensegate {path}",
                )
            else:
                self.add("file", Level.OK, f"{kind} {path} mode {mode:04o}")

    # ------------------------------------------------------------------ store and disk

    def check_store(self) -> int | None:
        """Integrity, schema version, disk; returns the pid of a gateway running on the store."""
        from gateway.store.backup import check_file
        from gateway.store.lock import StoreLock
        from gateway.store.schema import SCHEMA_VERSION

        path = self.config.store_path
        gateway_pid = StoreLock(path).holder()
        if not path.exists():
            self.add("store", Level.OK, f"no store yet at {path}: the gateway creates it on its first run")
        else:
            try:
                facts = check_file(path, full=False)
            except StoreError as exc:
                self.add(
                    "store",
                    Level.FAIL,
                    str(exc),
                    "停止网关，用 sensegate restore 从备份恢复",
                    "stop the gateway and restore a backup (sensegate restore FILE -c …)",
                )
            else:
                running = f"; gateway running (pid {gateway_pid})" if gateway_pid else ""
                self.add(
                    "store",
                    Level.OK,
                    f"{path}: quick_check ok, {facts.events} events, schema version {facts.schema_version}{running}",
                )
                if facts.schema_version < SCHEMA_VERSION:
                    self.add(
                        "store",
                        Level.WARN,
                        f"schema version {facts.schema_version} < {SCHEMA_VERSION}: migrated when the gateway starts",
                        "升级前先备份：sensegate backup",
                        "back it up first: sensegate backup -c …",
                    )
        where = path.parent if path.parent.exists() else Path(path.anchor or "/")
        usage = shutil.disk_usage(where)
        used = path.stat().st_size if path.exists() else 0
        room = int(self.config.store.max_bytes) - used
        free = f"{usage.free / 2**20:.0f} MiB free on {where}"
        if usage.free < MIN_FREE_BYTES:
            self.add("disk", Level.FAIL, free, "清理磁盘或换更大的 SD 卡", "free some space, or use a larger SD card")
        elif usage.free < room:
            self.add(
                "disk",
                Level.WARN,
                f"{free}, less than the store may still grow ({room / 2**20:.0f} MiB to store.max_bytes)",
                "调小 [store] max_bytes 或清理磁盘",
                "lower [store] max_bytes, or free some space",
            )
        else:
            self.add("disk", Level.OK, free)
        return gateway_pid

    # ------------------------------------------------------------------ clock

    def check_clock(self) -> None:
        now = self.now()
        floor = self.installed_at()
        newest: float | None = None
        if self.config.store_path.exists():
            # Read-only, without the Store class: a doctor must not migrate the store.
            with (
                contextlib.suppress(sqlite3.Error),
                contextlib.closing(
                    sqlite3.connect(f"{self.config.store_path.resolve().as_uri()}?mode=ro", uri=True)
                ) as db,
            ):
                row = db.execute("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                newest = None if row is None else float(row[0])
        fix_zh = "检查网络与 NTP：timedatectl set-ntp true；无网络时加装 RTC 模块（如 DS3231）"
        fix_en = "check the network and NTP (timedatectl set-ntp true); offline boxes need an RTC module (DS3231)"
        shown = _utc(now)
        if now < floor - CLOCK_SLACK:
            self.add("clock", Level.FAIL, f"{shown} is before SenseGate was installed ({_utc(floor)})", fix_zh, fix_en)
            return
        if newest is not None and now < newest - CLOCK_SLACK:
            self.add(
                "clock",
                Level.FAIL,
                f"{shown} is before the newest stored event ({_utc(newest)}): the clock went back",
                fix_zh,
                fix_en,
            )
            return
        synced = self.synchronised()
        if synced is False:
            self.add(
                "clock",
                Level.WARN,
                f"{shown}: not synchronised (timedatectl NTPSynchronized=no); events are dated by this clock",
                fix_zh,
                fix_en,
            )
        else:
            how = "NTP synchronised" if synced else "no timedatectl here; not before the install or the newest event"
            self.add("clock", Level.OK, f"{shown} ({how})")

    # ------------------------------------------------------------------ broker

    async def check_broker(self) -> None:
        from gateway.alerts.publisher import OutboxPublisher
        from gateway.clock import SystemClock
        from gateway.store import Store

        m = self.config.mqtt
        where = f"{m.host}:{m.port}" + (" (TLS)" if m.tls else "") + (f" as {m.username}" if m.username else "")
        scratch = Store(":memory:")
        try:
            client = OutboxPublisher(self.config, scratch, SystemClock()).client(f"{self.config.client_id}-doctor")
            async with asyncio.timeout(self.timeout + 1):
                async with client:
                    pass
        except aiomqtt.MqttCodeError as exc:
            text = str(exc)
            if any(word in text.lower() for word in ("authori", "password", "user name")):
                self.add(
                    "broker",
                    Level.FAIL,
                    f"{where}: credentials refused ({text})",
                    "核对 [mqtt] username 与密码（secrets.env 或 file: 密钥）及 mosquitto 的 password_file",
                    "check [mqtt] username and the password (its env:/file: secret) against the broker's password_file",
                )
            else:
                self.add("broker", Level.FAIL, f"{where}: refused ({text})", "查看 broker 日志", "see the broker's log")
        except (aiomqtt.MqttError, TimeoutError, OSError, ssl.SSLError) as exc:
            if isinstance(exc.__cause__ or exc.__context__, ssl.SSLError) or "ssl" in str(exc).lower():
                fix = ("核对 [mqtt.tls] 的 CA 证书与主机名", "check [mqtt.tls] ca_file and that the host name matches")
            else:
                fix = (
                    "确认 mosquitto 在运行（systemctl status mosquitto）、地址端口正确、防火墙放行",
                    "is the broker running (systemctl status mosquitto)? host, port, firewall?",
                )
            self.add("broker", Level.FAIL, f"{where}: unreachable ({exc or type(exc).__name__})", *fix)
        else:
            self.add("broker", Level.OK, f"{where}: connected, credentials accepted")
        finally:
            scratch.close()

    # ------------------------------------------------------------------ outputs

    def check_output(self, output: InfluxV1Output | InfluxV2Output) -> None:
        name = f"output {output.name}"
        base = output.url.rstrip("/")
        headers: dict[str, str] = {}
        if isinstance(output, InfluxV1Output):
            query = {"db": output.database}
            if output.retention_policy:
                query["rp"] = output.retention_policy
            if output.username:
                pair = f"{output.username}:{output.password.get_secret_value()}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            url = f"{base}/write?{urllib.parse.urlencode(query)}"
            target = f"database {output.database}"
        else:
            url = f"{base}/api/v2/write?{urllib.parse.urlencode({'org': output.org, 'bucket': output.bucket})}"
            if output.token.get_secret_value():
                headers["Authorization"] = f"Token {output.token.get_secret_value()}"
            target = f"bucket {output.bucket}"
        try:
            status, body = _http("POST", url, b"", headers, self.timeout)
        except OSError as exc:
            self.add(
                name,
                Level.FAIL,
                f"{base}: unreachable ({exc})",
                "确认 InfluxDB 在运行、地址正确；网关会暂存数据，恢复后补发",
                "is InfluxDB running at that URL? The gateway keeps the data and sends it once it is back",
            )
            return
        detail = body.decode(errors="replace").strip()[:200]
        if status in (200, 204):
            self.add(name, Level.OK, f"{base} {target}: an empty write was accepted (credentials and permission ok)")
        elif status == 401:
            self.add(
                name,
                Level.FAIL,
                f"{base}: credentials refused ({detail})",
                "核对该输出的用户名、密码或 token",
                "check this output's username and password, or token",
            )
        elif status == 403:
            self.add(
                name,
                Level.FAIL,
                f"{base} {target}: no write permission ({detail})",
                "给该用户授予写权限：GRANT WRITE ON <db> TO <user>",
                "grant the user write access (GRANT WRITE ON <db> TO <user>, or a write token)",
            )
        elif status == 404:
            if isinstance(output, InfluxV1Output) and output.create_database:
                self.add(name, Level.WARN, f"{target} does not exist yet: the gateway creates it (create_database)")
            else:
                self.add(
                    name,
                    Level.FAIL,
                    f"{base} {target}: not found ({detail})",
                    "先建库（CREATE DATABASE …）或设 create_database = true",
                    "create it first (CREATE DATABASE …), or set create_database = true",
                )
        else:
            self.add(name, Level.FAIL, f"{base}: HTTP {status} ({detail})", "查看 InfluxDB 日志", "see InfluxDB's log")

    # ------------------------------------------------------------------ wired devices

    async def check_wired(self, gateway_pid: int | None) -> None:
        from gateway.site.registry import Registry

        registry = Registry(self.config)
        ports: list[tuple[str, str]] = [
            (f"serial {d}", e.config.serial.port) for d, e in registry.serial_devices.items() if e.config.serial
        ]
        ports += [(f"modbus {b.id}", b.port) for b in self.config.modbus_buses]
        ports += [(f"osdp {b.id}", b.port) for b in self.config.osdp_buses]
        modems = [c for c in self.config.channels if c.type == "sms"]
        ports += [(f"modem {c.id}", str(getattr(c, "port", ""))) for c in modems]
        if not ports:
            return
        usable: set[str] = set()
        for check, port in ports:
            if not Path(port).exists():  # noqa: ASYNC240 — a stat of a device node, once
                self.add(
                    check,
                    Level.FAIL,
                    f"{port} does not exist",
                    "检查 USB 转串口线是否插好（ls -l /dev/serial/by-id/），配置里用 by-id 路径",
                    "is the USB-serial adapter plugged in? ls -l /dev/serial/by-id/ and use that path in the config",
                )
            elif not os.access(port, os.R_OK | os.W_OK):
                self.add(
                    check,
                    Level.FAIL,
                    f"{port}: no permission to open it",
                    "把运行网关的用户加入 dialout 组：usermod -aG dialout sensegate",
                    "add the gateway's user to group dialout: usermod -aG dialout sensegate",
                )
            else:
                usable.add(check)
        if gateway_pid is not None:
            for check, port in ports:
                if check in usable:
                    self.add(
                        check,
                        Level.OK,
                        f"{port} present; not probed: the running gateway (pid {gateway_pid}) owns it "
                        "(sensegate status shows its counters)",
                    )
            return
        await self._probe(registry, usable)

    async def _probe(self, registry: Any, usable: set[str]) -> None:
        """The gateway's own serial ingest for ``probe_seconds``, into a scratch store."""
        from gateway.alerts.channels.sms import SmsChannel
        from gateway.clock import SystemClock
        from gateway.ingest.serial import SerialIngest
        from gateway.models import Kind
        from gateway.store import Store

        scratch = Store(":memory:")
        clock = SystemClock()
        seen: list[Any] = []

        async def on_stored(events: list[Any]) -> None:
            seen.extend(events)

        ingest = SerialIngest(self.config, registry, scratch, clock, {}, on_stored)
        parts: list[Callable[[], Coroutine[Any, Any, None]]] = []
        parts += [_bind(ingest.run_device, d) for d in ingest.links if f"serial {d}" in usable]
        parts += [_bind(ingest.run_bus, b) for b in ingest.buses if f"modbus {b}" in usable]
        parts += [_bind(ingest.run_osdp_bus, b) for b in ingest.osdp_links if f"osdp {b}" in usable]
        modems = {
            c.id: SmsChannel(c.id, c, clock)
            for c in self.config.channels
            if c.type == "sms" and f"modem {c.id}" in usable and isinstance(c, _sms_type())
        }
        health: dict[str, dict[str, Any]] = {}

        async def ask(channel_id: str, channel: SmsChannel) -> None:
            try:
                health[channel_id] = await channel.check()
            finally:
                await channel.close()

        try:
            async with asyncio.timeout(self.probe_seconds + self.timeout + 30):
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(p()) for p in parts]
                    writer = tg.create_task(ingest.run_writer())
                    asks = [tg.create_task(ask(i, c)) for i, c in modems.items()]
                    await asyncio.sleep(self.probe_seconds)
                    for task in tasks:
                        task.cancel()
                        await asyncio.wait({task})
                    await ingest.drain()
                    writer.cancel()
                    if asks:
                        await asyncio.wait(asks)
            counters = scratch.counters()
        finally:
            scratch.close()
        secs = f"{self.probe_seconds:g} s"
        for device_id, link in ingest.links.items():
            check = f"serial {device_id}"
            if check not in usable:
                continue
            frames = counters.get(f"serial.{device_id}.frames", 0)
            nbytes = counters.get(f"serial.{device_id}.bytes", 0)
            if frames:
                self.add(check, Level.OK, f"{link.path}: {frames} frames in {secs}")
            elif nbytes:
                self.add(
                    check,
                    Level.FAIL,
                    f"{link.path}: {nbytes} bytes but no valid frame in {secs}",
                    "波特率或协议不对：核对 baudrate 与 protocol（MR60FDA1 为 115200）",
                    "wrong baud rate or protocol: check baudrate and protocol (MR60FDA1: 115200)",
                )
            else:
                self.add(
                    check,
                    Level.FAIL,
                    f"{link.path}: nothing received in {secs}",
                    "检查供电与接线（TX/RX 是否交叉、共地）",
                    "check power and wiring (TX to RX crossed, common ground)",
                )
        for bus_id, bus in ingest.buses.items():
            if f"modbus {bus_id}" not in usable:
                continue
            for det in bus.devices:
                check = f"modbus {bus_id} unit {det.unit_id} ({det.device_id})"
                answered = [e for e in seen if e.device_id == det.device_id and e.kind is not Kind.OFFLINE]
                if answered:
                    self.add(check, Level.OK, f"{bus.port}: answered a read")
                else:
                    failures = {
                        k.rsplit(".", 1)[1]: v
                        for k, v in counters.items()
                        if k.startswith(f"modbus.{bus_id}.{det.device_id}.") and v
                    }
                    self.add(
                        check,
                        Level.FAIL,
                        f"{bus.port}: no answer in {secs} {failures or ''}".strip(),
                        "核对站号（unit id）、波特率/校验位，以及 RS-485 的 A/B 线与终端电阻",
                        "check the unit id, baud rate and parity, the RS-485 A/B wires and the termination",
                    )
        for bus_id, doors in ingest.osdp_doors.items():
            if f"osdp {bus_id}" not in usable:
                continue
            for address, (device_id, _) in doors.items():
                check = f"osdp {bus_id} reader {address} ({device_id})"
                if any(e.device_id == device_id and e.kind is Kind.ONLINE for e in seen):
                    self.add(check, Level.OK, "answered (online)")
                else:
                    self.add(
                        check,
                        Level.FAIL,
                        f"no answer in {secs}",
                        "核对读卡器地址、波特率与 SCBK（安全通道密钥）",
                        "check the reader's address, baud rate and secure channel key (SCBK)",
                    )
        for channel_id, status in health.items():
            check = f"modem {channel_id}"
            signal = status.get("signal_dbm")
            signal_text = "signal unknown" if signal is None else f"signal {signal} dBm"
            if status.get("registered"):
                level = Level.WARN if signal is not None and signal < -105 else Level.OK
                self.add(
                    check,
                    level,
                    f"{status.get('port')}: registered ({status.get('registration')}), {signal_text}",
                    *(("信号弱：调整天线位置", "weak signal: move the antenna") if level else ()),
                )
            else:
                error = status.get("last_error") or status.get("registration") or "no answer"
                self.add(
                    check,
                    Level.FAIL,
                    f"{status.get('port')}: not registered ({error})",
                    "检查 SIM 卡（是否欠费、PIN）、天线与模块供电",
                    "check the SIM (credit, PIN), the antenna and the modem's power",
                )


def _bind(run: Callable[[str], Coroutine[Any, Any, None]], key: str) -> Callable[[], Coroutine[Any, Any, None]]:
    async def part() -> None:
        await run(key)

    return part


def _sms_type() -> type:
    from gateway.site.alerting import SmsSettings

    return SmsSettings


def _file_secrets(node: Any) -> Iterator[str]:
    if isinstance(node, str) and node.startswith("file:"):
        yield node[5:]
    elif isinstance(node, dict):
        for value in node.values():
            yield from _file_secrets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _file_secrets(value)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _http(method: str, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from exc
