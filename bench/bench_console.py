"""Console benchmark: the duty desk (值班台) and its site pages on a large site, served by the
gateway's own uvicorn, and what twenty consoles on the live board cost in memory.

    .venv/bin/python bench/bench_console.py                      # 5,000 households, 20,000 devices, 200 open alerts
    .venv/bin/python bench/bench_console.py --buildings 10 --flats 25 --open-alerts 50

What it does (loopback only; every step has a deadline):

1. generates a site: ``--buildings`` buildings × 4 units × ``--flats`` flats per unit (50 × 4 × 25
   = 5,000 households), four zigbee2mqtt devices per flat (door, smoke, fall radar, SOS: 20,000
   devices), one resident per flat (a fifth of them living alone, with a visit plan), a grid
   worker per building looking after its flats, a property officer per building and a manager;
2. fills the gateway's store **directly**, before it starts: a ``device_state`` row per device
   (a few percent offline, silent, on low battery, with a weak link or tampered), ``--open-alerts``
   open alerts with their audit trail, ``--past-alerts`` resolved ones over the last 90 days, and
   this month's visits for most elders. No events: the gateway has nothing to replay;
3. starts a real Mosquitto on a free loopback port and the gateway in its own process
   (``python -m gateway.cli run -c …``, as deployed), the console on a free loopback port;
4. signs in as the manager (sees everything) and loads the live board, then each site page and
   some JSON, first (cold) and then ``--repeat`` times (median): time to the last byte over
   loopback — the server's time plus a fraction of a millisecond — and bytes;
5. measures the gateway's resident memory (VmRSS from /proc) idle, with ``--consoles`` more
   sessions signed in, once each has its live board's event stream open and has received the
   board, and after one acknowledgement has pushed a new board to every stream (and how long
   that took to reach the last one).

It prints figures and judges nothing (the issue's targets: the board's first load under 1 s, 20
consoles adding under 10 MB). ``--keep`` keeps the temp dir (config, store, gateway log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.bench_ingest import start_gateway, stop_process  # noqa: E402
from edge_rules.schedule import zone  # noqa: E402
from gateway.models import Alert, AlertState, Event, Family, Kind, Location, Severity  # noqa: E402
from gateway.site.config import SiteConfig, parse_config  # noqa: E402
from gateway.site.registry import device_location  # noqa: E402
from gateway.store import LogRow, Store, VisitRow  # noqa: E402
from gateway.store.devices import upsert_device_states  # noqa: E402
from gateway.web.auth import hash_password  # noqa: E402
from simulators.block import render_toml  # noqa: E402
from tests.servers import Mosquitto, free_port  # noqa: E402

PASSWORD = "bench console password"
MANAGER = "s-boss"
TZ = "Asia/Shanghai"
DEVICES = (  # per flat: (suffix, family, zigbee2mqtt model, room)
    ("door", "door", "MCCGQ11LM", "入户门"),
    ("smoke", "smoke", "HS1SA", "厨房"),
    ("fall", "fall", "HS2FD-EF1-3.0", "卫生间"),
    ("sos", "sos", "TS0215A_sos", "卧室"),
)
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "秀英桂兰淑珍玉兰建国志强凤英德明秀珍国华"
OPEN_RULES = (  # rule, severity, family of the device, message
    ("sos", 1, "sos", "【紧急呼叫】{place} 居民按下紧急呼叫按钮，请立即处置"),
    ("fall_detected", 1, "fall", "【跌倒报警】{place} 检测到疑似跌倒，请立即上门查看"),
    ("smoke_alarm", 1, "smoke", "【火警】{place} 烟感报警，请微型消防站立即处置"),
    ("no_activity", 2, "door", "【长时间无活动】{place} 独居老人已超过12小时无活动，请上门查看"),
    ("battery_low", 4, "smoke", "【设备维护工单】{place} 设备低电量，请更换电池"),
    ("device_silent", 4, "fall", "【设备维护工单】{place} 设备已6小时未上报，疑似离线，请安排维护"),
)


# ---------------------------------------------------------------------- the site


def console_site(tmp: Path, broker: Mosquitto, buildings: int, flats: int, port: int) -> dict[str, Any]:
    rng = random.Random(7)
    site: dict[str, Any] = {
        "gateway": {"id": "bench-console", "site": "幸福里小区", "data_dir": str(tmp / "data")},
        "mqtt": {"host": broker.host, "port": broker.port},
        "store": {"synchronous": "normal"},
        "console": {"enabled": True, "host": "127.0.0.1", "port": port},
        "buildings": [],
        "households": [],
        "residents": [],
        "devices": [],
        "staff": [{"id": MANAGER, "name": "孙经理", "role": "manager"}],
        "visitors": [],
    }
    for b in range(1, buildings + 1):
        bid = str(b)
        site["buildings"].append({"id": bid, "name": f"{b}号楼", "units": ["1", "2", "3", "4"]})
        site["staff"].append({"id": f"s-duty-{b}", "name": f"值班{b}", "role": "property", "buildings": [bid]})
        mine = []
        for unit in ("1", "2", "3", "4"):
            for i in range(flats):
                number = f"{i // 2 + 1}{i % 2 + 1:02d}"
                hid = f"{bid}-{unit}-{number}"
                mine.append(hid)
                site["households"].append({"id": hid, "building": bid, "unit": unit, "number": number})
                alone = rng.random() < 0.2
                site["residents"].append(
                    {
                        "id": f"r-{hid}",
                        "name": rng.choice(SURNAMES) + rng.choice(GIVEN[::2]) + rng.choice(GIVEN[1::2]),
                        "household": hid,
                        "lives_alone": alone,
                        "risk_tier": rng.choice(("high", "medium", "low")) if alone else "low",
                        "contacts": [{"name": "家属", "phone": f"138{rng.randrange(10**8):08d}", "relation": "子女"}],
                    }
                )
                for suffix, family, model, room in DEVICES:
                    site["devices"].append(
                        {
                            "id": f"{hid}-{suffix}",
                            "family": family,
                            "model": model,
                            "household": hid,
                            "room": room,
                            "mqtt": {"format": "zigbee2mqtt", "friendly_name": f"{b}号楼/{unit}单元/{number}/{suffix}"},
                        }
                    )
        site["visitors"].append({"id": f"v-grid-{b}", "name": f"网格员{b}", "role": "grid_worker", "households": mine})
    return site


def _event(device: tuple[str, Family, str, Location], kind: Kind, t: float, **values: Any) -> Event:
    device_id, family, model, loc = device
    return Event(device_id, family, kind, t, t, model, loc, values, source="zigbee2mqtt")


def fill_store(config: SiteConfig, open_alerts: int, past_alerts: int, now: float) -> dict[str, int]:
    """device_state rows, alerts with their trails and visits, written straight into the store."""
    rng = random.Random(11)
    store = Store(config.store_path, synchronous="normal")
    households = {h.id: h for h in config.households}
    problems = {"offline": 0, "silent": 0, "battery": 0, "weak": 0, "tamper": 0}
    try:
        events: list[Event] = []
        for d in config.devices:
            loc = device_location(d, households)
            seen = now - rng.uniform(30, 1800)
            r = rng.random()
            if r < 0.01:
                seen = now - 8 * 3600  # silent: longer than the device_silent rule waits
                problems["silent"] += 1
            device = (d.id, Family(d.family), d.model, loc)
            lqi = rng.randrange(60, 255)
            if 0.01 <= r < 0.03:
                lqi = rng.randrange(5, 45)
                problems["weak"] += 1
            battery = rng.randrange(55, 101)
            if 0.03 <= r < 0.06:
                battery = rng.randrange(3, 19)
                problems["battery"] += 1
            state = {
                "door": Kind.DOOR_CLOSED,
                "smoke": Kind.SMOKE_CLEAR,
                "fall": Kind.FALL_CLEARED,
                "sos": Kind.BATTERY,
            }[d.family]
            events += [
                _event(device, state, seen, linkquality=lqi),
                _event(device, Kind.BATTERY, seen, battery=battery),
            ]
            if 0.06 <= r < 0.075:
                events.append(_event(device, Kind.OFFLINE, seen + 1))
                problems["offline"] += 1
            if 0.075 <= r < 0.08:
                events.append(_event(device, Kind.TAMPER, seen + 1))
                problems["tamper"] += 1
            if len(events) >= 4000:
                with store._tx() as db:
                    upsert_device_states(db, events)
                events = []
        if events:
            with store._tx() as db:
                upsert_device_states(db, events)

        devices = {d.id: d for d in config.devices}
        residents = {r.household: r for r in config.residents}
        staff = [s.id for s in config.staff]
        alerts: list[Alert] = []
        log: list[LogRow] = []
        flats = rng.sample([h.id for h in config.households], min(open_alerts, len(config.households)))
        for i, hid in enumerate(flats):
            rule, severity, family, text = OPEN_RULES[i % len(OPEN_RULES)]
            device = devices[f"{hid}-{family}"]
            loc = device_location(device, households)
            raised = now - rng.uniform(60, 6 * 3600)
            alert_id = secrets.token_hex(6)
            alerts.append(
                Alert(
                    alert_id,
                    f"{rule}:{device.id}",
                    rule,
                    Severity(severity),
                    AlertState.NOTIFIED,
                    raised,
                    raised,
                    text.format(place=loc.label_zh()),
                    f"{rule} at {loc.label_en()}",
                    loc,
                    residents[hid].id,
                    device.id,
                    notified_at=raised + 1,
                )
            )
            log += [
                LogRow(alert_id, raised, "raised", f"rule:{rule}"),
                LogRow(
                    alert_id, raised + 1, "paged", "system", "app", {"tier": 0, "to": [staff[1]], "channels": ["app"]}
                ),
            ]
        for i in range(past_alerts):
            hid = rng.choice(config.households).id
            rule, severity, family, text = OPEN_RULES[i % len(OPEN_RULES)]
            device = devices[f"{hid}-{family}"]
            loc = device_location(device, households)
            raised = now - rng.uniform(6 * 3600, 90 * 86_400)
            who = rng.choice(staff)
            alert_id = secrets.token_hex(6)
            alerts.append(
                Alert(
                    alert_id,
                    f"{rule}:{device.id}",
                    rule,
                    Severity(severity),
                    AlertState.RESOLVED,
                    raised,
                    raised,
                    text.format(place=loc.label_zh()),
                    f"{rule} at {loc.label_en()}",
                    loc,
                    residents[hid].id,
                    device.id,
                    resolved_at=raised + 600,
                    acked_by=who,
                    acked_at=raised + 120,
                    acked_via="console",
                    resolved_by=who,
                    resolve_note="已上门处置",
                )
            )
            log += [
                LogRow(alert_id, raised, "raised", f"rule:{rule}"),
                LogRow(alert_id, raised + 120, "acknowledged", who, "console"),
                LogRow(alert_id, raised + 600, "resolved", who, "console", {"note": "已上门处置"}),
            ]
        month_start = datetime.fromtimestamp(now, zone(TZ)).replace(day=1, hour=0, minute=0, second=0).timestamp()
        visits = []
        for r in config.residents:
            if r.lives_alone and rng.random() < 0.8:
                b = households[r.household].building
                at = rng.uniform(month_start, now)
                visits.append(
                    VisitRow(r.household, (r.id,), f"v-grid-{b}", at, "access", "", None, f"网格员{b}", "grid_worker")
                )
        for start in range(0, len(alerts), 2000):
            chunk = {a.id for a in alerts[start : start + 2000]}
            store.save_alerts(alerts[start : start + 2000], [], log=[row for row in log if row.alert_id in chunk])
        store.save_alerts([], [], visits=visits)
        store.set_password_hash(MANAGER, hash_password(PASSWORD), now)
        return {**problems, "visits": len(visits)}
    finally:
        store.close()


# ---------------------------------------------------------------------- the console, as a browser uses it


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if not found:
        raise SystemExit("no CSRF field in the page")
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, user: str) -> None:
    page = await client.get("/login")
    r = await client.post(
        "/login", data={"user": user, "password": PASSWORD, "csrf": form_token(page.text), "next": "/"}
    )
    if r.status_code != 303:
        raise SystemExit(f"sign-in as {user} failed: {r.status_code}")


@dataclass
class Load:
    path: str
    first: float
    bytes: int
    status: int
    warm: list[float] = field(default_factory=list)


async def load(client: httpx.AsyncClient, path: str, repeat: int) -> Load:
    async def once() -> tuple[float, httpx.Response]:
        start = time.perf_counter()
        r = await client.get(path)
        return time.perf_counter() - start, r

    took, r = await once()
    result = Load(path, took, len(r.content), r.status_code)
    for _ in range(repeat):
        took, _ = await once()
        result.warm.append(took)
    return result


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of the process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, kb, _ = line.split()
            values[name] = int(kb) / 1024
    return values.get("VmRSS:", float("nan")), values.get("VmHWM:", float("nan"))


class Stream:
    """One console's live board: its event stream, read in a task; ``boards`` counts the board
    events received, ``progress`` (shared) is set at each."""

    def __init__(self, client: httpx.AsyncClient, progress: asyncio.Event) -> None:
        self.client = client
        self.progress = progress
        self.boards = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.bytes = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self, opened: float) -> None:
        async with self.client.stream("GET", "/events", timeout=httpx.Timeout(10, read=60)) as r:
            event = ""
            async for line in r.aiter_lines():
                self.bytes += len(line) + 1
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line == "" and event == "board":
                    self.boards += 1
                    self.last_at = time.perf_counter()
                    if self.boards == 1:
                        self.first_at = self.last_at - opened
                    self.progress.set()
                    event = ""


async def _all(streams: list[Stream], boards: int, progress: asyncio.Event, within: float) -> None:
    """Until every stream has received ``boards`` board events."""
    try:
        async with asyncio.timeout(within):
            while any(s.boards < boards for s in streams):
                progress.clear()
                await progress.wait()
    except TimeoutError:
        got = [(s.boards, s.bytes, s.task is not None and s.task.done()) for s in streams]
        raise SystemExit(
            f"not every console had {boards} board(s) within {within:g} s: (boards, bytes, ended) {got}"
        ) from None


@contextlib.contextmanager
def temp_dir(keep: bool) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-console-"))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept: {tmp} (config, store, gateway.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def bench(args: argparse.Namespace) -> int:
    with temp_dir(args.keep) as tmp:
        broker = Mosquitto()
        broker.start()
        gateway: subprocess.Popen[bytes] | None = None
        try:
            port = free_port()
            site = console_site(tmp, broker, args.buildings, args.flats, port)
            config_path = tmp / "bench-site.toml"
            config_path.write_text(render_toml(site), encoding="utf-8")
            config = parse_config(site, str(config_path), tmp)
            now = time.time()
            started = time.perf_counter()
            filled = fill_store(config, args.open_alerts, args.past_alerts, now)
            print(
                f"site           {len(config.buildings)} buildings, {len(config.households)} households, "
                f"{len(config.devices)} devices, {len(config.residents)} residents; store filled in "
                f"{time.perf_counter() - started:.1f} s: {args.open_alerts} open alerts, {args.past_alerts} past, "
                f"{filled['visits']} visits; devices offline {filled['offline']}, silent {filled['silent']}, "
                f"battery {filled['battery']}, weak {filled['weak']}, tamper {filled['tamper']}",
                flush=True,
            )
            started = time.perf_counter()
            gateway = start_gateway(config_path, tmp / "gateway.log")
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as probe:
                deadline = time.monotonic() + args.start_within
                while True:
                    if gateway.poll() is not None or time.monotonic() > deadline:
                        print((tmp / "gateway.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                        raise SystemExit("the console did not come up")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await probe.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
            print(f"gateway        console up {time.perf_counter() - started:.1f} s after the process started")
            await asyncio.sleep(2.0)
            rss_start, _ = rss_mib(gateway.pid)

            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                await sign_in(client, MANAGER)
                board = await load(client, "/", args.repeat)
                if board.status != 200:
                    raise SystemExit(f"the board answered {board.status}")
                alert_id = re.findall(r'href="/alerts/([0-9a-f]+)"', (await client.get("/")).text)[0]
                household = config.households[len(config.households) // 2].id
                open_flat = re.findall(
                    r"(\d+-\d+-\d+)-(?:sos|fall|smoke|door)",
                    json.dumps((await client.get("/api/v1/site")).json()["alerts"], ensure_ascii=False),
                )
                pages = [
                    "/site",
                    f"/buildings/{config.buildings[0].id}",
                    f"/households/{open_flat[0] if open_flat else household}",
                    f"/households/{household}",
                    "/devices",
                    "/devices?problem=any",
                    f"/devices?problem=battery&building={config.buildings[-1].id}",
                    "/history",
                    "/history?severity=1&state=resolved",
                    "/history?page=20",
                    "/visits",
                    "/visits/report.csv?part=elders",
                    "/visits/print",
                    f"/alerts/{alert_id}",
                    "/api/v1/site",
                    "/api/v1/devices?problem=silent",
                ]
                loads = [await load(client, p, args.repeat) for p in pages]
            print()
            print(f"{'page':44} {'first load':>11} {'median warm':>12} {'bytes':>9}")
            for x in [board, *loads]:
                label = "/ (the live board)" if x.path == "/" else x.path
                warm = statistics.median(x.warm) if x.warm else float("nan")
                status = "" if x.status == 200 else f"  (HTTP {x.status})"
                print(f"{label:44} {ms(x.first):>11} {ms(warm):>12} {x.bytes:9d}{status}")
            print()

            # Twenty consoles on the live board.
            consoles = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(args.consoles)]
            streams: list[Stream] = []
            try:
                for c in consoles:
                    await sign_in(c, MANAGER)  # the manager sees every alert: the biggest board
                await asyncio.sleep(2.0)
                rss_idle, _ = rss_mib(gateway.pid)
                opened = time.perf_counter()
                progress = asyncio.Event()
                streams = [Stream(c, progress) for c in consoles]
                for s in streams:
                    s.task = asyncio.create_task(s.run(opened))
                await _all(streams, 1, progress, within=60)
                first_boards = [s.first_at for s in streams]
                await asyncio.sleep(2.0)
                rss_streams, _ = rss_mib(gateway.pid)
                csrf = form_token((await consoles[0].get("/")).text)
                pushed = time.perf_counter()
                r = await consoles[0].post(
                    f"/api/v1/alerts/{alert_id}/ack", json={"note": "bench"}, headers={"X-CSRF-Token": csrf}
                )
                if r.status_code != 200:
                    raise SystemExit(f"the acknowledgement answered {r.status_code}: {r.text[:200]}")
                await _all(streams, 2, progress, within=30)
                reached = max(s.last_at for s in streams) - pushed
                await asyncio.sleep(2.0)
                rss_after, hwm = rss_mib(gateway.pid)
                board_bytes = statistics.median(s.bytes / max(1, s.boards) for s in streams)
            finally:
                for s in streams:
                    if s.task is not None:
                        s.task.cancel()
                        with contextlib.suppress(BaseException):
                            await s.task
                for c in consoles:
                    await c.aclose()

            n = args.consoles
            print(
                f"gateway RSS    after start {rss_start:.1f} MiB; "
                f"idle after the page loads and {n} more sign-ins {rss_idle:.1f} MiB"
            )
            print(
                f"               {n} consoles on the live board's event stream: {rss_streams:.1f} MiB "
                f"(+{rss_streams - rss_idle:.1f} MiB over idle)"
            )
            print(
                f"               after one change pushed to all {n}: {rss_after:.1f} MiB "
                f"(+{rss_after - rss_idle:.1f} MiB over idle); peak (VmHWM) {hwm:.1f} MiB"
            )
            print(
                f"event streams  first board on all {n}: median {ms(statistics.median(first_boards))}, "
                f"last {ms(max(first_boards))}; ~{board_bytes / 1024:.0f} KiB a board event"
            )
            print(f"               an acknowledgement reached all {n} boards in {ms(reached)}")
            return 0
        finally:
            stop_process(gateway)
            broker.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--buildings", type=int, default=50, help="buildings (default 50)")
    p.add_argument("--flats", type=int, default=25, help="flats per unit, 4 units a building (default 25)")
    p.add_argument("--open-alerts", type=int, default=200, help="open alerts (default 200)")
    p.add_argument("--past-alerts", type=int, default=5000, help="resolved alerts over 90 days (default 5000)")
    p.add_argument("--consoles", type=int, default=20, help="consoles on the live board (default 20)")
    p.add_argument("--repeat", type=int, default=5, help="warm loads of each page (default 5)")
    p.add_argument("--start-within", type=float, default=180.0, help="seconds the gateway may take to start")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, store, gateway log)")
    args = p.parse_args(argv)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
