"""Rule-evaluation cost: events/s through the engine, and memory for many pending timers.

Not a test: figures to watch. Both shipped packs (elderly_care, smart_community) run on a
synthetic estate of households with the four usual devices (door contact, smoke detector,
fall radar, SOS button), a third of them elders living alone.

    .venv/bin/python bench/bench_rules.py                     # 2,000 devices, 200,000 events
    .venv/bin/python bench/bench_rules.py --devices 2000 --events 200000 --timers 100000

1. **throughput**: a day of mixed traffic (doors, radar motion and presence, check-ins, the
   odd alarm) fed in time order through ``Engine.feed``, with ``advance`` between events as the
   gateway's timer task does; events/s over the whole run (decisions included).
2. **timers**: enough lone-elder households that the absence / held / sequence rules keep
   ``--timers`` deadlines pending; memory measured with tracemalloc (Python heap growth from
   before the engine was built) and the size of the exported state as the store would hold it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_rules import Context, DeviceInfo, Engine, ResidentInfo, load_rules
from gateway.models import Event, Family, Kind, Location

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
    routine = {
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
        if d.family in alarms and rng.random() < 0.001:
            kind, values = alarms[d.family], {}
        else:
            kind, values = rng.choice(routine[d.family])
        events.append(Event(d.id, d.family, kind, t, t, location=d.location, values=values, seq=seq))
    return events


def bench_throughput(devices: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    context = estate(devices // DEVICES_PER_HOME, rng)
    rules = load_rules("elderly_care", "smart_community")
    events = traffic(context, n, rng)
    engine = Engine(rules, None, context)
    decisions = 0
    start = time.perf_counter()
    engine.advance(T0)
    for ev in events:
        decisions += len(engine.feed(ev))
        decisions += len(engine.advance(ev.event_time))
    decisions += len(engine.advance(T0 + 86_400))
    elapsed = time.perf_counter() - start
    print(
        f"throughput     {n / elapsed:10.0f} events/s  ({n} events, {len(context.devices)} devices, "
        f"{len(rules.rules)} rules, {decisions} decisions, {elapsed:.1f} s)"
    )


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
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--timers", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    bench_throughput(args.devices, args.events, args.seed)
    bench_timers(args.timers, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
