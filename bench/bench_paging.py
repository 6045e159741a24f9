"""Paging benchmark: how long from a resident's SOS press or a smoke alarm to the page reaching
the property office's person on duty, while the site's telemetry runs at a given rate.

    .venv/bin/python bench/bench_paging.py                          # 200 households, 200 and 1000 msg/s
    .venv/bin/python bench/bench_paging.py --rates 200 --seconds 30 --cap-lifted

For each rate, from scratch: a real Mosquitto on a free loopback port (``tests.servers.Mosquitto``),
a real HTTP receiver on 127.0.0.1 that checks the HMAC signature as the property system would
(``tests.receivers.Receiver``), and the gateway in its own process (``python -m gateway.cli run
-c …``) on a generated site: ``--households`` households in ``--buildings`` buildings
(``simulators.block.demo_site``), one property staff member on duty all day, an ``emergency``
ladder whose tier 0 pages ``on_duty`` over a signed generic webhook channel, and a route sending
severities 1 and 2 up that ladder. Everything else is the gateway's defaults, the hourly cap
(``notify.cap_per_hour = 12``) included; ``--cap-lifted`` sets it to 1000.

This process publishes the site's telemetry at the rate (QoS 1, zigbee2mqtt / rtl_433 / native
payloads from the simulators, as ``bench_ingest.py`` does) and, spread over ``--seconds``,
``--incidents`` incidents: zigbee2mqtt SOS presses (``{"action":"emergency",…}``) and smoke alarms
(``{"smoke":true,…}``) in turn, each in a household not used before in that run, the smoke
alarms each in the next building.

For each incident it measures the time from publishing the payload to the receiver accepting the
first page for the alert it raised (the webhook body's ``alert`` names the device and the rule).
An incident not paged within 10 s counts as never paged: the bench does not wait longer, and
asks the gateway's store why (held by the hourly cap, no alert …). Exit status 1 if any
incident was never paged. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_ingest import (  # noqa: E402
    Publisher,
    StoreWatch,
    Traffic,
    peak_rss_mib,
    percentile,
    start_gateway,
    stop_process,
    warm_up,
)
from gateway.site.config import SiteConfig, parse_config  # noqa: E402
from gateway.store import Store  # noqa: E402
from simulators.block import demo_site, render_toml  # noqa: E402
from simulators.devices import SimDevice, SmokeSim, SosSim  # noqa: E402
from tests.receivers import Delivery, Receiver  # noqa: E402
from tests.servers import Mosquitto  # noqa: E402

IncidentKind = Literal["sos", "smoke"]

PAGE_WITHIN = 10.0  # seconds: an incident not paged by then counts as never paged
TICK = 0.01  # publisher pacing, seconds
CHANNEL = "property-office"
SECRET_ENV = "SENSEGATE_BENCH_HOOK_SECRET"  # the webhook's HMAC key reaches the gateway this way
ON_DUTY = {"id": "s-duty", "name": "李值班", "role": "property", "phone": "13900000001"}
# The rules whose alert an incident raises: its page is the one measured. (An SOS is the
# elderly_care "sos" rule for an elder living alone, "sos_household" for anyone else.)
RULES: dict[IncidentKind, frozenset[str]] = {
    "sos": frozenset({"sos", "sos_household"}),
    "smoke": frozenset({"smoke_alarm"}),
}
LABEL: dict[IncidentKind, str] = {"sos": "SOS", "smoke": "smoke"}
KINDS: tuple[IncidentKind, ...] = ("sos", "smoke")


@dataclass
class Incident:
    kind: IncidentKind
    device_id: str
    published: float = math.nan  # time.monotonic() as the payload went to the publisher
    paged: float = math.nan  # time.monotonic() when the receiver had read the first page for it
    title: str = ""  # that page's title, as the person on duty reads it
    why: str = ""  # when never paged: what the gateway's store says
    grouped: bool = False  # its first page listed it with other alarms (the storm's group window)

    @property
    def latency(self) -> float:
        return self.paged - self.published

    def settled(self, now: float) -> bool:
        return not math.isnan(self.paged) or now - self.published >= PAGE_WITHIN

    @property
    def paged_in_time(self) -> bool:
        return self.latency <= PAGE_WITHIN  # False for NaN: never paged


@dataclass
class RateRun:
    rate: float
    incidents: list[Incident]
    published: int = 0  # telemetry messages
    seconds: float = 0.0  # publishing, drain included
    other_pages: Counter[str] = field(default_factory=Counter)  # rule → pages no incident raised
    summaries: int = 0  # 【告警汇总】 messages (held alerts, sent when the hour frees up)
    grouped: int = 0  # messages listing several alarms (notify.group_window)
    rejected: int = 0  # pages the receiver refused (a bad signature …)
    duplicates: int = 0
    rss: float = math.nan


# ---------------------------------------------------------------------- the site


def paging_site(
    tmp: Path, broker: Mosquitto, receiver: Receiver, households: int, buildings: int, cap_lifted: bool
) -> dict[str, Any]:
    """The demo block at this size, with one person on duty paged over a signed webhook."""
    site = demo_site(buildings, households // buildings, gateway_id="bench", data_dir=str(tmp / "data"))
    site["mqtt"] = {**site["mqtt"], "host": broker.host, "port": broker.port}
    site["alerts"] = {"console": False}
    site["staff"] = [dict(ON_DUTY)]
    site["roster"] = [{"person": ON_DUTY["id"], "start": "00:00", "end": "24:00"}]
    site["channels"] = [{"type": "webhook", "id": CHANNEL, "url": receiver.webhook_url, "secret": f"env:{SECRET_ENV}"}]
    site["ladders"] = [{"id": "emergency", "repeat": "5m", "tiers": [{"to": ["on_duty"], "channels": [CHANNEL]}]}]
    site["routes"] = [{"severity": [1, 2], "ladder": "emergency"}]
    if cap_lifted:
        site["notify"] = {"cap_per_hour": 1000}
    return site


def plan_incidents(config: SiteConfig, sims: dict[str, SimDevice], count: int) -> list[Incident]:
    """SOS and smoke in turn. SOS presses go round the buildings, each in the next household;
    smoke alarms each in the next building (a second detector in a building within 5 min is a
    confirmed fire, another rule), in households counted from the other end."""
    building_of = {h.id: h.building for h in config.households}
    sos: dict[str, list[SimDevice]] = {b.id: [] for b in config.buildings}
    smoke: dict[str, list[SimDevice]] = {b.id: [] for b in config.buildings}
    for sim in sims.values():
        d = sim.device
        if not d.household or d.mqtt is None or d.mqtt.format != "zigbee2mqtt":
            continue
        if isinstance(sim, SosSim):
            sos[building_of[d.household]].append(sim)
        elif isinstance(sim, SmokeSim):
            smoke[building_of[d.household]].insert(0, sim)
    order = [b.id for b in config.buildings]
    out: list[Incident] = []
    for i in range(count):
        kind: IncidentKind = "sos" if i % 2 == 0 else "smoke"
        n = i // 2
        building = order[n % len(order)]
        pool = (sos if kind == "sos" else smoke)[building]
        turn = n // len(order)
        if turn >= len(pool):
            raise SystemExit(f"{count} incidents need more households: each is in one not used before")
        out.append(Incident(kind, pool[turn].device.id))
    return out


# ---------------------------------------------------------------------- pages


def match_pages(run: RateRun, deliveries: Sequence[Delivery]) -> None:
    """The first page the receiver accepted for each incident's alert; the rest are counted."""
    by_device = {i.device_id: i for i in run.incidents if not math.isnan(i.published)}
    run.other_pages.clear()
    run.summaries = 0
    run.grouped = 0
    for d in deliveries:
        body = d.body if isinstance(d.body, dict) else {}
        if body.get("kind") == "summary":
            run.summaries += 1
            continue
        # A storm's alarms to one person within the group window come as one "grouped" message.
        grouped = body.get("kind") == "grouped"
        run.grouped += grouped
        for alert in (body.get("alert") or {}).get("alerts", ()) if grouped else [body.get("alert") or {}]:
            incident = by_device.get(str(alert.get("device_id", "")))
            if incident is not None and alert.get("rule") in RULES[incident.kind] and d.at >= incident.published:
                if math.isnan(incident.paged) or d.at < incident.paged:
                    incident.paged = d.at
                    incident.title = str(body.get("title", ""))
                    incident.grouped = grouped
            else:
                run.other_pages[str(alert.get("rule", "?"))] += 1


def explain(store: Store, incidents: list[Incident]) -> None:
    """Why each incident never paged in time, from its alert's audit trail."""
    alerts = store.alerts(limit=100_000)
    for incident in incidents:
        if incident.paged_in_time:
            continue
        if not math.isnan(incident.paged):
            incident.why = f"paged late ({incident.latency:.1f} s)"
            continue
        mine = [a for a in alerts if a.device_id == incident.device_id and a.rule in RULES[incident.kind]]
        if not mine:
            incident.why = "no alert raised"
            continue
        rows = [row for a in mine for row in store.alert_log(a.id)]
        actions = {row.action for row in rows}
        held = {str((row.detail or {}).get("why", "")) for row in rows if row.action == "held"}
        if "cap_per_hour" in held:
            incident.why = "held by the hourly cap"
        elif held:
            incident.why = f"held ({', '.join(sorted(held))})"
        elif "unrouted" in actions:
            incident.why = "alert not routed"
        elif "paged" in actions:
            incident.why = "paged, not delivered within 10 s"
        else:
            incident.why = "alert raised, not paged"


# ---------------------------------------------------------------------- one rate


async def drive(pub: Publisher, traffic: Traffic, run: RateRun, receiver: Receiver, seconds: float) -> None:
    """Telemetry at ``run.rate`` and the incidents on their schedule, until ``seconds`` have
    passed and every incident is paged or 10 s old."""
    start = time.monotonic()
    every = seconds / max(1, len(run.incidents))
    due_at = [start + (i + 0.5) * every for i in range(len(run.incidents))]
    fired = 0
    offered = 0
    hard_stop = start + seconds + PAGE_WITHIN + 5.0
    while True:
        now = time.monotonic()
        if now >= start + seconds:
            match_pages(run, receiver.unique("webhook"))
            if all(i.settled(now) for i in run.incidents) or now >= hard_stop:
                break
        while fired < len(run.incidents) and now >= due_at[fired]:
            incident = run.incidents[fired]
            sim = traffic.sims[incident.device_id]
            messages = sim.press() if isinstance(sim, SosSim) else sim.alarm() if isinstance(sim, SmokeSim) else []
            incident.published = time.monotonic()  # the clock starts as the payload goes out
            for m in messages:
                pub.publish(m.topic, m.payload)
            fired += 1
        due = int((now - start) * run.rate) - offered
        while due > 0:
            for m in traffic.routine():
                pub.publish(m.topic, m.payload)
                due -= 1
                offered += 1
        await asyncio.sleep(max(0.0, TICK - (time.monotonic() - now)))
    run.published = offered
    run.seconds = time.monotonic() - start
    await pub.wait_acked(within=10.0)


async def one_rate(args: argparse.Namespace, rate: float, seed: int) -> RateRun:
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-paging-"))
    broker = Mosquitto(extra_config=["max_queued_messages 0"])  # slowness shows as latency, not loss
    receiver = Receiver()
    broker.start()
    gateway: subprocess.Popen[bytes] | None = None
    watch: StoreWatch | None = None
    pub: Publisher | None = None
    try:
        site = paging_site(tmp, broker, receiver, args.households, args.buildings, args.cap_lifted)
        config_path = tmp / "bench-site.toml"
        config_path.write_text(render_toml(site), encoding="utf-8")
        # The gateway reads the file; the same site, parsed here, says where its store is.
        config = parse_config(site, str(config_path), tmp, environ={SECRET_ENV: receiver.webhook_secret})
        gateway = start_gateway(config_path, tmp / "gateway.log", env={SECRET_ENV: receiver.webhook_secret})
        watch = StoreWatch(config.store_path)
        watch.open(timeout=60.0)
        traffic = Traffic(config, random.Random(seed), garbage_share=0.0)
        run = RateRun(rate, plan_incidents(config, dict(traffic.sims), args.incidents))
        pub = Publisher(broker.host, broker.port)
        await warm_up(gateway, watch, pub, traffic.doors[0], tmp / "gateway.log", within=60)

        await drive(pub, traffic, run, receiver, args.seconds)
        match_pages(run, receiver.unique("webhook"))
        run.rejected = len(receiver.rejected)
        run.duplicates = receiver.duplicates
        run.rss = peak_rss_mib(gateway.pid)
        store = Store(config.store_path)
        try:
            explain(store, run.incidents)
        finally:
            store.close()
        never = sum(1 for i in run.incidents if not i.paged_in_time)
        print(
            f"  {rate:g} msg/s: {run.published / run.seconds:.0f} msg/s published for {run.seconds:.1f} s "
            f"(incidents over {args.seconds:g} s, then until each is paged or 10 s old), "
            f"{len(run.incidents)} incidents, {never} never paged; gateway RSS {run.rss:.0f} MiB",
            flush=True,
        )
        if args.keep:
            print(f"  kept: {tmp} (config, store, gateway.log)")
        return run
    finally:
        if pub is not None:
            pub.close()
        stop_process(gateway)
        if watch is not None:
            watch.close()
        receiver.close()
        broker.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", tmp)


# ---------------------------------------------------------------------- report


def ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value * 1000:.1f}"


def report(runs: list[RateRun]) -> None:
    print()
    print(f"{'rate msg/s':>10}  {'incident':<8}  {'n':>3}  {'paged':>5}  {'p50 ms':>8}  {'p99 ms':>8}  "
          f"{'max ms':>8}  {'grouped':>7}  {'alone p50':>9}  {'alone p99':>9}  never paged within 10 s")  # fmt: skip
    for run in runs:
        for kind in KINDS:
            mine = [i for i in run.incidents if i.kind == kind]
            lat = sorted(i.latency for i in mine if i.paged_in_time)
            alone = sorted(i.latency for i in mine if i.paged_in_time and not i.grouped)
            never = [i for i in mine if not i.paged_in_time]
            whys = Counter(i.why for i in never)
            why = ", ".join(f"{w}: {n}" for w, n in whys.most_common())
            print(
                f"{run.rate:>10g}  {LABEL[kind]:<8}  {len(mine):>3}  {len(lat):>5}  {ms(percentile(lat, 0.50)):>8}  "
                f"{ms(percentile(lat, 0.99)):>8}  {ms(max(lat, default=math.nan)):>8}  {len(lat) - len(alone):>7}  "
                f"{ms(percentile(alone, 0.50)):>9}  {ms(percentile(alone, 0.99)):>9}  {len(never)}"
                + (f" ({why})" if why else "")
            )
    print(
        "grouped: first paged in one message with other alarms to the same person, sent at the end of the "
        "storm's group window (notify.group_window, 5 s: the third and later alarm to one person within it); "
        "alone: paged in a message of its own"
    )
    if any(i.why == "held by the hourly cap" for run in runs for i in run.incidents):
        print(
            "held by the hourly cap: the person on duty had had notify.cap_per_hour messages on this channel "
            "within the hour, so the gateway put the alert in a 【告警汇总】 summary sent when the hour frees up"
        )
    print()
    for kind in KINDS:
        page = next((i for run in runs for i in run.incidents if i.kind == kind and i.title), None)
        if page is not None:
            print(f"{LABEL[kind]} page as received: {page.title}")
    for run in runs:
        other = ", ".join(f"{rule} {n}" for rule, n in run.other_pages.most_common()) or "none"
        print(
            f"{run.rate:>10g} msg/s: other pages {other}; summaries {run.summaries}; grouped messages {run.grouped}; "
            f"refused by the receiver {run.rejected}; duplicates {run.duplicates}"
        )


async def bench(args: argparse.Namespace) -> int:
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.households % args.buildings:
        raise SystemExit("--households must be a multiple of --buildings (every building gets as many)")
    cap = "1000 (--cap-lifted)" if args.cap_lifted else "12 (the default)"
    every = args.seconds / max(1, args.incidents)
    print("SenseGate paging bench")
    print(f"site       {args.households} households in {args.buildings} buildings, the gateway in its own process")
    print(f"on duty    {ON_DUTY['name']} ({ON_DUTY['id']}, {ON_DUTY['role']}), all day")
    print(f"ladder     emergency, tier 0 → on_duty over the signed webhook {CHANNEL!r}")
    print("           (an HTTP receiver on 127.0.0.1 checking signatures); severities 1 and 2")
    print(f"cap        notify.cap_per_hour {cap}")
    print(
        f"incidents  {args.incidents} per rate, SOS and smoke in turn, one every {every:.1f} s; "
        f"telemetry at {', '.join(f'{r:g}' for r in rates)} msg/s",
        flush=True,
    )
    if args.incidents // 2 > args.buildings:
        print("  note: more smoke alarms than buildings: a second one in a building is also a confirmed fire")
    runs = [await one_rate(args, rate, args.seed) for rate in rates]
    report(runs)
    return 0 if all(i.paged_in_time for run in runs for i in run.incidents) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rates", default="200,1000", help="telemetry rates to run, msg/s, comma-separated (200,1000)")
    p.add_argument("--seconds", type=float, default=40.0, help="seconds of incidents per rate (default 40)")
    p.add_argument("--incidents", type=int, default=16, help="incidents per rate, SOS and smoke in turn (default 16)")
    p.add_argument("--households", type=int, default=200, help="households in the site (default 200)")
    p.add_argument("--buildings", type=int, default=10, help="buildings they are in (default 10)")
    p.add_argument("--cap-lifted", action="store_true", help="set notify.cap_per_hour = 1000 (the default is 12)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep each rate's temp dir (config, store, gateway log)")
    args = p.parse_args(argv)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
