"""The garbage collector's pause at a large site, with and without ``gateway.runtime.freeze_heap``.

    .venv/bin/python bench/bench_gc.py [--households 5000]

Builds the gateway for compare.py's site (``Gateway(config)``: config, registry, rule context,
alert path; no broker is contacted) and times a full collection (``gc.collect()``) before and
after ``freeze_heap()``, which ``sensegate run`` calls once the gateway is built. CPython runs a
full collection on its own now and then; without the freeze it walks every object of the site,
and the event loop (ingest, rules, the alarm's way to MQTT) stands still meanwhile.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import compare  # noqa: E402

from gateway.runtime import Gateway, freeze_heap  # noqa: E402
from gateway.site.config import parse_config  # noqa: E402


def full_collection_ms(rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--households", type=int, default=5000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        site = compare.bench_site(args.households, Path(tmp) / "data")
        site["mqtt"] = {"host": "127.0.0.1", "port": 1}
        gateway = Gateway(parse_config(site, file="<bench>"))
        tracked = len(gc.get_objects())
        before = full_collection_ms()
        freeze_heap()
        after = full_collection_ms()
        devices = len(gateway.registry.devices)
        print(f"site: {args.households} households, {devices} devices; {tracked:,} objects tracked")
        print(f"full collection   {before:7.1f} ms   (best of 3)")
        print(f"after freeze_heap {after:7.1f} ms   ({gc.get_freeze_count():,} objects frozen)")
        gateway.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
