"""A 24-hour InfluxDB outage, simulated: what the store keeps, what gives way, and its byte budget.

    .venv/bin/python bench/outage_24h.py --hours 24 --rate 2 --max-bytes 512MiB

The demo block (``simulators.block.demo_site``: 2 buildings × 20 households, 167 devices) sends
``--rate`` MQTT messages a second for ``--hours`` of simulated time — check-ins of every device
and doors opening and closing — and an alarm every ``--alarm-every`` minutes, while the one
output is down the whole time. Every payload comes from the simulators and is decoded by the
gateway's registry, then committed in batches to a store kept as the gateway keeps it
(``manage_disk``: the bound checked on every write, the reserve). No broker, no clock: the
events carry the simulated times, so a day takes a minute or two.

It prints the store's byte budget (bytes an event takes on disk, how many hours of this traffic
``max_bytes`` holds), what was dropped (oldest undelivered telemetry, counted), that every alarm
was kept, and the largest the store's files (WAL included) ever were. Exit status 1 if the bound
was broken or an alarm lost. Not part of CI; docs/reliability.md quotes a run.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import ByteSize, TypeAdapter  # noqa: E402

from gateway.errors import PayloadError  # noqa: E402
from gateway.models import Event, Lane  # noqa: E402
from gateway.site.config import parse_config  # noqa: E402
from gateway.site.registry import Registry  # noqa: E402
from gateway.store import Store  # noqa: E402
from gateway.store.disk import SHM_BYTES  # noqa: E402
from simulators.block import demo_site  # noqa: E402
from simulators.devices import DoorSim, FallSim, Message, SmokeSim, SosSim, simulators_for  # noqa: E402

MIB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate", type=float, default=2.0, help="messages a second from the block (default 2)")
    parser.add_argument("--alarm-every", type=float, default=30.0, help="minutes between alarms (default 30)")
    parser.add_argument("--max-bytes", default="512MiB", help="store.max_bytes (default 512MiB)")
    parser.add_argument("--reserve-bytes", default=None, help="store.reserve_bytes (default: 1/16 of the bound)")
    parser.add_argument("--batch", type=int, default=500, help="events per commit (store.commit_batch)")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    size = TypeAdapter(ByteSize)
    max_bytes = int(size.validate_python(args.max_bytes))
    reserve = None if args.reserve_bytes is None else int(size.validate_python(args.reserve_bytes))
    config = parse_config(demo_site(), file="<bench>")
    registry = Registry(config)
    sims = simulators_for(config.devices, config.mqtt, seed=args.seed)
    rng = random.Random(args.seed)
    doors = [s for s in sims.values() if isinstance(s, DoorSim)]
    alarms = [s for s in sims.values() if isinstance(s, SosSim | SmokeSim | FallSim)]
    everyone = itertools.cycle(sorted(sims.values(), key=lambda s: s.id))

    where = args.dir or Path(tempfile.mkdtemp(prefix="sensegate-outage-"))
    store = Store(where / "store.sqlite3", max_bytes, "normal", reserve_bytes=reserve)
    seq = [0]
    store.manage_disk(lambda: seq[0])  # the alert path keeps up: it has seen every event
    outputs: dict[str, frozenset[str] | None] = {"influx": None}  # down for the whole run

    t0 = 1_767_225_600.0  # 2026-01-01 00:00 (UTC+8 08:00)
    seconds = args.hours * 3600
    messages = int(seconds * args.rate)
    alarm_every = args.alarm_every * 60
    next_alarm = alarm_every / 2
    batch: list[Event] = []
    sent_alarms: list[Event] = []
    events = 0
    peak = 0
    started = time.monotonic()

    def commit() -> None:
        nonlocal peak
        stored = store.append(batch, outputs)
        if stored:
            seq[0] = stored[-1].seq
        sent_alarms.extend(e for e in stored if e.lane is Lane.ALARM)
        batch.clear()
        peak = max(peak, store.disk_bytes())

    for n in range(messages):
        at = t0 + n / args.rate
        out: list[Message]
        if at - t0 >= next_alarm:
            next_alarm += alarm_every
            sim = rng.choice(alarms)
            out = sim.alarm() if isinstance(sim, SmokeSim) else sim.fall() if isinstance(sim, FallSim) else sim.press()
        elif n % 3:
            door = rng.choice(doors)
            out = door.open() if rng.random() < 0.5 else door.close()
        else:
            out = next(everyone).check_in()
        for message in out:
            try:
                decoded = registry.decode(message.topic, message.payload, at)
            except PayloadError:
                continue
            batch.extend(decoded)
            events += len(decoded)
        if len(batch) >= args.batch:
            commit()
    commit()
    took = time.monotonic() - started

    counters = store.counters()
    kept = store.event_count()
    live = store.used_bytes()
    per_event = live / kept if kept else 0.0
    data = max_bytes - 2 * store.wal_bytes - SHM_BYTES
    hours_held = data / per_event / (events / args.hours) if events and per_event else 0.0
    alarm_seqs = {e.seq for e in sent_alarms}
    left = {e.seq for e in store.events_after(0, limit=10**9) if e.seq in alarm_seqs}
    state = store.disk_state()
    print(f"outage          {args.hours:g} h with the output down; store in {where}")
    print(
        f"bound           max_bytes {max_bytes / MIB:.1f} MiB = data {data / MIB:.1f} MiB "
        f"+ WAL 2 × {store.wal_bytes / MIB:.2f} MiB + shared memory; "
        f"reserve {store.reserve_bytes / MIB:.1f} MiB beside it"
    )
    print(
        f"traffic         {args.rate:g} msg/s → {messages} messages, {events} events "
        f"({events / max(messages, 1):.2f} per message), {len(sent_alarms)} of them alarm-lane"
    )
    print(f"budget          {per_event:.0f} bytes per stored event (row, indexes, pending row, page slack)")
    print(
        f"holds           {data / per_event if per_event else 0:.0f} events "
        f"≈ {hours_held:.1f} h of this traffic before the oldest telemetry gives way"
    )
    print(
        f"end             {kept} events kept, {store.pending_count('influx')} pending, "
        f"dropped {counters.get('dropped', 0)} (oldest telemetry, counted), pruned {counters.get('pruned', 0)}"
    )
    print(f"alarm lane      {len(left)} of {len(sent_alarms)} events kept (falls, SOS, smoke, residence, tamper …)")
    ok_bound = peak <= max_bytes
    print(
        f"files           {state.store_bytes / MIB:.1f} MiB now (WAL {state.wal_bytes / MIB:.2f} MiB), "
        f"peak {peak / MIB:.1f} MiB: {'within' if ok_bound else 'ABOVE'} max_bytes"
    )
    print(f"time            {took:.0f} s for {args.hours:g} simulated hours ({events / took:.0f} events/s)")
    store.close()
    return 0 if ok_bound and len(left) == len(sent_alarms) else 1


if __name__ == "__main__":
    sys.exit(main())
