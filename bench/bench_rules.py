"""Rule-evaluation cost: events/s through the engine, and memory for many pending timers.

Not a test: figures to watch. Both shipped packs (elderly_care, smart_community) run on one of
the sites below.

    .venv/bin/python bench/bench_rules.py                     # estate: 2,000 devices, 200,000 events
    .venv/bin/python bench/bench_rules.py --devices 2000 --events 200000 --timers 100000
    .venv/bin/python bench/bench_rules.py --site demo --compare --timers 0
    .venv/bin/python bench/bench_rules.py --site demo --buildings 50 --households 100 --compare
    .venv/bin/python bench/bench_rules.py --site demo --profile 20 --timers 0
    .venv/bin/python bench/bench_rules.py --site compare --timers 0 --repeat 3   # the gateway's load in compare.py

Three sites: ``estate``, a synthetic estate of households with the four usual devices (door
contact, smoke detector, fall radar, SOS button), a third of them elders living alone;
``demo``, the demo block (``simulators.block.demo_site``, any size) with the runtime's own
context (``gateway.alerts.path.rule_context``) and its simulated routine (``BlockActivity``)
decoded by the registry from the real payloads; ``compare``, the site and traffic of
bench/compare.py (5,000 households, 20,150 devices; doors, radars, check-ins of random devices,
a smoke alarm in a thousand) decoded by the registry at ``--rate`` messages a second from 10:00,
as the gateway sees it there. Its first ``--warm`` events are fed untimed: a gateway that has
run a while has seen most devices before (what the engine keeps per device is built at a
device's first event), while compare.py's short runs see many for the first time.

1. **throughput**: traffic fed in time order through ``Engine.feed``, with ``advance`` between
   events as the gateway's timer task does; events/s and µs per event over the run (CPU time) (decisions
   included; the first ``advance``, which arms every absence timer, is not timed). With
   ``--compare``, the engine evaluating every rule for every event (``indexed=False``) and the
   indexed one run alternately on the same events, ``--repeat`` times each, and must decide
   the same; ``--profile N`` prints the N costliest functions of one indexed run (cProfile).
2. **timers**: enough lone-elder households that the absence / held / sequence rules keep
   ``--timers`` deadlines pending; memory measured with tracemalloc (Python heap growth from
   before the engine was built) and the size of the exported state as the store would hold it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import hashlib
import json
import pickle
import pstats
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_rules import Context, Decision, DeviceInfo, Engine, ResidentInfo, RuleSet, load_rules
from gateway.alerts.path import rule_context
from gateway.models import Event, Family, Kind, Location, Scalar
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from simulators.activity import BlockActivity
from simulators.block import demo_site

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
DEVICES_PER_HOME = 4


def estate(households: int, rng: random.Random) -> Context:
    devices = []
    for h in range(households):
        building, number = str(h // 200 + 1), str(101 + h % 200)
        hid = f"{building}-1-{number}"
        alone = rng.random() < 1 / 3
        residents = (ResidentInfo(f"r{h}", f"居民{h}", alone, rng.choice(["high", "medium", "low"])),)
        for family, room in (
            (Family.DOOR, "入户门"),
            (Family.SMOKE, "厨房"),
            (Family.FALL, "卫生间"),
            (Family.SOS, "卧室"),
        ):
            devices.append(
                DeviceInfo(
                    f"{hid}-{family.value}",
                    family,
                    household=hid,
                    building=building,
                    location=Location(building, "1", number, room),
                    residents=residents,
                    report_interval=3600.0,
                )
            )
    return Context(devices)


def traffic(context: Context, n: int, rng: random.Random) -> list[Event]:
    """``n`` events over a day, mostly routine, about one alarm per thousand."""
    devices = context.sorted_devices()
    routine: dict[Family, list[tuple[Kind, dict[str, Scalar]]]] = {
        Family.DOOR: [(Kind.DOOR_OPENED, {}), (Kind.DOOR_CLOSED, {}), (Kind.BATTERY, {"battery": 90.0})],
        Family.FALL: [
            (Kind.MOTION, {"state": "moving"}),
            (Kind.MOTION, {"level": 30}),
            (Kind.PRESENCE, {"present": True}),
            (Kind.PRESENCE, {"present": False}),
        ],
        Family.SMOKE: [(Kind.SMOKE_CLEAR, {}), (Kind.BATTERY, {"battery": 80.0})],
        Family.SOS: [(Kind.BATTERY, {"battery": 95.0})],
    }
    alarms = {Family.SMOKE: Kind.SMOKE_ALARM, Family.FALL: Kind.FALL_DETECTED, Family.SOS: Kind.SOS_PRESSED}
    times = sorted(T0 + rng.uniform(0, 86_400) for _ in range(n))
    events = []
    for seq, t in enumerate(times, 1):
        d = rng.choice(devices)
        assert d.family is not None
        values: dict[str, Scalar]
        if d.family in alarms and rng.random() < 0.001:
            kind, values = alarms[d.family], {}
        else:
            kind, values = rng.choice(routine[d.family])
        events.append(Event(d.id, d.family, kind, t, t, location=d.location, values=values, seq=seq))
    return events


def demo_traffic(buildings: int, households: int, n: int, seed: int) -> tuple[Context, list[Event], str]:
    """The demo block's routine from 07:00 for a day or ``n`` events, whichever ends first, as
    the registry decodes it; the context is the runtime's (``rule_context``)."""
    config = parse_config(demo_site(buildings, households))
    registry = Registry(config)
    start = T0 + 7 * 3600
    activity = BlockActivity(config, random.Random(seed), start_time=start, speed=1.0)
    events: list[Event] = []
    for emission in activity.emissions(until=86_400):
        for ev in registry.decode(emission.topic, emission.payload, start + emission.when):
            events.append(dataclasses.replace(ev, seq=len(events) + 1))
        if len(events) >= n:
            del events[n:]
            break
    hours = (events[-1].received_at - start) / 3600 if events else 0.0
    return rule_context(registry), events, f"{len(config.households)} households, 07:00 + {hours:.1f} h"


def compare_traffic(households: int, n: int, rate: float, seed: int) -> tuple[Context, list[Event], str]:
    """bench/compare.py's site and its plan of ``n`` messages, sent at ``rate`` a second from
    10:00 and decoded by the registry; the context is the runtime's."""
    from bench.compare import Z2MTraffic, bench_site  # paho and the test servers: only here

    config = parse_config(bench_site(households, Path(tempfile.gettempdir()) / "bench-rules"))
    registry = Registry(config)
    plan = Z2MTraffic(config, seed).plan(n)
    start = T0 + 10 * 3600
    events: list[Event] = []
    for i, (topic, payload) in enumerate(zip(plan.topics, plan.payloads, strict=True)):
        for ev in registry.decode(topic, payload, start + i / rate):
            events.append(dataclasses.replace(ev, seq=len(events) + 1))
    what = f"{len(config.households)} households, {n} messages at {rate:.0f}/s from 10:00"
    return rule_context(registry), events, what


def site_traffic(args: argparse.Namespace) -> tuple[Context, list[Event], str]:
    """The site's context and traffic; with ``--traffic-cache``, read from that file when it
    holds the same arguments' traffic, else made and written there (two versions of the engine
    compared run after run need not decode the same messages each time)."""
    if args.traffic_cache is None:
        return make_traffic(args)
    key = (args.site, args.devices, args.buildings, args.households, args.households_total, args.events, args.rate)
    key += (args.seed,)
    with contextlib.suppress(FileNotFoundError, EOFError, pickle.UnpicklingError):
        with args.traffic_cache.open("rb") as f:
            cached = pickle.load(f)
        if cached[0] == key:
            devices, events, what = cached[1]
            return Context(devices), events, what
    context, events, what = make_traffic(args)
    with args.traffic_cache.open("wb") as f:
        pickle.dump((key, (list(context.devices.values()), events, what)), f, protocol=pickle.HIGHEST_PROTOCOL)
    return context, events, what


def make_traffic(args: argparse.Namespace) -> tuple[Context, list[Event], str]:
    if args.site == "compare":
        return compare_traffic(args.households_total, args.events, args.rate, args.seed)
    if args.site == "demo":
        return demo_traffic(args.buildings, args.households, args.events, args.seed)
    rng = random.Random(args.seed)
    context = estate(args.devices // DEVICES_PER_HOME, rng)
    return context, traffic(context, args.events, rng), f"{args.devices // DEVICES_PER_HOME} households, a day"


def run(
    rules: RuleSet, context: Context, events: Sequence[Event], indexed: bool, warm: int = 0
) -> tuple[float, list[Decision], Engine]:
    """CPU seconds (this thread's: a neighbour taking the core away is not counted) to feed
    ``events[warm:]`` (with an ``advance`` after each), the decisions, the engine; the first
    ``warm`` events are fed before the clock starts."""
    engine = Engine(rules, None, context, indexed=indexed)
    decisions = engine.advance(events[0].event_time)  # arms the absence timers: not timed
    for ev in events[:warm]:
        decisions += engine.feed(ev)
        decisions += engine.advance(ev.event_time)
    start = time.thread_time()
    for ev in events[warm:]:
        decisions += engine.feed(ev)
        decisions += engine.advance(ev.event_time)
    elapsed = time.thread_time() - start
    return elapsed, decisions, engine


def digest(decisions: Sequence[Decision], engine: Engine) -> str:
    """A short hash of every decision (all its fields) and of the engine's state at the end."""
    text = repr([dataclasses.astuple(d) for d in decisions]) + json.dumps(engine.export(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def device_cost(rules: RuleSet, context: Context, events: Sequence[Event]) -> str:
    """What the indexed engine keeps per device that sent an event (subjects, durations,
    condition bits): the time to work it out (once per device, at its first event; part of the
    indexed runs above) and the heap it takes (tracemalloc, in a second, untimed pass)."""
    first: dict[str, Event] = {}
    for ev in events:
        first.setdefault(ev.device_id, ev)
    engine = Engine(rules, None, context)
    start = time.perf_counter()
    for ev in first.values():
        engine.rules_for(ev)
    elapsed = time.perf_counter() - start
    engine = Engine(rules, None, context)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for ev in first.values():
        engine.rules_for(ev)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n = max(len(first), 1)
    return (
        f"{len(first)} devices, worked out in {elapsed:.2f} s ({elapsed / n * 1e6:.0f} µs/device), "
        f"{grown / 2**20:.1f} MiB ({grown / n:.0f} B/device)"
    )


def bench_throughput(args: argparse.Namespace) -> None:
    context, events, what = site_traffic(args)
    rules = load_rules("elderly_care", "smart_community")
    # As the gateway does once it has started (gateway.runtime.freeze_heap): what lives as long
    # as the process (here the traffic too, a million objects) is out of the collector's sight,
    # so a full collection walks what the engine made, as it would in the gateway.
    gc.collect()
    gc.freeze()
    warm = min(args.warm, len(events) - 1) if args.site == "compare" else 0
    n = len(events) - warm
    print(
        f"throughput     site {args.site}: {len(context.devices)} devices, {what}, {n} events timed"
        f"{f' after {warm} untimed' if warm else ''}, {len(rules)} rules"
    )
    modes = (False, True) if args.compare else (True,)
    times: dict[bool, list[float]] = {m: [] for m in modes}
    # Per engine: its decisions and a digest of them and of the state it ended with, to tell
    # that two versions of the engine decided the same (run one and the other).
    outcome: dict[bool, tuple[list[Decision], str]] = {}
    for r in range(args.repeat):
        # Alternate which goes first, so that a neighbour's burst of load hits both alike.
        for indexed in modes if r % 2 == 0 else modes[::-1]:
            outcome.pop(indexed, None)  # a run's leftovers would make the next one's collections slower
            gc.collect()
            elapsed, decisions, engine = run(rules, context, events, indexed, warm)
            times[indexed].append(elapsed)
            outcome[indexed] = (decisions, digest(decisions, engine))
            del engine
    for indexed in modes:
        best, median = min(times[indexed]), statistics.median(times[indexed])
        name = "indexed" if indexed else "every rule"
        print(
            f"  {name:10}  best {n / best:8.0f} events/s {best / n * 1e6:6.1f} µs/event"
            f"   median {n / median:8.0f} events/s {median / n * 1e6:6.1f} µs/event   "
            f"({len(outcome[indexed][0])} decisions, digest {outcome[indexed][1]}; "
            f"runs {', '.join(f'{t:.2f}' for t in times[indexed])} s)"
        )
    if args.compare:
        ratios = [a / b for a, b in zip(times[False], times[True], strict=True)]
        same = outcome[False] == outcome[True]
        print(
            f"  ratio       every rule / indexed time: best {min(times[False]) / min(times[True]):.2f}, "
            f"median {statistics.median(times[False]) / statistics.median(times[True]):.2f}, "
            f"per repetition {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"decisions and state {'identical' if same else 'DIFFER'}"
        )
        if not same:
            raise SystemExit(1)
        print(f"  kept per device by the indexed engine: {device_cost(rules, context, events)}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, rules, context, events, True, warm)
        print(f"  cProfile of one indexed run, top {args.profile} by own time:")
        pstats.Stats(profile, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(args.profile)


def bench_timers(target: int, seed: int) -> None:
    rng = random.Random(seed)
    rules = load_rules("elderly_care", "smart_community")
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    households = 1000
    while True:
        context = estate(households, rng)
        engine = Engine(rules, None, context)
        engine.advance(T0 + 9 * 3600)  # 09:00: absence timers start for every subject
        pending = len(engine.timers())
        if pending >= target or households > 400_000:
            break
        households = int(households * target / max(pending, 1) * 1.05) + 1
        del engine, context
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    state = engine.export()
    stored = sum(len(k) + len(json.dumps(v, separators=(",", ":"))) for k, v in state)
    print(
        f"timers         {pending:10d} pending over {households} households: heap {heap / 2**20:.1f} MiB "
        f"({heap / pending:.0f} B/timer incl. the estate), state {len(state)} entries, "
        f"{stored / 2**20:.1f} MiB as stored"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--site", choices=("estate", "demo", "compare"), default="estate")
    p.add_argument("--devices", type=int, default=2000, help="estate: devices (4 per household)")
    p.add_argument("--buildings", type=int, default=2, help="demo: buildings")
    p.add_argument("--households", type=int, default=20, help="demo: households per building")
    p.add_argument("--events", type=int, default=200_000, help="at most this many events (compare: messages)")
    p.add_argument("--households-total", type=int, default=5000, help="compare: households (compare.py's default)")
    p.add_argument("--rate", type=float, default=1000.0, help="compare: messages a second")
    p.add_argument("--warm", type=int, default=100_000, help="compare: events fed before the clock starts")
    p.add_argument("--compare", action="store_true", help="every rule (indexed=False) against the indexed engine")
    p.add_argument("--repeat", type=int, default=1, help="runs of each engine (alternating)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile an indexed run: top N")
    p.add_argument("--timers", type=int, default=100_000, help="0: skip the timers part")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--traffic-cache", type=Path, default=None, help="keep the decoded traffic in this file")
    args = p.parse_args()
    bench_throughput(args)
    if args.timers:
        bench_timers(args.timers, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
