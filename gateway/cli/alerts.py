"""``sensegate alerts list | show | ack | resolve``: alerts from the store, and acknowledgement
by the person at the keyboard. ack / resolve are queued for the running gateway (the one
writer of alert state, gateway.alerts.commands), which applies them within a second; the command
waits for the result. ``--by`` must name a person the site knows (gateway.site.people): with
``-c`` an unknown one is refused before anything is queued; with ``--store`` alone the people
are not known here, and the gateway's refusal is the result reported."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_rules.schedule import zone
from gateway.errors import SenseGateError
from gateway.models import Alert
from gateway.site.config import SiteConfig, load_config, site_rules
from gateway.site.people import People
from gateway.store import Store


def add_parser(sub: Any) -> None:
    al = sub.add_parser("alerts", help="list, show, acknowledge and resolve alerts").add_subparsers(
        dest="alerts_command", required=True
    )
    ls = al.add_parser("list", help="open alerts (--all: resolved ones too)")
    _where(ls)
    ls.add_argument("--all", action="store_true", help="include resolved alerts")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)
    sh = al.add_parser("show", help="one alert with its audit trail (who knew, and when)")
    _where(sh)
    sh.add_argument("alert", help="alert id, or a unique prefix of it")
    sh.set_defaults(func=cmd_show)
    for action, text in (("ack", "acknowledge: you take responsibility; escalation stops"), ("resolve", "close it")):
        a = al.add_parser(action, help=text)
        _where(a)
        a.add_argument("alert", help="alert id, or a unique prefix of it")
        a.add_argument(
            "--by",
            required=True,
            help="who you are: a staff or visitor id from the site config, or contact:<resident id>:<n> "
            "(a family contact, n from 0)",
        )
        a.add_argument("--note", default="", help="what was done (处置记录)" if action == "resolve" else "a note")
        a.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the gateway (default 10)")
        a.set_defaults(func=cmd_act, action=action)


def _where(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help="the site config (its store)")
    where.add_argument("--store", help="a store file directly (e.g. the demo's, which it prints)")


def _store(args: argparse.Namespace, config: SiteConfig | None = None, empty_ok: bool = False) -> tuple[Store, str]:
    """The store and the site's time zone. ``empty_ok``: before the gateway's first run (no file
    yet) an empty store in memory, so a listing says "no alerts" (the file is not created here:
    it would belong to whoever ran the command, not to the gateway's user)."""
    from gateway.runtime import open_store  # the runtime's modules load only for a command that needs them

    if args.store:
        path = Path(args.store)
        if not path.exists():
            raise SenseGateError(f"no store at {path}")
        return Store(path), "Asia/Shanghai"
    config = config or load_config(args.config)
    tz = site_rules(config).settings.timezone
    if not config.store_path.exists():
        if empty_ok:
            return Store(":memory:"), tz
        raise SenseGateError(f"no store yet at {config.store_path} (has the gateway run?)")
    return open_store(config), tz


HELD_WHY = {
    "cap_per_hour": "每小时上限，并入汇总 over the hourly cap: in the summary",
    "quiet": "夜间免打扰 the ladder's quiet window",
    "grouped": "多条报警合并发送 grouped with other alarms",
}


def _when(t: float | None, tz: str) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _line(a: Alert, tz: str) -> str:
    who = f" 确认:{a.acked_by}" if a.acked_by else ""
    return f"{a.id} {a.state.value:<12} [{a.severity.label_zh}] ×{a.count} {_when(a.raised_at, tz)} {a.message_zh}{who}"


def cmd_list(args: argparse.Namespace) -> int:
    store, tz = _store(args, empty_ok=True)
    try:
        alerts = store.alerts(open_only=not args.all, limit=100_000)
        for a in alerts:
            print(json.dumps(a.to_dict(), ensure_ascii=False) if args.json else _line(a, tz))
        if not alerts and not args.json:
            print("no open alerts" if not args.all else "no alerts")
    finally:
        store.close()
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store, tz = _store(args)
    try:
        alert = store.alert(args.alert)
        if alert is None:
            found = store.alerts_by_prefix(args.alert)
            if len(found) != 1:
                raise SenseGateError(
                    f"no alert {args.alert!r}" if not found else f"alert id {args.alert!r} is ambiguous"
                )
            alert = found[0]
        print(_line(alert, tz))
        where = f"device {alert.device_id or '-'}  resident {alert.resident or '-'}"
        print(f"  rule {alert.rule}  dedup {alert.dedup_key}  {where}")
        print(f"  {alert.message_en}")
        if alert.resolve_note:
            print(f"  处置记录: {alert.resolve_note}")
        print("  audit trail:")
        for row in store.alert_log(alert.id):
            detail = dict(row.detail or {})
            held = ""
            if row.action == "held":  # not sent yet: say until when and why, so nobody reads it as paged
                until = detail.pop("until", None)
                held = f" 未发送 not sent until {_when(until if isinstance(until, int | float) else None, tz)}"
                held += f" ({HELD_WHY.get(str(detail.pop('why', '')), 'held')})"
            via = f" via {row.channel}" if row.channel else ""
            rest = json.dumps(detail, ensure_ascii=False)
            print(f"    {_when(row.at, tz)} {row.action:<13} {row.actor}{via}{held} {rest}")
    finally:
        store.close()
    return 0


def cmd_act(args: argparse.Namespace) -> int:
    by = args.by.strip()
    config = load_config(args.config) if args.config else None
    if config is not None:
        # At once, and nothing queued: the gateway would refuse it the same way.
        refusal = People(config).refusal(by)
        if refusal is not None:
            raise SenseGateError(refusal)
    store, tz = _store(args, config)
    try:
        body = {"action": args.action, "alert": args.alert, "by": by, "note": args.note, "via": "cli"}
        command_id = store.add_command(body, time.time())
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            (command,) = store.commands(command_id=command_id)
            if command.result is not None:
                if not command.result.get("ok"):  # the gateway refused it (an unknown person with --store …)
                    raise SenseGateError(str(command.result.get("error")))
                alert = Alert.from_dict(command.result["alert"])
                done = "已确认 acknowledged" if args.action == "ack" else "已处置 resolved"
                print(f"{done}: {_line(alert, tz)}")
                return 0
            time.sleep(0.2)
        print(f"queued (command {command_id}): no gateway applied it within {args.wait:.0f} s; it will when it runs")
        return 3
    finally:
        store.close()
