"""Decoding cost: ``Registry.decode`` on the traffic of bench/compare.py, this tree against another.

Not a test: figures to watch. The site is compare.py's (``bench_site``: ``--households``
households of ``demo_site``, four zigbee2mqtt devices each) and the messages are its
``Z2MTraffic`` (zigbee2mqtt state messages from the simulators, with Z2M's ``update`` object),
so a figure here is the decoding share of a compare.py run.

    .venv/bin/python bench/bench_decode.py                     # this tree against main
    .venv/bin/python bench/bench_decode.py --old HEAD~3 --rounds 10 --messages 20000
    .venv/bin/python bench/bench_decode.py --old HEAD~2 --new HEAD~1   # one commit's share

1. The traffic is made once, here, and written to a temp dir with the site.
2. ``--old`` (and ``--new``, if given) is exported with ``git archive`` into the temp dir. Two worker processes, one on
   each tree (this file, run with the tree's root first on ``sys.path``), parse the site, build
   the registry and decode the traffic once (warm-up; then ``gc.freeze()``, as the gateway
   freezes what start-up built), and print a digest of what it decoded:
   every event's ``to_dict()``, or the error's type, reason and message. The two digests must
   be equal, or the run stops: a faster decoder that decodes differently is no result.
3. Each round, each worker decodes the whole traffic ``--passes`` times and reports µs per
   message of its fastest pass (the others are what the machine's neighbours took); the two
   take turns, the first of a round alternating, so a neighbour's load falls on both alike.

It prints both figures per round, and the ratio old/new: its median and its spread
(min–max over the rounds), with the load average before and after.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_322_400.0  # 2026-11-22T08:00:00+08:00: any fixed receive time


# ---------------------------------------------------------------------- the worker (either tree)


def worker(root: Path, data: Path) -> None:
    """Serve ``run`` requests on stdin: decode the traffic once, answer with µs per message."""
    sys.path.insert(0, str(root))
    from gateway.errors import PayloadError
    from gateway.site.config import parse_config
    from gateway.site.registry import Registry

    site = json.loads((data / "site.json").read_text(encoding="utf-8"))
    messages: list[tuple[str, bytes]] = pickle.loads((data / "traffic.pickle").read_bytes())
    registry = Registry(parse_config(site, "bench-site.toml", data))
    decode = registry.decode

    digest = hashlib.sha256()
    events = 0
    for topic, payload in messages:
        try:
            decoded = decode(topic, payload, NOW)
        except PayloadError as exc:
            digest.update(repr((type(exc).__name__, exc.reason, str(exc))).encode())
            continue
        events += len(decoded)
        digest.update(json.dumps([e.to_dict() for e in decoded], sort_keys=True).encode())
    print(f"{digest.hexdigest()} {events}", flush=True)
    gc.freeze()  # as the gateway does after start-up (gateway.runtime.freeze_heap): the site is out of the GC's sight

    for line in sys.stdin:
        command, _, passes = line.partition(" ")
        if command != "run":
            break
        best = math.inf
        for _ in range(int(passes)):
            started = time.perf_counter()
            for topic, payload in messages:
                try:  # noqa: SIM105 (contextlib.suppress would time a context manager per message too)
                    decode(topic, payload, NOW)
                except PayloadError:
                    pass
            best = min(best, time.perf_counter() - started)
        print(f"{best / len(messages) * 1e6:.4f}", flush=True)


# ---------------------------------------------------------------------- the parent


class Worker:
    def __init__(self, name: str, root: Path, data: Path) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(root), str(data)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        self.stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[str] = self.proc.stdout  # type: ignore[assignment]

    def line(self) -> str:
        text = self.stdout.readline()
        if not text:
            raise SystemExit(f"{self.name} worker died (exit {self.proc.wait()})")
        return text.strip()

    def run(self, passes: int) -> float:
        self.stdin.write(f"run {passes}\n")
        self.stdin.flush()
        return float(self.line())

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=30)


def make_traffic(households: int, messages: int, seed: int, data: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from bench.compare import Z2MTraffic, bench_site
    from gateway.site.config import parse_config

    site = bench_site(households, data / "data")
    config = parse_config(site, "bench-site.toml", data)
    plan = Z2MTraffic(config, seed).plan(messages)
    (data / "site.json").write_text(json.dumps(site), encoding="utf-8")
    (data / "traffic.pickle").write_bytes(pickle.dumps(list(zip(plan.topics, plan.payloads, strict=True))))
    size = sum(len(t.encode()) + len(p) for t, p in zip(plan.topics, plan.payloads, strict=True)) / len(plan)
    return {"devices": len(config.devices), "households": len(config.households), "size": size}


def export(revision: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", default="main", help="git revision to compare with (default main)")
    p.add_argument("--new", help="git revision to measure instead of this tree as it is")
    p.add_argument("--households", type=int, default=5000)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--passes", type=int, default=3, help="passes over the traffic a round; the fastest counts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", nargs=2, metavar=("ROOT", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return 0

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sensegate-decode-") as tmp:
        data = Path(tmp)
        facts = make_traffic(args.households, args.messages, args.seed, data)
        old_root = export(args.old, data / "old")
        new_root = ROOT if args.new is None else export(args.new, data / "new")
        old = Worker(f"old ({args.old})", old_root, data)
        new = Worker(f"new ({args.new or 'this tree'})", new_root, data)
        try:
            (old_digest, old_events), (new_digest, new_events) = old.line().split(), new.line().split()
            print(
                f"site: {facts['households']} households, {facts['devices']} devices; traffic: {args.messages} "
                f"zigbee2mqtt messages (compare.py's Z2MTraffic, seed {args.seed}), {facts['size']:.0f} B a message "
                f"with its topic, {int(new_events) / args.messages:.2f} events a message"
            )
            if (old_digest, old_events) != (new_digest, new_events):
                print(f"DIFFERENT: old decodes to {old_digest} ({old_events} events), new to {new_digest}")
                return 1
            print(f"decoded alike: sha256 {new_digest[:16]}… over every event's to_dict() and every error")
            print(f"{'round':>5}  {'old µs/msg':>10}  {'new µs/msg':>10}  {'old/new':>7}")
            olds, news, ratios = [], [], []
            for r in range(args.rounds):
                pair = (old, new) if r % 2 == 0 else (new, old)
                got = {w.name: w.run(args.passes) for w in pair}
                o, n = got[old.name], got[new.name]
                olds.append(o)
                news.append(n)
                ratios.append(o / n)
                print(f"{r + 1:>5}  {o:>10.2f}  {n:>10.2f}  {o / n:>7.2f}")
        finally:
            old.close()
            new.close()
    load_after = os.getloadavg()
    print(
        f"median: old {statistics.median(olds):.2f} µs/msg, new {statistics.median(news):.2f} µs/msg; old/new "
        f"{statistics.median(ratios):.2f} (spread {min(ratios):.2f}–{max(ratios):.2f} over {args.rounds} rounds)"
    )
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
