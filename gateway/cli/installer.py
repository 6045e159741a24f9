"""``sensegate doctor | backup | restore``: for the person who installs and looks after the box
(docs/installer.md).

    sensegate doctor -c site.toml [--probe S]     is the box ready? 0 ok, 1 warnings, 2 failures
    sensegate backup -c site.toml [--to FILE]     an online copy of the store (safe while it runs)
    sensegate restore FILE -c site.toml           put a backup back (refused while the gateway runs)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from gateway.errors import ConfigProblem
from gateway.site.config import load_config


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "doctor",
        help="check the box: broker, InfluxDB, serial devices, modem, clock, store, disk, file modes",
        description="Check everything the gateway needs on this box and say what to fix, in Chinese and "
        "English: the broker (connect with the config's credentials and TLS), each InfluxDB output (an empty "
        "write: credentials, database and write permission, no point written), each serial port (present, "
        "then listened to for --probe seconds with the gateway's own drivers: radar frames, Modbus unit ids "
        "answering, OSDP readers online, the modem's registration and signal; not while the gateway runs), "
        "the clock, the store (quick_check, schema version), disk space, and the modes of the config and "
        "secret files. Exit 0 all ok, 1 warnings only, 2 any failure.",
    )
    d.add_argument("-c", "--config", required=True)
    d.add_argument("--probe", type=float, default=6.0, help="seconds to listen to wired devices (default 6)")
    d.set_defaults(func=cmd_doctor)

    b = sub.add_parser(
        "backup",
        help="copy the store while the gateway runs (SQLite online backup)",
        description="Copy the store with SQLite's online backup API: a consistent copy, safe while the gateway "
        "runs. Default: <data_dir>/backups/store-<UTC time>.sqlite3. The copy is checked (quick_check), 0600.",
    )
    b.add_argument("-c", "--config", required=True)
    b.add_argument("--to", default="", help="the backup file (default: in <data_dir>/backups/)")
    b.set_defaults(func=cmd_backup)

    r = sub.add_parser(
        "restore",
        help="put a backup in place of the store (the gateway must be stopped)",
        description="Check the backup (integrity_check, a schema version this release knows), refuse while a "
        "gateway runs on the store (it holds <store>.lock), keep the current store beside it as "
        "<store>.before-restore-<UTC time>, and put the backup in its place with the same owner and mode.",
    )
    r.add_argument("file", help="a backup made by sensegate backup")
    r.add_argument("-c", "--config", required=True)
    r.set_defaults(func=cmd_restore)


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.cli.doctor import Doctor, Level, exit_code

    # The secrets may be missing here: that is a finding, not a reason not to look at the rest.
    unset: list[ConfigProblem] = []
    config = load_config(args.config, unset_secrets=unset, mode_problems=[])  # a mode is a finding below
    doctor = Doctor(config, Path(args.config), now=time.time, probe_seconds=args.probe)
    for problem in unset:
        doctor.add(
            "secret",
            Level.FAIL,
            f"not available: {problem}",
            "在 /etc/sensegate/secrets.env 中设置，或检查 file: 路径",
            "set it in /etc/sensegate/secrets.env (env:NAME), or check the file: path",
        )
    findings = asyncio.run(doctor.run())
    for finding in findings:
        for line in finding.lines():
            print(line)
    code = exit_code(findings)
    counts = {level: sum(1 for f in findings if f.level is level) for level in Level}
    verdict = {0: "正常 all ok", 1: "有警告 warnings", 2: "有故障 failures"}[code]
    print(f"{verdict}: {counts[Level.OK]} ok, {counts[Level.WARN]} warnings, {counts[Level.FAIL]} failures")
    return code


def cmd_backup(args: argparse.Namespace) -> int:
    from gateway.store.backup import backup

    config = load_config(args.config, unset_secrets=[])
    now = time.time()
    to = Path(args.to) if args.to else config.store_path.parent / "backups" / f"store-{_stamp(now)}.sqlite3"
    facts = backup(config.store_path, to)
    size = to.stat().st_size
    print(
        f"backed up {config.store_path} to {to}: {facts.events} events, {size} bytes, "
        f"schema version {facts.schema_version}, quick_check ok"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.store.backup import restore

    config = load_config(args.config, unset_secrets=[])
    facts, kept = restore(Path(args.file), config.store_path, _stamp(time.time()))
    print(f"restored {args.file} to {facts.path}: {facts.events} events, schema version {facts.schema_version}")
    if kept is not None:
        print(f"  the store it replaced is kept as {kept}")
    print("  start the gateway again: systemctl start sensegate")
    return 0
