"""Which commits are fsync'd (docs/store.md, "What is fsync'd"): what the gateway acknowledges or
answers to someone (events before their PUBACK, a person's action), always; state derived from
what is stored (the rules' saves and checkpoints, a forwarder's and the publisher's
bookkeeping, the summaries' passes, the housekeeping), never on its own. Counted as the kernel
sees them: the store runs in a child process under strace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each step is one store call; the child writes a marker line after each.
CHILD = """
import os, sys
from gateway.models import Family, Kind
from gateway.store import Store
from gateway.store.alerts import REWRITE_FROM
from tests.gateway.factories import event

store = Store(sys.argv[1], synchronous=sys.argv[2])

def mark(name):
    os.write(1, ("@@" + name + "\\n").encode())

mark("open")
stored = store.append([event(Kind.SOS_PRESSED, Family.SOS)], {"influx": None}, ingest_keys=[("1|t|p", 1.0)])
mark("events")
store.save_alerts([], [], cursor=("alerts", stored[0].seq), rule_state=[("k", {"v": 1})], durable=False)
mark("rules")
store.save_alerts([], [("mqtt", "t", "p", False)], now=1.0, durable=False)
done = store.outbox_batch("mqtt")
mark("rules-outbox")
store.outbox_done([m.id for m in done])
mark("published")
store.delivered("influx", [stored[0].seq])
mark("forwarded")
store.summarise()
assert store.meta("device_state.seq") == str(stored[0].seq), "the pass wrote nothing"
mark("summarised")
rows = [("rule:r:%05d" % i, '{"v": 1}') for i in range(REWRITE_FROM)]
store.save_rule_state(rows, ("rules", stored[0].seq))
assert store.meta("rule_state.table") == "1", "not rewritten"
mark("rules-rewritten")
assert store.forget_ingest_keys(older_than=2e9, keep=0) == 1, "no key forgotten"
store.forget_commands(older_than=2e9)
mark("housekeeping")
store.save_alerts([], [], cursor=("alerts", stored[0].seq), rule_state=[("k", {"v": 2})])
mark("person")
store.append([event(Kind.HEARTBEAT, Family.SOS)], {"influx": None})
mark("events-again")
store.close()
mark("closed")
"""


def syncs_per_step(tmp_path: Path, synchronous: str) -> dict[str, int]:
    """fsync + fdatasync calls of the child between one marker and the next."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (scripts/test installs it)")
    trace = tmp_path / "trace.txt"
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,write", "-o", str(trace),
         sys.executable, "-c", CHILD, str(tmp_path / "store.sqlite3"), synchronous],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 and b"ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.decode(errors='replace').strip()[-200:]}")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    counts: dict[str, int] = {}
    after = "start"  # the last marker written: a sync belongs to the step the next one ends
    for line in trace.read_text().splitlines():
        marker = re.search(r'write\(1, "@@([a-z-]+)\\n"', line)
        if marker:
            after = marker.group(1)
        elif re.search(r"\b(fsync|fdatasync)\(", line):
            step = STEPS[STEPS.index(after) + 1]
            counts[step] = counts.get(step, 0) + 1
    return counts


STEPS = [
    "start", "open", "events", "rules", "rules-outbox", "published", "forwarded", "summarised", "rules-rewritten",
    "housekeeping", "person", "events-again", "closed",
]  # fmt: skip


def test_events_and_a_persons_action_are_fsyncd_derived_state_is_not(tmp_path: Path) -> None:
    syncs = syncs_per_step(tmp_path, "full")
    assert syncs.get("events", 0) >= 1, syncs  # before the broker's PUBACK
    assert syncs.get("person", 0) >= 1, syncs  # answered as done
    for derived in ("rules", "rules-outbox", "published", "forwarded", "summarised", "rules-rewritten", "housekeeping"):
        assert syncs.get(derived, 0) == 0, (derived, syncs)
    # The next fsync'd commit carries the derived ones with it (one log): events again sync.
    assert syncs.get("events-again", 0) >= 1, syncs


def test_synchronous_normal_syncs_no_commit(tmp_path: Path) -> None:
    """The setting docs/store.md warns about: nothing is fsync'd at commit, not even events."""
    syncs = syncs_per_step(tmp_path, "normal")
    for step in ("events", "rules", "person", "events-again"):
        assert syncs.get(step, 0) == 0, (step, syncs)
