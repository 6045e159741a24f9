"""``sensegate testmode start|end|list|show`` and ``sensegate commission start|status|finish|report``
(docs/installer.md).

Starting and ending go through the running gateway, the one writer: the command is queued in the
store (as ``alerts ack`` does, gateway.alerts.commands) and the gateway applies it within a
second; the CLI waits for the result. The scope and ``--by`` are checked here first, so a typo
is refused with the closest names before anything is queued. ``list``, ``show``, ``status`` and
``report`` read the store (safe while the gateway runs).

``--by`` names the staff member in whose name the test mode is set (an installer is
maintenance staff); ``SENSEGATE_BY`` in the environment is the default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_rules.schedule import format_duration_zh, parse_duration, zone
from gateway.clock import SystemClock
from gateway.errors import SenseGateError
from gateway.site.config import SiteConfig, load_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store, TestModeRow
from gateway.testmode.scope import Scope, resolve
from gateway.testmode.walk import walk

BY_ENV = "SENSEGATE_BY"


def add_parser(sub: Any) -> None:
    tm = sub.add_parser(
        "testmode", help="test mode (测试模式): events from a scope page nobody, until it ends"
    ).add_subparsers(dest="testmode_command", required=True)
    st = tm.add_parser(
        "start",
        help="put a device, household, unit, building or the site in test mode",
        description="Events from the scope's devices are stored and forwarded (tagged test=true) but raise no "
        "alert and page nobody; what they would have raised is recorded. It always ends by itself: after "
        "--for (default [test_mode] default, 1 h; at most 24 h). Applied by the running gateway.",
    )
    _scope_args(st)
    st.add_argument("--for", dest="duration", default="", help="how long, e.g. 30m, 2h (default 1 h)")
    st.add_argument("--note", default="", help="why (in the audit trail)")
    _person_args(st)
    st.set_defaults(func=cmd_start, action="testmode_start")
    en = tm.add_parser("end", help="end a running test mode (by id, or every one of a scope)")
    en.add_argument("-c", "--config", required=True)
    en.add_argument("--id", type=int, help="the test mode's id (testmode list)")
    _scope_flags(en)
    _person_args(en)
    en.set_defaults(func=cmd_end)
    ls = tm.add_parser("list", help="running test modes (--all: every one)")
    ls.add_argument("-c", "--config", required=True)
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)
    sh = tm.add_parser("show", help="one test mode: its trail and what its events would have raised")
    sh.add_argument("-c", "--config", required=True)
    sh.add_argument("id", type=int)
    sh.set_defaults(func=cmd_show)

    co = sub.add_parser("commission", help="walk test (现场调试): a checklist of every device in scope").add_subparsers(
        dest="commission_command", required=True
    )
    cs = co.add_parser(
        "start",
        help="put a scope in test mode and tick off every device as it is heard",
        description="Starts a walk test: the scope goes into test mode ([test_mode] commission, default 4 h) and "
        "every device is ticked off the first time it reports; `commission status` prints the checklist.",
    )
    _scope_args(cs)
    cs.add_argument("--for", dest="duration", default="", help="how long the test mode lasts (default 4 h)")
    _person_args(cs)
    cs.set_defaults(func=cmd_start, action="commission_start")
    ct = co.add_parser("status", help="the checklist: seen, not seen, weak signal, low battery")
    ct.add_argument("-c", "--config", required=True)
    ct.add_argument("--id", type=int, help="the walk test (default: the newest)")
    ct.set_defaults(func=cmd_status)
    cf = co.add_parser("finish", help="end the walk test's test mode and keep its report")
    cf.add_argument("-c", "--config", required=True)
    cf.add_argument("--id", type=int, help="the walk test (default: the one open)")
    _person_args(cf)
    cf.set_defaults(func=cmd_finish)
    cr = co.add_parser("report", help="a finished walk test's report (Chinese, per household)")
    cr.add_argument("-c", "--config", required=True)
    cr.add_argument("--id", type=int, help="the walk test (default: the newest finished)")
    cr.add_argument("--format", choices=["html", "csv"], default="html")
    cr.add_argument("--out", default="", help="write to this file (default: standard output)")
    cr.set_defaults(func=cmd_report)


def _scope_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", action="store_true", help="the whole site")
    p.add_argument("--building", help="a building id, e.g. 3")
    p.add_argument("--unit", help="a unit of --building, e.g. 2")
    p.add_argument("--household", help="a household id, e.g. 3-2-502")
    p.add_argument("--device", help="one device id")


def _scope_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True)
    _scope_flags(p)


def _person_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", default="", help=f"your [[staff]] id (default: ${BY_ENV})")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the gateway (default 10)")


def _scope_of(args: argparse.Namespace) -> tuple[str, str] | None:
    given = [
        (kind, value)
        for kind, value in (
            ("site", "" if args.site else None),
            ("household", args.household),
            ("device", args.device),
            ("building", args.building if not args.unit else None),
            ("unit", f"{args.building}/{args.unit}" if args.unit else None),
        )
        if value is not None
    ]
    if args.unit and not args.building:
        raise SenseGateError("--unit needs --building")
    if len(given) > 1:
        raise SenseGateError("one scope: --site, --building [--unit], --household or --device")
    return given[0] if given else None


def _by(args: argparse.Namespace, config: SiteConfig) -> str:
    by = (args.by or os.environ.get(BY_ENV, "")).strip()
    if not by:
        raise SenseGateError(f"who sets it? --by <staff id> (or {BY_ENV} in the environment)")
    staff = {s.id for s in config.staff}
    if by not in staff:
        import difflib

        close = difflib.get_close_matches(by, sorted(staff), 3, 0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ": name a [[staff]] id"
        raise SenseGateError(f"unknown staff member {by!r}{hint}")
    return by


def _open(config: SiteConfig) -> Store:
    from gateway.runtime import open_store

    if not config.store_path.exists():
        raise SenseGateError(f"no store yet at {config.store_path} (has the gateway run?)")
    return open_store(config)


def _tz(config: SiteConfig) -> str:
    return site_rules(config).settings.timezone


def _when(t: float | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "-" if t is None else datetime.fromtimestamp(t, zone(tz)).strftime(fmt)


def _queue(store: Store, body: dict[str, Any], wait: float) -> dict[str, Any] | None:
    """Queue a command for the gateway; its result, or None if none came within ``wait``."""
    command_id = store.add_command(body, time.time())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        (command,) = store.commands(command_id=command_id)
        if command.result is not None:
            if not command.result.get("ok"):
                raise SenseGateError(str(command.result.get("error")))
            return command.result
        time.sleep(0.2)
    print(f"queued (command {command_id}): no gateway applied it within {wait:.0f} s; it will when it runs")
    return None


def _line(m: TestModeRow, tz: str, now: float) -> str:
    if m.ended_at is not None:
        state = "已过期 expired" if m.ended_by == "system" else f"已结束 ended by {m.ended_by}"
    elif m.ends_at <= now:
        state = "已到期 ran out"
    else:
        state = f"进行中 running, {format_duration_zh(round(m.ends_at - now))} left"
    walk_ = f" 现场调试 walk test {m.commission}" if m.commission else ""
    return (
        f"{m.id:>4} {m.label} {_when(m.started_at, tz)} → {_when(m.ends_at, tz, '%H:%M')} "
        f"by {m.started_by}: {state}{walk_}"
    )


# ---------------------------------------------------------------------- commands


def cmd_start(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    chosen = _scope_of(args)
    if chosen is None:
        raise SenseGateError("which scope? --site, --building [--unit], --household or --device")
    try:
        scope: Scope = resolve(Registry(config), *chosen)
    except ValueError as exc:
        raise SenseGateError(str(exc)) from None
    by = _by(args, config)
    body: dict[str, Any] = {"action": args.action, "scope": scope.kind, "target": scope.target, "by": by, "via": "cli"}
    if args.duration:
        body["for"] = parse_duration(args.duration)
    if getattr(args, "note", ""):
        body["note"] = args.note
    store = _open(config)
    try:
        result = _queue(store, body, args.wait)
        if result is None:
            return 3
        m = result["test_mode"]
        tz = _tz(config)
        what = "现场调试 walk test" if args.action == "commission_start" else "测试模式 test mode"
        print(
            f"{what} {m['commission'] or m['id']}: {m['label']} ({result['devices']} devices) in test mode until "
            f"{_when(m['ends_at'], tz)}, by {by}; events page nobody meanwhile"
        )
    finally:
        store.close()
    return 0


def cmd_end(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    chosen = _scope_of(args)
    if (args.id is None) == (chosen is None):
        raise SenseGateError("name the test mode: --id N, or its scope (--building 3 …)")
    body: dict[str, Any] = {"action": "testmode_end", "by": _by(args, config), "via": "cli"}
    if args.id is not None:
        body["id"] = args.id
    else:
        assert chosen is not None
        body["scope"], body["target"] = chosen
    store = _open(config)
    try:
        result = _queue(store, body, args.wait)
        if result is None:
            return 3
        for m in result["ended"]:
            print(f"测试模式 test mode {m['id']} ({m['label']}) ended: events from it page as usual again")
    finally:
        store.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tz, now = _tz(config), SystemClock().now()
    store = _open(config)
    try:
        modes = store.test_modes(open_only=not args.all)
        for m in modes:
            print(json.dumps(m.to_dict(), ensure_ascii=False) if args.json else _line(m, tz, now))
        if not modes and not args.json:
            print("no test mode running" if not args.all else "no test modes")
    finally:
        store.close()
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tz, now = _tz(config), SystemClock().now()
    store = _open(config)
    try:
        m = store.test_mode(args.id)
        if m is None:
            raise SenseGateError(f"no test mode {args.id}")
        print(_line(m, tz, now))
        if m.note:
            print(f"  note: {m.note}")
        devices = store.test_mode_devices(m.id)
        print(f"  {len(devices)} devices")
        print("  audit trail:")
        for row in store.test_mode_log(m.id):
            via = f" via {row.via}" if row.via else ""
            print(f"    {_when(row.at, tz, '%Y-%m-%d %H:%M:%S')} {row.action:<9} {row.actor}{via} "
                  f"{json.dumps(dict(row.detail), ensure_ascii=False)}")  # fmt: skip
        until = m.ended_at if m.ended_at is not None else m.ends_at
        would = [w for w in store.would_haves(devices=devices, since=m.started_at) if w.at <= until]
        print(f"  would have raised (本应触发): {len(would) or 'nothing'}")
        for w in would:
            print(f"    {_when(w.at, tz, '%H:%M:%S')} {w.device_id} [{w.rule}] {w.message_zh}")
    finally:
        store.close()
    return 0


def _commission_id(store: Store, wanted: int | None, finished: bool = False) -> int:
    if wanted is not None:
        return wanted
    found = [c for c in store.commissions() if not finished or c.finished_at is not None]
    if not found:
        raise SenseGateError("no finished walk test" if finished else "no walk test yet")
    return found[0].id


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _open(config)
    try:
        c = store.commission(_commission_id(store, args.id))
        if c is None:
            raise SenseGateError(f"no walk test {args.id}")
        print(walk(config, Registry(config), store, c, timezone=_tz(config)).text())
    finally:
        store.close()
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    body: dict[str, Any] = {"action": "commission_finish", "by": _by(args, config), "via": "cli"}
    if args.id is not None:
        body["id"] = args.id
    store = _open(config)
    try:
        result = _queue(store, body, args.wait)
        if result is None:
            return 3
        c = result["commission"]
        s = c["summary"]
        print(
            f"现场调试 walk test {c['id']} ({c['label']}) finished: {s['seen']}/{s['devices']} devices seen, "
            f"{len(s['not_seen'])} not seen, {len(s['weak'])} weak, {len(s['low_battery'])} low on battery"
        )
        for device in s["not_seen"]:
            print(f"  未上报 not seen: {device}")
        print(f"report: sensegate commission report -c {args.config} --id {c['id']} [--format csv]")
    finally:
        store.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _open(config)
    try:
        commission_id = _commission_id(store, args.id, finished=True)
        report = store.commission_report(commission_id)
        if report is None:
            raise SenseGateError(f"walk test {commission_id} is not finished (commission finish)")
    finally:
        store.close()
    text = report[0] if args.format == "html" else report[1]
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
        print(args.out)
    else:
        sys.stdout.write(text)
    return 0
