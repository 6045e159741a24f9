"""``sensegate``: the command line.

    sensegate run -c site.toml         run the gateway
    sensegate check -c site.toml       validate a config; print a summary or every mistake
    sensegate demo                     a simulated block, a local broker and the gateway, live alerts
    sensegate simulate -c site.toml    publish simulated traffic for a site to a broker
    sensegate status -c site.toml      counters and queues from the gateway's store
    sensegate rules check|explain      the rules in force; which apply to a household, timers
    sensegate visits checkin|report    record a visit (探访); the monthly report (探访月报)
    sensegate scenario run FILE…       run scenario files on a virtual clock (0 pass, 1 mismatch, 2 bad file)
    sensegate users set-password|list  who signs in to the console (值班台), docs/console.md
    sensegate tokens create|revoke     API tokens for integrations
    sensegate testmode start|end|list|show      test mode (测试模式): a scope pages nobody, until it ends
    sensegate commission start|status|finish|report   walk test (现场调试): every device heard, a report
    sensegate devices -c site.toml     every device: last report, battery, signal, problems (--problem …)
    sensegate doctor -c site.toml      is the box ready: broker, InfluxDB, serial devices, clock, store, files
    sensegate backup|restore           an online copy of the store; put one back (gateway stopped)

Exit codes: 0 ok, 2 bad config or arguments, 1 anything else; 141 when the reader of the output
went away (``| head``), as for a program that SIGPIPE ended. ``doctor`` has its own: 0 all ok,
1 warnings, 2 failures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_rules.schedule import zone
from gateway.alerts.system import DISK_META
from gateway.cli import alerts as alerts_cli
from gateway.cli import devices as devices_cli
from gateway.cli import installer as installer_cli
from gateway.cli import testmode as testmode_cli
from gateway.cli import users as users_cli
from gateway.cli.stores import no_events_yet
from gateway.cli.stores import open_or_empty as _open_store
from gateway.clock import SystemClock
from gateway.errors import ConfigError, ConfigProblem, SenseGateError
from gateway.log import setup_logging
from gateway.site.config import SiteConfig, load_config, parse_config, site_rules
from gateway.store.disk import DiskState

log = logging.getLogger("sensegate")


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's loop works the same, slower
        return asyncio.run(coro)
    return int(uvloop.run(coro))


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# ---------------------------------------------------------------------- check


def summary(config: SiteConfig) -> str:
    lines = [f"gateway {config.gateway.id}" + (f" ({config.gateway.site})" if config.gateway.site else "")]
    per_building: dict[str, Counter[str]] = {}
    households = {h.id: h for h in config.households}
    for d in config.devices:
        building = households[d.household].building if d.household else d.building
        per_building.setdefault(building, Counter())[d.family.value] += 1
    names = {b.id: b.name or f"{b.id}号楼" for b in config.buildings}
    for b in sorted(per_building):
        counts = per_building[b]
        detail = ", ".join(f"{fam} {n}" for fam, n in sorted(counts.items()))
        lines.append(f"  {names.get(b, b)}: {sum(counts.values())} devices ({detail})")
    alone = sum(1 for r in config.residents if r.lives_alone)
    lines.append(f"  {len(config.households)} households, {len(config.residents)} residents, {alone} living alone")
    lines.append(f"  broker {config.mqtt.host}:{config.mqtt.port} as {config.client_id}")
    if config.outputs:
        for o in config.outputs:
            target = o.database if o.type == "influxdb_v1" else o.bucket
            lines.append(f"  output {o.name}: {o.type} {o.url} → {target}")
    else:
        lines.append("  outputs: none (events stay in the local store)")
    rules = site_rules(config)
    sources = [*config.rules.packs, *(str(f) for f in config.rules.files)]
    lines.append(f"  rules: {len(rules.rules)} from {', '.join(sources) or 'nothing'}")
    if config.visitors:
        from gateway.care.checkin import covered_residents

        covered = len(covered_residents(config))
        lines.append(f"  visits (探访): {len(config.visitors)} visitors, {covered} residents on a visit plan")
    if config.channels:
        channels = ", ".join(f"{c.id} ({c.type})" for c in config.channels)
        lines.append(
            f"  alerts to people: channels {channels}; {len(config.staff)} staff, {len(config.roster)} shifts, "
            f"ladders {', '.join(lad.id for lad in config.ladders) or 'none'}, {len(config.routes)} routes"
        )
    else:
        lines.append("  alerts to people: no channels (alerts on MQTT and the terminal only)")
    lines.append(f"  store {config.store_path} (max {config.store.max_bytes.human_readable()})")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    # The secrets are the machine's, not the file's: an installer checks a config where they
    # are not set (and `run` refuses to start until they are).
    unset: list[ConfigProblem] = []
    config = load_config(args.config, unset_secrets=unset)
    print(f"ok: {args.config}")
    print(summary(config))
    if unset:
        print(f"  secrets not available here ({len(unset)}); sensegate run needs them:")
        for problem in unset:
            print(f"    {problem}")
    return 0


# ---------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    config = load_for_run(args.config)
    from gateway.ingest.process import IngestProcess
    from gateway.runtime import Gateway, IngestWorker, freeze_heap
    from gateway.site.registry import Registry

    registry = Registry(config)
    split = None
    if config.mqtt.ingest_process:
        # Forked now, before any thread, loop or store exists here; the heap frozen first, so
        # that the children share the config and registry (gateway/ingest/process.py).
        freeze_heap()
        split = IngestProcess.fork(IngestWorker(config, registry).run, _run_async)

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        gateway = Gateway(config, registry=registry, ingest_process=split)
        freeze_heap()
        await gateway.run(stop)
        return 0

    return _run_async(main())


def load_for_run(path: str | Path) -> SiteConfig:
    """``load_config``, then the config once more in fresh memory, for a process that keeps it.

    Reading a block's file makes tens of MiB of garbage (the TOML's tables, a model per table
    while it is checked) among the few MiB that are kept, and the allocator can give back only
    whole arenas and pages: a 20,000-device config left the process 60 MiB larger than its
    size. Rebuilt from a pickle of itself (3 MiB) once the original is gone, the config is laid
    out compactly and the garbage's memory goes back to the system (bench/bench_memory.py)."""
    import gc
    import pickle

    blob = pickle.dumps(load_config(path), protocol=pickle.HIGHEST_PROTOCOL)
    gc.collect()
    config: SiteConfig = pickle.loads(blob)
    del blob
    trim_heap()
    return config


def trim_heap() -> None:
    """Hand the C allocator's free pages back to the system: glibc's ``malloc_trim`` (Raspberry Pi
    OS, Debian); nothing where the C library has none."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


# ---------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    temporary = not args.data_dir
    data_dir = Path(args.data_dir).resolve() if args.data_dir else Path(tempfile.mkdtemp(prefix="sensegate-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _demo(args, data_dir)
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"demo over: removed its store {data_dir} (keep it next time with --data-dir DIR)", flush=True)
        else:
            print(f"demo over: its store is in {data_dir}", flush=True)


def _demo(args: argparse.Namespace, data_dir: Path) -> int:
    from gateway.broker import LocalBroker
    from gateway.runtime import Gateway
    from gateway.web.auth import hash_password
    from simulators.block import demo_site
    from simulators.runner import SerialSimulators, default_demo_incidents, run_simulation

    # The block's wired devices — an MR60FDA1 fall radar on a UART and an RS-485 bus of Modbus
    # detectors — are simulated on pseudo-terminals in the data dir.
    site = demo_site(
        args.buildings,
        args.households,
        data_dir=str(data_dir),
        radar_port=str(data_dir / "ttyMR60FDA1"),
        modbus_port=str(data_dir / "ttyRS485"),
    )

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with LocalBroker(args.broker) as broker:
            site["mqtt"] = {"host": broker.host, "port": broker.port}
            # The duty desk on this machine only; another port if something else has 8480.
            site["console"] = {"enabled": True, "port": _free_or_any(args.console_port)}
            config = parse_config(site, file="<demo>")
            wired = SerialSimulators(config, clock=SystemClock(), seed=args.seed)
            wired.open()  # before the gateway opens the ports; inside the loop: they answer it
            try:
                gateway = Gateway(config, console=sys.stdout)
                password = args.console_password or secrets.token_hex(4)
                duty = [st.id for st in config.staff if st.role == "property"]
                for person in duty:  # the demo's duty staff sign in with it
                    gateway.store.set_password_hash(person, hash_password(password), time.time())
                print(
                    f"SenseGate demo: {len(config.devices)} simulated devices in {args.buildings} buildings × "
                    f"{args.households} households; broker: {broker.kind} on {broker.host}:{broker.port}; "
                    f"store: {config.store_path}",
                    flush=True,
                )
                print("Alerts appear below as they are raised (Ctrl-C to stop).", flush=True)
                print(
                    f"Nobody acknowledges in a demo, so they climb the ladder (升级) every few minutes; take one with\n"
                    f"  {self_command()} alerts ack --store {config.store_path} <alert id> --by s-day",
                    flush=True,
                )

                async def simulate() -> None:
                    await gateway.ready.wait()
                    await run_simulation(
                        config,
                        broker.host,
                        broker.port,
                        clock=SystemClock(),
                        seed=args.seed,
                        speed=args.speed,
                        incidents=default_demo_incidents(config),
                        duration=args.duration,
                        stop=stop,
                    )
                    stop.set()

                async def simulate_wired() -> None:
                    await gateway.ready.wait()
                    # The script: a gas leak on the Modbus bus at ~10 s, cleared 30 s later; a fall
                    # on the wired radar at ~38 s that the elder gets up from.
                    await wired.run(stop, incidents=True)

                async def announce_console() -> None:
                    server = gateway.console_server
                    assert server is not None  # the demo enables it
                    await server.started.wait()
                    print(
                        f"值班台 console: {server.url}  sign in as {' or '.join(duty)}, password {password}",
                        flush=True,
                    )

                async def report() -> None:
                    while not stop.is_set():
                        await asyncio.sleep(args.report_every)
                        c = await asyncio.to_thread(gateway.store.counters)
                        open_alerts = len(await asyncio.to_thread(gateway.store.alerts, True))
                        malformed = sum(v for k, v in c.items() if k.startswith("malformed."))
                        print(
                            f"· events accepted {c.get('accepted', 0)}, malformed {malformed}, "
                            f"open alerts {open_alerts}",
                            flush=True,
                        )

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(gateway.run(stop))
                    sims = [
                        tg.create_task(simulate()),
                        tg.create_task(simulate_wired()),
                        tg.create_task(report()),
                        tg.create_task(announce_console()),
                    ]
                    await stop.wait()
                    for task in sims:
                        task.cancel()
            finally:
                wired.close()
        return 0

    return _run_async(main())


def _free_or_any(port: int) -> int:
    """``port`` if nothing listens on it on this machine, else 0 (any free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


# ---------------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.runner import (
        DEMO_SCRIPT,
        SerialSimulators,
        check_simulation,
        default_demo_incidents,
        run_simulation,
    )

    config = load_config(args.config, unset_secrets=[])  # the simulator publishes without the gateway's secrets
    host, _, port = (args.broker or f"{config.mqtt.host}:{config.mqtt.port}").rpartition(":")
    incidents = default_demo_incidents(config) if args.incidents else []
    try:
        check_simulation(config, incidents)
    except ValueError as exc:
        print(f"error: cannot simulate {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.incidents:
        for incident in incidents:
            print(f"incident at {incident.at:g} s: {incident.kind} in {incident.household}", flush=True)
        for step in DEMO_SCRIPT:
            if step.kind not in {i.kind for i in incidents}:
                print(f"no incident {step.kind}: no household has an MQTT {step.family.value} device", flush=True)

    async def main() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        # The wired devices (serial radars, Modbus buses) on pseudo-terminals at their ports —
        # where a simulator may create them; the others are named and left out.
        wired = SerialSimulators(config, clock=SystemClock(), seed=args.seed)
        for line in wired.skipped:
            print(f"not simulated: {line}", file=sys.stderr, flush=True)
        wired.open()
        try:
            for line in wired.describe():
                print(f"simulating {line}", flush=True)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(wired.run(stop, incidents=args.incidents))
                stats = await run_simulation(
                    config,
                    host or "127.0.0.1",
                    int(port),
                    clock=SystemClock(),
                    seed=args.seed,
                    speed=args.speed,
                    incidents=incidents,
                    duration=args.duration,
                    stop=stop,
                    start_hour=args.start_hour,
                    legacy_availability=args.legacy_availability,
                )
                stop.set()  # the duration is over: the wired devices stop too
        finally:
            wired.close()
        print(stats)
        return 0

    return _run_async(main())


# ---------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.runtime import open_store

    config = load_config(args.config)
    if not config.store_path.exists():
        print(no_events_yet(config))
        return 0
    store = open_store(config)
    try:
        print(f"store {config.store_path}: {store.event_count()} events, {store.used_bytes()} bytes")
        tz = site_rules(config).settings.timezone
        print(_ingest_status(store, zone(tz), time.time()))
        for line in disk_lines(store.disk_state(), store.meta(DISK_META), tz):
            print(f"  {line}")
        for name, value in store.counters().items():
            print(f"  {name} = {value}")
        for o in config.outputs:
            print(f"  pending.{o.name} = {store.pending_count(o.name)}")
        for (channel, state), n in sorted(store.notification_counts().items()):
            print(f"  notifications.{channel}.{state} = {n}")
        for key, health in store.metas("channel.").items():
            print(f"  {key}: {health}")  # a channel's own health (the SMS modem: registration, signal)
        now = SystemClock().now()
        for mode in store.test_modes(open_only=True):  # alarms from these page nobody (docs/installer.md)
            if mode.running(now):
                left = round((mode.ends_at - now) / 60)
                print(f"  测试模式 test mode {mode.id}: {mode.label} by {mode.started_by}, {left} min left")
        for alert in store.alerts(open_only=True):
            grade = f"[{alert.severity.label_zh}] {alert.state.value}"
            print(f"  open alert {alert.id} {grade} ×{alert.count} {alert.message_zh}")
    finally:
        store.close()
    return 0


def _ingest_status(store: Any, tz: Any, now: float) -> str:
    """``ingest: ok`` or, per failing part, the last error and since when (gateway/ingest/health.py)."""
    from gateway.ingest.health import failures

    failing = failures(store)
    if not failing:
        return "  ingest: ok (no failure recorded by the gateway)"
    lines = []
    for f in sorted(failing, key=lambda f: f.part):
        since = datetime.fromtimestamp(f.since, tz).strftime("%Y-%m-%d %H:%M:%S")
        minutes = max(0, round((now - f.since) / 60))
        lines.append(f"  ingest {f.part}: FAILING since {since} ({minutes} min): {f.error}")
    return "\n".join(lines)


def disk_lines(state: DiskState, kept: str | None, tz: str) -> list[str]:
    """The store's disk for ``status``: its files against the bound, the filesystem, the reserve,
    and — from what the running gateway last wrote (``meta disk.state``) — a full disk."""
    lines = [
        f"disk: store files {state.store_bytes} bytes (WAL {state.wal_bytes}) of max_bytes {state.max_bytes}; "
        f"filesystem free {state.free_bytes} bytes; reserve {state.reserve_bytes} of {state.reserve_target} bytes"
    ]
    gateway = json.loads(kept) if kept else {}
    if gateway.get("full"):
        since = _local(float(gateway.get("at", 0)), tz)
        what = "telemetry refused (the broker holds it)" if gateway.get("refusing") else "oldest telemetry dropped"
        lines.append(f"磁盘已满 DISK FULL since {since}: alarms stored and paged, {what}; free disk space")
    return lines


# ---------------------------------------------------------------------- rules


def cmd_rules_check(args: argparse.Namespace) -> int:
    from gateway.cli.explain import check_rules

    config = load_config(args.config)
    print(check_rules(config, site_rules(config)))
    return 0


def cmd_rules_explain(args: argparse.Namespace) -> int:
    from gateway.cli.explain import explain_household

    config = load_config(args.config)
    rules = site_rules(config)
    if not config.store_path.exists():
        print(no_events_yet(config))
    store = _open_store(config)
    try:
        print(explain_household(config, store, rules, args.household, SystemClock().now()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------------- visits


def cmd_visits_checkin(args: argparse.Namespace) -> int:
    from datetime import datetime

    from edge_rules.schedule import zone
    from gateway.care.checkin import checkin_event
    from gateway.runtime import open_store

    config = load_config(args.config)
    tz = zone(site_rules(config).settings.timezone)
    now = SystemClock().now()
    at = now
    if args.time:
        try:
            parsed = datetime.fromisoformat(args.time)
        except ValueError:
            print(f"error: --time {args.time!r}: expected ISO 8601, e.g. 2026-11-03T10:00+08:00", file=sys.stderr)
            return 2
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz)
        at = parsed.timestamp()
    try:
        event, row = checkin_event(config, args.household, args.visitor, at, now, args.note, "cli")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = open_store(config)
    try:
        row = store.append_visit(event, row)
    finally:
        store.close()
    who = ", ".join(row.residents) or "no covered resident"
    print(f"recorded visit to {row.household} ({who}) by {row.visitor} at {datetime.fromtimestamp(at, tz).isoformat()}")
    return 0


def cmd_visits_report(args: argparse.Namespace) -> int:
    from gateway.care.report import build_report, month_bounds, write_report

    config = load_config(args.config)
    tz = site_rules(config).settings.timezone
    try:
        start, end = month_bounds(args.month, tz)
    except ValueError as exc:
        print(f"error: --month: expected {exc}", file=sys.stderr)
        return 2
    if not config.store_path.exists():
        print(no_events_yet(config))
        return 0
    store = _open_store(config)
    try:
        now = SystemClock().now()
        first = store.first_event_at()
        if first is None or end <= first:
            since = "no events yet" if first is None else f"its first event: {_local(first, tz)}"
            print(f"{args.month}: 网关当时尚未运行，无探访月报 the gateway was not running yet ({since}); no report")
            return 0
        if start > now:
            print(f"{args.month}: 该月尚未开始 this month has not begun; no report")
            return 0
        report = build_report(config, store, args.month, now, tz)
    finally:
        store.close()
    for path in write_report(report, Path(args.out), args.lang):
        print(path)
    rate = "—" if report.rate is None else f"{report.rate * 100:.1f} %"
    print(f"{report.month}: 月探访率 {rate} ({report.visited}/{len(report.elders)}), target 100 %")
    if first > start:
        print(
            f"  网关自 {_local(first, tz)} 起运行，此前的探访未记录 "
            "the gateway started mid-month: visits before then are not recorded"
        )
    return 0


def _local(t: float, tz: str) -> str:
    from datetime import datetime

    from edge_rules.schedule import zone

    return datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------- main


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sensegate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def self_command() -> str:
    """How to run this same ``sensegate`` from another shell, as typed: ``sensegate`` when that
    name on PATH is this program, else its absolute path (scripts/demo runs .venv/bin/sensegate
    without activating the venv), else ``python -m gateway.cli`` with this interpreter."""
    import shlex
    import shutil

    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "sensegate" and argv0.exists():
        on_path = shutil.which("sensegate")
        if on_path is not None and Path(on_path).resolve() == argv0.resolve():
            return "sensegate"
        return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m gateway.cli"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensegate",
        description="SenseGate (智感网关): edge gateway for door, fall, smoke and SOS sensors in a residential block.",
    )
    p.add_argument("--version", action="version", version=f"sensegate {version()}")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING … (default INFO; demo: WARNING)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="run the gateway with a site config",
        description=(
            "Connect to the broker in the config, ingest every configured device, keep each event on disk "
            "before acknowledging it, raise alerts and forward time-series to the configured outputs."
        ),
    )
    r.add_argument("-c", "--config", required=True, help="site config (TOML)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "check",
        help="validate a site config",
        description=(
            "Validate a site config. Prints 'ok' and a summary (devices per building, outputs), or every "
            "mistake with the file and line, the field path, what was expected and what was found (exit 2). "
            "Secrets given as env:NAME or file:PATH need not be available here: those it cannot read are "
            "listed after the summary ('run' refuses to start without them)."
        ),
    )
    c.add_argument("-c", "--config", required=True)
    c.set_defaults(func=cmd_check)

    d = sub.add_parser(
        "demo",
        help="a simulated block with live alerts; needs nothing installed",
        description=(
            "Start a local broker (Mosquitto if installed, else the embedded amqtt broker), the gateway and a "
            "simulated residential block, its wired radar and Modbus bus on pseudo-terminals. Scripted incidents "
            "(an SOS press, a gas leak, a smoke alarm, falls) raise alerts in the terminal within a minute."
        ),
    )
    d.add_argument("--buildings", type=int, default=2)
    d.add_argument("--households", type=int, default=20, help="households per building")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    d.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second for daily activity")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    d.add_argument("--data-dir", default="", help="keep the store here (default: a new temporary directory)")
    d.add_argument("--report-every", type=float, default=10.0, help="seconds between status lines")
    d.add_argument("--console-port", type=int, default=8480, help="the duty desk's port (busy: any free one)")
    d.add_argument("--console-password", default="", help="the demo duty staff's password (default: random)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "simulate",
        help="publish simulated traffic for a site config",
        description=(
            "Publish the activity of the devices in a site config (real zigbee2mqtt, rtl_433 and native payloads) "
            "to a broker, for developing against a running gateway; its serial radars and Modbus buses are "
            "simulated on pseudo-terminals at their configured ports when those are in a writable directory."
        ),
    )
    s.add_argument("-c", "--config", required=True)
    s.add_argument("--broker", default="", help="host:port (default: the config's broker)")
    s.add_argument("--duration", type=float, default=None)
    s.add_argument("--speed", type=float, default=60.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--incidents", action="store_true", help="include the demo's scripted incidents")
    s.add_argument("--start-hour", type=float, default=None, help="local hour the daily routine starts at")
    s.add_argument("--legacy-availability", action="store_true", help="zigbee2mqtt 1.x online/offline text")
    s.set_defaults(func=cmd_simulate)

    st = sub.add_parser("status", help="counters, queues and open alerts from the store")
    st.add_argument("-c", "--config", required=True)
    st.set_defaults(func=cmd_status)

    ru = sub.add_parser("rules", help="check the rules; explain which apply to a household").add_subparsers(
        dest="rules_command", required=True
    )
    rc = ru.add_parser(
        "check",
        help="validate the [rules] packs and files; list every rule",
        description="Validate the rule packs and files the config names; print each rule's id, type, "
        "severity, per and thresholds.",
    )
    rc.add_argument("-c", "--config", required=True)
    rc.set_defaults(func=cmd_rules_check)
    rx = ru.add_parser(
        "explain",
        help="which rules apply to a household, their timers and open alerts",
        description="Which rules apply to a household's devices and residents, their current timers and "
        "open alerts from the store (read-only: safe while the gateway runs), and the visit plan.",
    )
    rx.add_argument("-c", "--config", required=True)
    rx.add_argument("--household", required=True, help="household id, e.g. 3-2-502")
    rx.set_defaults(func=cmd_rules_explain)

    vi = sub.add_parser("visits", help="visit tracking (探访): check-in, monthly report").add_subparsers(
        dest="visits_command", required=True
    )
    vc = vi.add_parser(
        "checkin",
        help="record a visit by a registered visitor",
        description="Record a visit (探访记录) in the store; a running gateway resolves the visit-overdue "
        "and welfare alerts of the household with it (docs/visits.md).",
    )
    vc.add_argument("-c", "--config", required=True)
    vc.add_argument("--household", required=True, help="household id, e.g. 3-2-502")
    vc.add_argument("--visitor", required=True, help="a [[visitors]] id")
    vc.add_argument("--note", default="")
    vc.add_argument("--time", default="", help="when (ISO 8601; default now; local time without an offset)")
    vc.set_defaults(func=cmd_visits_checkin)
    vr = vi.add_parser(
        "report",
        help="the monthly visit report (Markdown and CSV)",
        description="Per covered elder the visits of the month, by whom and how, gaps longer than the plan, "
        "and the 月探访率 against the 100 % target.",
    )
    vr.add_argument("-c", "--config", required=True)
    vr.add_argument("--month", required=True, help="e.g. 2026-11")
    vr.add_argument("--out", default=".", help="directory to write to (default: the current one)")
    vr.add_argument("--lang", choices=["zh", "en"], default="zh", help="headings (default zh)")
    vr.set_defaults(func=cmd_visits_report)

    alerts_cli.add_parser(sub)
    users_cli.add_parser(sub)
    devices_cli.add_parser(sub)
    testmode_cli.add_parser(sub)
    installer_cli.add_parser(sub)

    sc = sub.add_parser("scenario", help="run scenario files (scenarios/README.md)").add_subparsers(
        dest="scenario_command", required=True
    )
    sr = sc.add_parser(
        "run",
        help="run scenarios on a virtual clock; print each alert timeline and verdict",
        description="Run each scenario (site, scripted events or wire messages, expected alerts, pages and "
        "visits) through the gateway's ingest, store, alert path, visit tracker and notifier on a virtual "
        "clock. Exit 0 if all pass, 1 on any mismatch, 2 on a bad file.",
    )
    sr.add_argument("files", nargs="+", metavar="FILE")
    sr.set_defaults(func=cmd_scenario_run)
    return p


def cmd_scenario_run(args: argparse.Namespace) -> int:
    from gateway.scenario import run_files

    return run_files(list(args.files))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = args.log_level
    if args.command in ("demo", "scenario") and level == "INFO":
        level = "WARNING"  # a scenario's links "opening" and devices "talking" are not news
    setup_logging(level)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"config error: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except SenseGateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sensegate alerts list | head`): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
