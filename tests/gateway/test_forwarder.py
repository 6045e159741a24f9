"""The forwarder's delivery rules, with an in-memory sink twin and a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.clock import VirtualClock
from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Event
from gateway.outputs.forwarder import Forwarder
from gateway.store import Store
from tests.gateway.factories import event


class MemorySink:
    """A sink twin: can be down, and rejects events whose values contain ``bad``."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.name = "mem"
        self.clock = clock
        self.down = False
        self.written: list[int] = []
        self.calls = 0
        self.call_times: list[float] = []

    async def open(self) -> None:
        pass

    async def write(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.clock is not None:
            self.call_times.append(self.clock.monotonic())
        if self.down:
            raise RetryableSinkError("connection refused")
        bad = [e.seq for e in events if "bad" in e.values]
        if bad:
            raise RejectedBatchError(f"partial write: field type conflict (seq {bad})")
        self.written.extend(e.seq for e in events)

    async def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.db")


async def test_delivers_in_batches_and_deletes_only_after_write(store: Store) -> None:
    sink = MemorySink()
    store.append([event() for _ in range(25)], {"mem": None})
    fwd = Forwarder("mem", sink, store, VirtualClock(), batch_size=10)
    assert await fwd.step() is True
    assert store.pending_count("mem") == 15
    await fwd.step()
    await fwd.step()
    assert sink.written == list(range(1, 26))
    assert store.pending_count("mem") == 0
    assert store.counters()["forwarded.mem"] == 25


async def test_outage_keeps_rows_backs_off_exponentially_then_delivers(store: Store) -> None:
    clock = VirtualClock()
    sink = MemorySink(clock)
    sink.down = True
    store.append([event() for _ in range(5)], {"mem": None})
    fwd = Forwarder("mem", sink, store, clock, batch_size=100, backoff_initial=1, backoff_max=8)
    task = asyncio.create_task(fwd.run())
    await clock.advance(0)
    for _ in range(8):
        await clock.advance(10)
    assert store.pending_count("mem") == 5  # nothing lost while down
    assert not fwd.healthy
    # Back-off doubles from 1 s up to the 8 s cap, each wait within ±20 % jitter.
    waits = [b - a for a, b in zip(sink.call_times, sink.call_times[1:], strict=False)]
    expected = [min(2.0**i, 8.0) for i in range(len(waits))]
    assert len(waits) >= 8
    for wait, nominal in zip(waits, expected, strict=True):
        assert 0.8 * nominal - 1e-9 <= wait <= 1.2 * nominal + 1e-9
    sink.down = False
    await clock.advance(10)
    assert store.pending_count("mem") == 0
    assert sink.written == [1, 2, 3, 4, 5]
    assert fwd.healthy
    assert store.counters()["retried.mem"] >= 4
    task.cancel()


async def test_rejected_batch_isolates_bad_events_into_dead_letters(store: Store) -> None:
    sink = MemorySink()
    events = [event() for _ in range(16)]
    events[5] = event(bad=1)
    events[11] = event(bad=1)
    store.append(events, {"mem": None})
    fwd = Forwarder("mem", sink, store, VirtualClock(), batch_size=100)
    await fwd.step()
    assert sorted(sink.written) == [s for s in range(1, 17) if s not in (6, 12)]
    assert store.pending_count("mem") == 0
    assert [d.seq for d in store.dead_letters("mem")] == [6, 12]
    assert "field type conflict" in store.dead_letters("mem")[0].reason
