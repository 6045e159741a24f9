"""``sensegate devices``: the device inventory an installer walks the block with — every device with
its household, model, last report, battery, link quality, state and problems. The same store rows
(``device_state``) and the same problem rules (gateway/web/health.py) as the console's 设备 page."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from edge_rules.schedule import zone
from gateway.cli.stores import open_or_empty
from gateway.clock import SystemClock
from gateway.site.config import load_config, site_rules
from gateway.site.registry import Registry
from gateway.store import DeviceState
from gateway.web.health import PROBLEMS, SilenceLimits, problems
from gateway.web.pages_text import PAGE_TEXT


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="every device: household, model, last report, battery, signal, problems")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--building", default="", help="only this building")
    p.add_argument("--problem", default="", choices=["", "any", *PROBLEMS, "signal"], help="only devices with it")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--lang", default="zh", choices=["zh", "en"])
    p.set_defaults(func=cmd_devices)


def cmd_devices(args: argparse.Namespace) -> int:
    config = load_config(args.config, unset_secrets=[])
    tz = zone(site_rules(config).settings.timezone)
    limits = SilenceLimits.from_rules(site_rules(config))
    registry = Registry(config)
    wanted = "weak" if args.problem == "signal" else args.problem
    words = PAGE_TEXT[args.lang]["problem_names"]
    now = SystemClock().now()
    store = open_or_empty(config)
    try:
        states = store.device_states()
    finally:
        store.close()
    shown = 0
    for d in config.devices:
        place = registry.devices[d.id].location
        if args.building and place.building != args.building:
            continue
        state = states.get(d.id)
        found = problems(d, state, now, limits)
        if wanted and (not found or (wanted != "any" and wanted not in found)):
            continue
        shown += 1
        s = state or DeviceState(d.id)
        where = place.label_zh() if args.lang == "zh" else place.label_en()
        if args.json:
            row: dict[str, object] = {"id": d.id, "household": d.household, "place": where, "family": d.family}
            row |= {"model": d.model, "last_seen": s.last_seen, "battery": s.battery, "link_quality": s.link_quality}
            print(json.dumps({**row, "state": s.state, "problems": list(found)}, ensure_ascii=False))
            continue
        seen = "-" if s.last_seen is None else datetime.fromtimestamp(s.last_seen, tz).strftime("%m-%d %H:%M")
        battery = "-" if s.battery is None else f"{s.battery:.0f}%"
        lqi = "-" if s.link_quality is None else f"{s.link_quality:.0f}"
        trouble = ("、" if args.lang == "zh" else ", ").join(words[p] for p in found)
        print(f"{d.id:<24} {where:<24} {d.model:<16} {seen:<11} {battery:>5} {lqi:>4} {s.state:<10} {trouble}")
    if not args.json:
        total = len(config.devices)
        print(f"{shown} of {total} devices" if args.lang == "en" else f"共 {shown} / {total} 台设备")
    return 0
