"""Store benchmark: the CPU one event costs to be stored (``Store.append``) and forwarded (the
forwarder's read-back, line protocol and gzip as the InfluxDB v1 sink does it), no network.

    .venv/bin/python bench/bench_store.py                            # this tree, normal and full
    .venv/bin/python bench/bench_store.py --against /tmp/store-base  # and another checkout, in turn

Traffic: ``compare.py``'s (a ``demo_site`` of ``--households`` households, zigbee2mqtt state
messages from the simulators with their OTA block, one in 1,000 a smoke alarm and its clear),
decoded by the gateway's ``Registry`` as the MQTT ingest does, 1 ms apart. Each configuration
runs in a child process of its own (a fresh store in a temp dir, managed as the gateway does)
and, per simulated second (``--rate`` messages, about 1.8 events each):

1. **append**: the events in batches of ``--batch`` (20 is what a 5 ms group commit holds at
   1,000 msg/s), each with its messages' ingest keys and last-payload digests, as
   ``MqttIngest`` passes them;
2. **forward**: ``Forwarder.step`` until the output is drained, into a real ``InfluxV1Sink``
   whose HTTP request is a stub answering 204: the read-back and ``delivered``, line protocol
   and gzip. **read** is ``step`` less the sink's ``_write_blocking``; **encode** is the latter.

It prints CPU µs per event for each stage (``time.process_time``: user + system of the whole
process, so fsync's kernel time counts); bytes written to storage per 1,000 events (from
``/proc/self/io``) and what that makes in a day at 1,000 msg/s; with ``--fsyncs`` (needs
strace) the fsync/fdatasync calls per 1,000 events of a second, untimed run; with ``--pages N``
the WAL frames of N commits per table and index, and what checkpoints would write of them for
a few WAL sizes (another untimed run); and a digest of every line-protocol body sent, which
must be the same for two checkouts given the same arguments (the same points, byte for byte).

With ``--against DIR`` the children alternate between this tree and ``DIR`` (another checkout,
e.g. ``git worktree add /tmp/store-base <commit>``) ``--rounds`` times; the summary gives each
stage's median and range, and the ratio of the medians. Quote the load average with the figures:
other processes share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("append", "read", "encode")


# ---------------------------------------------------------------------- the child: one measurement


def child(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    import urllib3

    from bench.compare import Z2MTraffic, bench_site
    from gateway.clock import VirtualClock
    from gateway.ingest.retained import payload_digest
    from gateway.outputs.forwarder import Forwarder
    from gateway.outputs.sinks.influx_v1 import InfluxV1Sink
    from gateway.site.config import parse_config
    from gateway.site.registry import Registry
    from gateway.store import Store

    class StubbedSink(InfluxV1Sink):
        """The real sink, with the HTTP request answered 204 at once; times its blocking part."""

        def __init__(self) -> None:
            super().__init__("influx", "http://127.0.0.1:9", "bench", gateway_id="bench", site="bench")
            self.bodies: list[bytes] = []
            self.cpu = 0.0

        def _write_blocking(self, events: Any) -> None:
            start = time.process_time()
            super()._write_blocking(events)
            self.cpu += time.process_time() - start

        def _request(
            self, method: str, url: str, body: bytes | None, headers: dict[str, str]
        ) -> tuple[int, bytes, urllib3.HTTPHeaderDict]:
            assert body is not None
            self.bodies.append(body)
            return 204, b"", urllib3.HTTPHeaderDict()

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    config = parse_config(bench_site(args.households, tmp))
    registry = Registry(config)
    traffic = Z2MTraffic(config, seed=args.seed)
    plan = traffic.plan(args.warmup + args.messages)
    t0 = 1_750_000_000.0
    messages = []  # (events, keys, payloads) per batch
    batch: list[Any] = []
    keys: list[tuple[str, float]] = []
    digests: list[tuple[str, str]] = []
    for i, (topic, payload) in enumerate(zip(plan.topics, plan.payloads, strict=True)):
        now = t0 + i / 1000
        batch += registry.decode(topic, payload, now)
        # The ingest's key of a message (gateway/ingest/mqtt.py): packet id, topic, payload.
        key = hashlib.blake2b(b"%d\0%s\0%s" % (i % 65535 + 1, topic.encode(), payload), digest_size=12)
        keys.append((key.hexdigest(), now))
        digests.append((topic, payload_digest(payload)))
        if len(batch) >= args.batch:
            messages.append((i, batch, keys, digests))
            batch, keys, digests = [], [], []
    if batch:
        messages.append((len(plan.topics) - 1, batch, keys, digests))

    store = Store(tmp / "store.sqlite3", synchronous=args.sync)
    store.manage_disk(lambda: 0)
    outputs: dict[str, frozenset[str] | None] = {"influx": None}
    sink = StubbedSink()

    forwarder = Forwarder("influx", sink, store, VirtualClock(t0), batch_size=1000)
    loop = asyncio.new_event_loop()
    # The set-up (site, simulators, the decoded traffic) out of the collector's sight: a full
    # collection would otherwise scan it, in whichever stage it happens to fall.
    gc.collect()
    gc.freeze()
    gc_cpu = _GcClock()
    gc.callbacks.append(gc_cpu)
    cpu = dict.fromkeys(STAGES, 0.0)
    in_gc = dict.fromkeys(("append", "forward"), 0.0)
    written = dict.fromkeys(("append", "forward"), 0)
    events = 0
    next_forward = args.rate
    timed = False
    wal = tmp / "store.sqlite3-wal"
    commits: list[list[int]] = []  # --pages: the pages each timed commit wrote to the WAL
    for last_message, evs, ks, ds in messages:
        if not timed and last_message >= args.warmup:
            timed = True
            loop.run_until_complete(_drain(forwarder))
            sink.bodies.clear()
            if args.pages:
                store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                store._db.execute("PRAGMA wal_autocheckpoint = 0")  # keep every frame to read
        wal_at = wal.stat().st_size if args.pages and timed else 0
        io0 = _io_written()
        gc0 = gc_cpu.spent
        start = time.process_time()
        store.append(evs, outputs, ks, {}, [], ks[-1][1], [], ds)
        if args.pages and timed and len(commits) < args.pages:
            commits.append(_wal_pages(wal, wal_at, store._page_size))
        if timed:
            cpu["append"] += time.process_time() - start
            in_gc["append"] += gc_cpu.spent - gc0
            written["append"] += _io_written() - io0
            events += len(evs)
        if last_message >= next_forward or last_message == messages[-1][0]:
            # The forwarder wakes once a second (flush_interval) and drains what is pending.
            next_forward += args.rate
            io0 = _io_written()
            gc0 = gc_cpu.spent
            sink.cpu = 0.0
            start = time.process_time()
            loop.run_until_complete(_drain(forwarder))
            spent = time.process_time() - start
            if timed:
                in_gc["forward"] += gc_cpu.spent - gc0
                cpu["encode"] += sink.cpu
                cpu["read"] += spent - sink.cpu
                written["forward"] += _io_written() - io0
    loop.close()
    assert store.pending_count("influx") == 0
    pages = _page_breakdown(store, commits) if args.pages else {}
    body_digest = hashlib.sha256()
    for body in sink.bodies:
        body_digest.update(gzip.decompress(body))
    counters = store.counters()
    store.close()
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()
    return {
        "events": events,
        "events_per_message": plan.events[-1] / len(plan),
        "cpu_us": {k: v / events * 1e6 for k, v in cpu.items()},
        "gc_us": {k: v / events * 1e6 for k, v in in_gc.items()},
        "written_per_1k": {k: v / events * 1000 for k, v in written.items()},
        "lp_sha256": body_digest.hexdigest()[:16],
        "counters": {k: v for k, v in counters.items() if not k.startswith("forwarded")},
        "pages": pages,
    }


def _wal_pages(wal: Path, offset: int, page_size: int) -> list[int]:
    """The page numbers of the WAL frames written after ``offset`` (a frame: a 24-byte header
    whose first 4 bytes are the page number, then the page; the file starts with a 32-byte header)."""
    frame = 24 + page_size
    pages = []
    with open(wal, "rb") as f:
        f.seek(max(offset, 32))
        while header := f.read(24):
            if len(header) < 24:
                break
            pages.append(int.from_bytes(header[:4], "big"))
            f.seek(page_size, 1)
    assert (max(offset, 32) - 32) % frame == 0
    return pages


def _page_breakdown(store: Any, commits: list[list[int]]) -> dict[str, Any]:
    """What the commits wrote to the WAL, per table or index (SQLite's ``dbstat``), and what
    checkpoints would then write to the database file for a few WAL sizes: the distinct pages
    of the commits between two checkpoints (SQLite checkpoints after the commit that takes the
    WAL to ``wal_autocheckpoint`` pages)."""
    owner = dict(store._db.execute("SELECT pageno, name FROM dbstat").fetchall())
    per_table: dict[str, int] = {}
    for pages in commits:
        for page in pages:
            name = owner.get(page, "(free list)")
            per_table[name] = per_table.get(name, 0) + 1
    checkpoint = {}
    for wal_mib in (1, 2, 4, 8, 16):
        limit = wal_mib * 2**20 // store._page_size
        written = in_wal = 0
        distinct: set[int] = set()
        for pages in commits:
            in_wal += len(pages)
            distinct.update(pages)
            if in_wal >= limit:
                written += len(distinct)
                in_wal = 0
                distinct = set()
        checkpoint[str(wal_mib)] = (written + len(distinct)) / len(commits)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "commits": len(commits),
        "wal_per_commit": {k: v / len(commits) for k, v in sorted(per_table.items(), key=lambda kv: -kv[1])},
        "checkpoint_per_commit": checkpoint,
    }


class _GcClock:
    """CPU time spent in the garbage collector (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.spent += time.process_time() - self._start


async def _drain(forwarder: Any) -> None:
    while await forwarder.step():
        pass


def _io_written() -> int:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------- the parent: runs, summary


def run_child(tree: Path, sync: str, args: argparse.Namespace, strace: bool = False, pages: int = 0) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--root",
        str(tree),
        "--sync",
        sync,
        "--households",
        str(args.households),
        "--messages",
        str(args.messages),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--rate",
        str(args.rate),
        "--seed",
        str(args.seed),
        "--pages",
        str(pages),
    ]
    trace = None
    if strace:
        trace = Path(tempfile.mkstemp(prefix="bench-store-strace-")[1])
        cmd = ["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o", str(trace), *cmd]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if trace is not None:
        result["fsyncs"] = _strace_calls(trace.read_text())
        trace.unlink()
    return result


def _strace_calls(summary: str) -> int:
    calls = 0
    for line in summary.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
    return calls


def _stage(result: dict[str, Any], stage: str) -> float:
    cpu: dict[str, float] = result["cpu_us"]
    return sum(cpu.values()) if stage == "total" else cpu[stage]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--households", type=int, default=5000)
    p.add_argument("--messages", type=int, default=12_000, help="timed messages (≈1.8 events each)")
    p.add_argument("--warmup", type=int, default=2000, help="untimed messages first")
    p.add_argument("--batch", type=int, default=20, help="events per append (a group commit)")
    p.add_argument("--rate", type=int, default=1000, help="messages per forwarder wake-up (1 s)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--sync", default="normal,full", help="synchronous settings to run")
    p.add_argument("--against", type=Path, help="another checkout to run in turn with this one")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fsyncs", action="store_true", help="count fsyncs in an extra run under strace")
    p.add_argument(
        "--pages", type=int, default=0, metavar="N", help="an extra run: the pages each of N commits writes, by table"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    trees = {"this": ROOT}
    if args.against is not None:
        trees = {"base": args.against.resolve(), "this": ROOT}
    syncs = args.sync.split(",")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    print(
        f"load average {os.getloadavg()[0]:.2f}; {args.households} households, {args.messages} messages, "
        f"batches of {args.batch} events, forwarder every {args.rate} messages"
    )
    for round_ in range(args.rounds):
        for sync in syncs:
            for label, tree in trees.items():
                r = run_child(tree, sync, args)
                results.setdefault((label, sync), []).append(r)
                cpu = r["cpu_us"]
                print(
                    f"round {round_ + 1} {label:4} {sync:6} "
                    + " ".join(f"{s} {cpu[s]:6.1f}" for s in STAGES)
                    + f"  total {sum(cpu.values()):6.1f} µs/event (in gc: append {r['gc_us']['append']:.1f}, "
                    f"forward {r['gc_us']['forward']:.1f})  lp {r['lp_sha256']}",
                    flush=True,
                )
    if args.rounds:
        print(f"load average {os.getloadavg()[0]:.2f}")
        _summary(args, trees, syncs, results)
    if args.fsyncs:
        print()
        for sync in syncs:
            for label, tree in trees.items():
                r = run_child(tree, sync, args, strace=True)
                print(
                    f"  fsyncs {label:4} {sync:6} {r['fsyncs'] / r['events'] * 1000:.1f} per 1,000 events "
                    f"({r['fsyncs']} for {r['events']} events, warm-up and set-up included)"
                )
    if args.pages:
        for label, tree in trees.items():
            r = run_child(tree, syncs[0], args, pages=args.pages)["pages"]
            wal = r["wal_per_commit"]
            print()
            print(
                f"  pages {label:4} WAL frames per commit of {args.batch} events ({r['commits']} commits): "
                f"{sum(wal.values()):.1f}"
            )
            print("    " + ", ".join(f"{name} {n:.1f}" for name, n in wal.items()))
            print(
                "    checkpoint writes per commit, by WAL size: "
                + ", ".join(f"{mib} MiB {n:.1f}" for mib, n in r["checkpoint_per_commit"].items())
            )


def _summary(
    args: argparse.Namespace,
    trees: dict[str, Path],
    syncs: list[str],
    results: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    print()
    print("CPU µs per event, median [min–max] of the rounds")
    for sync in syncs:
        for label in trees:
            runs = results[(label, sync)]
            cells = []
            for stage in (*STAGES, "total"):
                xs = [_stage(r, stage) for r in runs]
                cells.append(f"{stage} {statistics.median(xs):6.1f} [{min(xs):.1f}–{max(xs):.1f}]")
            w = runs[-1]["written_per_1k"]
            per_day = sum(w.values()) * runs[-1]["events_per_message"] * 86_400 / 2**30  # 1,000 msg/s
            print(
                f"  {label:4} {sync:6} "
                + "  ".join(cells)
                + f"  written/1k events: append {w['append'] / 1024:.0f} KiB, forward {w['forward'] / 1024:.0f} KiB"
                f" (≈ {per_day:,.0f} GiB a day at 1,000 msg/s)"
            )
        if len(trees) == 2:
            base, this = results[("base", sync)], results[("this", sync)]
            ratios = []
            for stage in (*STAGES, "total"):
                before = statistics.median(_stage(r, stage) for r in base)
                ratios.append(f"{stage} {before / statistics.median(_stage(r, stage) for r in this):.2f}×")
            print(f"  base/this {sync:6} " + "  ".join(ratios))
            same = {r["lp_sha256"] for r in base + this}
            counters = [json.dumps(runs[0]["counters"], sort_keys=True) for runs in (base, this)]
            print(
                f"  line protocol {'identical' if len(same) == 1 else 'DIFFERS: ' + ', '.join(sorted(same))}; "
                f"counters {'identical' if counters[0] == counters[1] else 'DIFFER: ' + ' vs '.join(counters)}"
            )


if __name__ == "__main__":
    main()
