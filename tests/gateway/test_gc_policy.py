"""The garbage collector's policy for a running gateway (``gateway.runtime.freeze_heap``): what
start-up built and what survives a full collection is frozen, so that the next full collection
walks only what came since; cyclic garbage made later is still collected, and a frozen cycle
that dies is found by ``sweep_frozen``. CPython runs no full collection of its own: the
housekeeping's ``Collections`` does, on its clock. Run in child processes: the policy is
process-wide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import gc
from gateway.runtime import freeze_heap, sweep_frozen

class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it

assert sweep_frozen() == 0  # nothing to sweep before the policy is on
started = [Node() for _ in range(1000)]  # what start-up built
freeze_heap()
assert gc.get_freeze_count() >= 1000

seen_later = [Node() for _ in range(5000)]  # devices first seen, alive from now on
gc.collect()  # a full collection: its survivors join the frozen ones
assert len(gc.get_objects()) < 1000, len(gc.get_objects())
frozen = gc.get_freeze_count()
assert frozen >= 6000, frozen

garbage = [Node() for _ in range(300)]  # made after the freeze, dropped: still collected
del garbage
found = gc.collect()
assert found >= 300, found

del seen_later  # frozen cycles that die are not collected until the sweep
assert gc.collect() == 0
swept = sweep_frozen()
assert swept >= 5000, swept
assert gc.get_freeze_count() >= 1000  # frozen again afterwards
print("ok")
"""


HOUSEKEEPING = """
import asyncio
import gc
from gateway.clock import VirtualClock
from gateway.runtime import FROZEN_SWEEP_INTERVAL, OLD_COLLECTION_INTERVAL, Collections, freeze_heap

class Node:
    def __init__(self):
        self.me = self

full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2 else None)
freeze_heap()
clock = VirtualClock()
collections = Collections(clock)
before = len(full)

# Devices first seen: enough survivors of young collections for several of CPython's own full
# collections (each would walk all of them). None runs.
seen_later = [Node() for _ in range(300_000)]
assert len(full) == before, len(full) - before

old_garbage = [Node() for _ in range(300)]
gc.collect(1)  # survived the young collections: old now
del old_garbage
assert gc.collect(1) == 0  # a young collection does not see it
assert collections.step() == 0 and len(full) == before  # not due yet

asyncio.run(clock.advance(OLD_COLLECTION_INTERVAL))
frozen = gc.get_freeze_count()
assert collections.step() >= 300  # the housekeeping's full collection frees it
assert len(full) == before + 1
assert gc.get_freeze_count() >= frozen + 300_000  # and freezes the survivors

del seen_later  # frozen: freed by the sweep, when it is due
asyncio.run(clock.advance(OLD_COLLECTION_INTERVAL))
assert collections.step() < 300_000
asyncio.run(clock.advance(FROZEN_SWEEP_INTERVAL))
assert collections.step() >= 300_000
print("ok")
"""


def _run(child: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_survivors_of_a_full_collection_are_frozen_and_the_sweep_frees_dead_cycles() -> None:
    _run(CHILD)


def test_full_collections_come_from_the_housekeeping_not_from_cpython() -> None:
    _run(HOUSEKEEPING)
