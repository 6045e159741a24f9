"""Memory benchmark: where the gateway's resident memory goes on a large site, stage by stage.

    .venv/bin/python bench/bench_memory.py                             # 5,000 households
    .venv/bin/python bench/bench_memory.py --households 1000 --no-process
    .venv/bin/python bench/bench_memory.py --against /tmp/mem-base     # another checkout, side by side

The site is ``bench/compare.py``'s: a ``simulators.block.demo_site`` of ``--households``
households (100 a building, four zigbee2mqtt devices each, 20,150 devices at 5,000), both rule
packs, store ``synchronous = "full"``, an ``influxdb_v1`` output. Each checkout (this one and
every ``--against``) is measured in turn, ``--rounds`` times, alternating:

1. **Stages**, in a fresh interpreter of that checkout (its own code on ``PYTHONPATH``), VmRSS
   from /proc after each: the bare interpreter; the imports ``sensegate run`` makes
   (``gateway.cli.app``, ``gateway.runtime``); the config as ``run`` loads it (read, validate,
   cross-check: ``load_config``, or ``load_for_run`` where the checkout has it);
   the ``Registry``; the store and the ``AlertPath`` (rule engine, context, people); its
   ``catch_up`` (which arms the absence timers of every device and household: the engine as it
   idles); **devices seen**: a check-in of every device fed to the engine (what it keeps per
   device once it has had an event of it: a gateway that has run for a day); then **site
   timers**: real events, decoded by the registry from the simulators' payloads and fed to the
   engine at one instant — every door opened, every radar reporting someone in the room, then
   falling — until ``--timers`` deadlines are pending or the site has no more to arm (at 5,000
   households 27,748: the site's every device, elders' flats and public doors); then
   **timers**: check-ins of devices the site does not know, until ``--timers`` (100,000) are
   pending — each arms one ``device_silent`` deadline, the entry a known device's check-in
   leaves, plus its own id string (~60 B) a known device shares with the site. The engine's
   changed entries are taken (``dirty()``) every 500 events, as the gateway's saves do.
   **RSS a timer** is the growth over the top-up, and over all timers armed since every
   device was seen, per timer.
2. **Allocation sites**: the same stages again in another fresh interpreter under
   ``tracemalloc`` (traced from after the imports; its own cost would distort the RSS figures,
   hence the second process): the ``--top`` lines holding most of what is still allocated.
3. **The process**: ``python -m gateway.cli run -c site.toml`` against a real Mosquitto and
   InfluxDB 1.x (``tests.servers``), once it has stored a probe message (it is connected);
   VmRSS and VmHWM after ``--idle`` seconds of quiet, and the CPU it used in them.

Figures are MiB (2^20 bytes). The machine's load average is printed with them: other processes
compete for the page cache, not for a process's resident set, but a loaded box makes the
process figure's start-up noisier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHILD = sys.argv[1:2] == ["--child"]  # the measured interpreter: the checkout's code comes from PYTHONPATH
if str(ROOT) not in sys.path and not CHILD:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
STAGES = ("bare", "imports", "config", "registry", "alert path", "timers armed", "devices seen")


def rss_mib(pid: int | str = "self", key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- the site


def write_site(site: dict[str, Any], path: Path, mqtt: tuple[str, int], influx_url: str) -> None:
    from simulators.block import render_toml

    site = dict(site)
    site["mqtt"] = {**site["mqtt"], "host": mqtt[0], "port": mqtt[1]}
    site["outputs"] = [
        {"type": "influxdb_v1", "name": "influx", "url": influx_url, "database": "bench", "create_database": True}
    ]
    path.write_text(render_toml(site), encoding="utf-8")
    path.chmod(0o600)


def timer_traffic(site: dict[str, Any], path: Path) -> list[tuple[str, bytes]]:
    """The messages the child feeds, one per line (topic TAB payload in hex): a check-in of every
    device (so the engine has seen each), a line ``-``, then the messages that arm timers: every
    door opened, every radar seeing someone stay in its room, then every radar reporting a fall.
    Written here, so the measured interpreter imports no simulator. Returns a door's check-in,
    the probe of the process measurement."""
    from gateway.site.config import parse_config
    from simulators.devices import DoorSim, FallSim, simulators_for

    config = parse_config(site, "bench-site.toml", path.parent)
    sims = simulators_for(config.devices, config.mqtt, seed=1)
    doors = [s for s in sims.values() if isinstance(s, DoorSim)]
    radars = [s for s in sims.values() if isinstance(s, FallSim)]
    probe = [(m.topic, m.payload) for m in doors[0].check_in()]
    with path.open("w", encoding="utf-8") as f:
        for m in (m for s in sims.values() for m in s.check_in()):
            f.write(f"{m.topic}\t{m.payload.hex()}\n")
        f.write("-\n")
        for batch in ([d.open() for d in doors], [r.residence() for r in radars], [r.fall() for r in radars]):
            for messages in batch:
                for m in messages:
                    f.write(f"{m.topic}\t{m.payload.hex()}\n")
    return probe


# ---------------------------------------------------------------------- inside the measured interpreter


def child(config_path: str, traffic_path: str, target: int, trace: int) -> None:
    """Runs in a fresh interpreter of the checkout measured: prints one JSON object."""
    out: dict[str, Any] = {"rss": {"bare": rss_mib()}}
    import gc

    import gateway.cli.app
    import gateway.runtime

    out["rss"]["imports"] = rss_mib()
    if trace:
        import tracemalloc

        tracemalloc.start(1)
    from gateway.alerts.path import AlertPath
    from gateway.clock import SystemClock
    from gateway.site.config import load_config, site_rules
    from gateway.site.registry import Registry

    # As `run` loads it: checkouts since load_for_run rebuild it in fresh memory.
    config = getattr(gateway.cli.app, "load_for_run", load_config)(config_path)
    gc.collect()
    out["rss"]["config"] = rss_mib()
    out["devices"] = len(config.devices)
    registry = Registry(config)
    gc.collect()
    out["rss"]["registry"] = rss_mib()
    clock = SystemClock()
    store = gateway.runtime.open_store(config)
    alerts = AlertPath(registry, store, clock, config.topic_prefix, site_rules(config), config.alerts.repeat_window)
    gc.collect()
    out["rss"]["alert path"] = rss_mib()
    alerts.catch_up()
    gc.collect()
    out["rss"]["timers armed"] = rss_mib()
    engine = alerts.engine
    out["primed"] = len(engine.timers())
    import dataclasses

    from gateway.errors import PayloadError

    t = clock.now()
    seq = 1_000_000
    # The gateway saves (and so empties) the engine's changed entries every minute: at 1k msg/s
    # a set of 20,000 keys or more, which the entries hold anyway (1–4 MiB of set). This empties
    # it every 500 events, lest a set of 100,000 changed keys be counted as timers.
    with open(traffic_path, encoding="utf-8") as f:
        for line in f:
            if line == "-\n":  # every device has reported
                engine.dirty()
                gc.collect()
                out["rss"]["devices seen"] = rss_mib()
                out["seen"] = len(engine.timers())
                if not target:
                    break
                continue
            topic, payload = line.rstrip("\n").split("\t")
            try:
                events = registry.decode(topic, bytes.fromhex(payload), t)
            except PayloadError:
                continue
            for ev in events:
                seq += 1
                engine.feed(dataclasses.replace(ev, seq=seq))
                if seq % 500 == 0:
                    engine.dirty()
            if seq % 500 == 0 and "seen" in out and len(engine.timers()) >= target:
                break
    if target:
        engine.dirty()
        gc.collect()
        out["rss"]["site timers"] = rss_mib()
        out["site timers"] = len(engine.timers())
        # The site has no more subjects to arm (at 5,000 households ~27,700 deadlines): the rest
        # are check-ins of devices it does not know, ids shaped like its own, which the engine
        # supervises like any (device_silent): one deadline each, the same entry a known
        # device's check-in leaves, with nothing kept per device besides.
        from gateway.models import Event, Family, Kind, Location

        pending, n = out["site timers"], 0
        while pending < target:
            for _ in range(min(2000, target - pending)):
                seq += 1
                device = f"{900 + n // 1000}-9-{n % 1000:03d}-smoke"
                engine.feed(Event(device, Family.SMOKE, Kind.HEARTBEAT, t, t, location=Location(), seq=seq))
                n += 1
            engine.dirty()
            pending = len(engine.timers())
        gc.collect()
        out["rss"]["timers"] = rss_mib()
        out["timers"] = pending
    if trace:
        import tracemalloc

        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snapshot.statistics("lineno")
        out["traced"] = sum(s.size for s in stats) / 2**20
        out["top"] = [
            (f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}", s.size / 2**20, s.count)
            for s in stats[:trace]
        ]
    store.close()
    print(json.dumps(out))


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1].lstrip("/")
    cwd = os.getcwd() + "/"
    return filename[len(cwd) :] if filename.startswith(cwd) else filename


def run_child(tree: Path, config: Path, traffic: Path, target: int, trace: int) -> dict[str, Any]:
    data = config.parent / "data"
    shutil.rmtree(data, ignore_errors=True)  # a fresh store each time: catch_up arms the timers
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(config), str(traffic), str(target), str(trace)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the stage measurement failed in {tree}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- the real process


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def run_process(
    tree: Path, config_path: Path, broker: tuple[str, int], probe: list[tuple[str, bytes]], idle: float
) -> dict[str, float]:
    """``sensegate run`` of ``tree`` on the site: VmRSS after ``idle`` quiet seconds once connected."""
    from bench.bench_ingest import Publisher, stop_process

    data = config_path.parent / "data"
    shutil.rmtree(data, ignore_errors=True)
    log = config_path.parent / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "run", "-c", str(config_path)],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    pub: Publisher | None = None
    try:
        pub = Publisher(*broker)
        store = data / "store.sqlite3"
        started = time.monotonic()
        while stored(store) == 0:  # stored: it has subscribed, so it is connected
            if proc.poll() is not None or time.monotonic() - started > 180:
                raise SystemExit(f"the gateway of {tree} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            for topic, payload in probe:
                pub.publish(topic, payload)
            time.sleep(0.5)
        time.sleep(2.0)  # its probe forwarded, its first checkpoint written
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        return {
            "rss": rss_mib(proc.pid),
            "hwm": rss_mib(proc.pid, "VmHWM"),
            "cpu": 100 * cpu,
            "start": time.monotonic() - started - idle,
        }
    finally:
        if pub is not None:
            pub.close()
        stop_process(proc)


def stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1.0) as conn:
            row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


# ---------------------------------------------------------------------- the report


def spread(values: Sequence[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    mid = sorted(values)[len(values) // 2]
    return f"{mid:6.1f}" + (f" ({lo:.1f}–{hi:.1f})" if hi - lo >= 0.05 else "")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--households", type=int, default=5000, help="households (100 a building; default 5000)")
    p.add_argument("--timers", type=int, default=100_000, help="pending deadlines to reach; 0: none (default 100000)")
    p.add_argument("--against", type=Path, action="append", default=[], help="another checkout to measure too")
    p.add_argument("--rounds", type=int, default=2, help="measurements of each checkout, alternating (default 2)")
    p.add_argument("--idle", type=float, default=10.0, help="quiet seconds before the process is read (default 10)")
    p.add_argument("--top", type=int, default=15, help="allocation sites to list; 0: no tracemalloc pass")
    p.add_argument("--no-process", action="store_true", help="stages only: no broker, no gateway process")
    args = p.parse_args(argv)

    from tests.servers import InfluxDB1, Mosquitto

    trees = [ROOT, *(t.resolve() for t in args.against)]
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-mem-"))
    broker: Mosquitto | None = None
    influx: InfluxDB1 | None = None
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from compare import bench_site  # its site, exactly; imported here: a child measures bare imports

        site = bench_site(args.households, tmp / "data")
        traffic = tmp / "traffic.tsv"
        probe = timer_traffic(site, traffic)
        mqtt, influx_url = ("127.0.0.1", 1883), "http://127.0.0.1:8086"
        if not args.no_process:
            broker = Mosquitto()
            broker.start()
            influx = InfluxDB1()
            influx.start()
            mqtt, influx_url = (broker.host, broker.port), influx.url
        config = tmp / "bench-site.toml"
        write_site(site, config, mqtt, influx_url)
        print(
            f"SenseGate memory bench: {args.households} households, {config.stat().st_size / 2**20:.1f} MiB of TOML, "
            f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}"
        )
        stages: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
        process: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
        for _ in range(args.rounds):
            for tree in trees:
                stages[tree].append(run_child(tree, config, traffic, args.timers, 0))
                if not args.no_process:
                    process[tree].append(run_process(tree, config, mqtt, probe, args.idle))
        traced = {t: run_child(t, config, traffic, args.timers, args.top) for t in trees} if args.top else {}
        report(trees, stages, process, traced, args)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        return 0
    finally:
        if broker is not None:
            broker.cleanup()
        if influx is not None:
            influx.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    trees: list[Path],
    stages: dict[Path, list[dict[str, Any]]],
    process: dict[Path, list[dict[str, float]]],
    traced: dict[Path, dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    names = [str(t) for t in trees]
    width = max(24, *(len(n) + 2 for n in names))
    first = stages[trees[0]][0]
    print(f"\n{first['devices']} devices; VmRSS in MiB, median (min–max) of {args.rounds} fresh interpreters each\n")
    print(f"{'stage':<24}" + "".join(f"{n:>{width}}" for n in names))
    rows = list(STAGES) + (["site timers", "timers"] if args.timers else [])
    for stage in rows:
        cells = [spread([r["rss"].get(stage, float("nan")) for r in stages[t]]) for t in trees]
        print(f"{stage:<24}" + "".join(f"{c:>{width}}" for c in cells))
    cells = []
    for t in trees:
        per = [(r["rss"]["timers armed"] - r["rss"]["alert path"]) / max(1, r["primed"]) * 2**20 for r in stages[t]]
        cells.append(f"{sorted(per)[len(per) // 2]:.0f} B")
    print(f"{'  timers at start':<24}" + "".join(f"{stages[t][0]['primed']:>{width},}" for t in trees))
    # Part of it can land in holes an earlier stage's garbage left (the older the checkout,
    # the more holes): compare the stages' totals, not only this.
    print(f"{'  RSS a timer at start':<24}" + "".join(f"{c:>{width}}" for c in cells))
    if args.timers:
        print(f"{'  timers, the site':<24}" + "".join(f"{stages[t][0]['site timers']:>{width},}" for t in trees))
        print(f"{'  timers, all armed':<24}" + "".join(f"{stages[t][0]['timers']:>{width},}" for t in trees))
        for label, since, count in (("top-up", "site timers", "site timers"), ("since seen", "devices seen", "seen")):
            cells = []
            for t in trees:
                per = [
                    (r["rss"]["timers"] - r["rss"][since]) / max(1, r["timers"] - r[count]) * 2**20 for r in stages[t]
                ]
                cells.append(f"{sorted(per)[len(per) // 2]:.0f} B")
            print(f"{'  RSS a timer, ' + label:<24}" + "".join(f"{c:>{width}}" for c in cells))
    if any(process.values()):
        print()
        for key, label in (("rss", "process idle VmRSS"), ("hwm", "process VmHWM"), ("cpu", "idle CPU %")):
            cells = [spread([r[key] for r in process[t]]) for t in trees]
            print(f"{label:<24}" + "".join(f"{c:>{width}}" for c in cells))
        cells = [spread([r["start"] for r in process[t]]) + " s" for t in trees]
        print(f"{'start to connected':<24}" + "".join(f"{c:>{width}}" for c in cells))
    for t in trees:
        if t not in traced:
            continue
        r = traced[t]
        print(f"\n{t}: {r['traced']:.1f} MiB allocated since the imports (tracemalloc), the largest lines:")
        for where, mib, count in r["top"]:
            print(f"  {mib:7.2f} MiB {count:>9,}  {where}")


if __name__ == "__main__":
    sys.exit(main())
