"""Injected time. Every component that needs "now" or "wait" takes a ``Clock``.

``SystemClock`` is the real one. ``VirtualClock`` lets tests run hours-long windows in
milliseconds: ``await clock.advance(3600)`` wakes every sleeper whose deadline has passed, in
deadline order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, epoch seconds (for timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (for intervals)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._origin = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._origin

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._ids), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order and letting each run."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            # Let woken tasks run (and maybe sleep again) before the next deadline.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)

    def next_wake(self) -> float | None:
        """The earliest deadline a sleeper still waits for (None: nobody is asleep), so a driver
        of the clock can stop exactly there."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, when: float) -> None:
        """Jump to an absolute time without waking anyone (for setting up a scenario)."""
        self._now = when


async def sleep_or_wake(clock: Clock, delay: float, wake: asyncio.Event) -> None:
    """Sleep ``delay`` on ``clock``, or less if ``wake`` is set meanwhile (a loop that has a next
    deadline and can be told of new work)."""
    sleeper = asyncio.ensure_future(clock.sleep(delay))
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        woken.cancel()


def yield_interpreter() -> None:
    """Let a thread that waits for the interpreter take it now. Not a wait (no time passes for
    any clock): a worker thread that computes holds the GIL until another thread has waited the
    switch interval (5 ms) for it, and every statement of an alarm's commit, every hand-over to
    the event loop, takes it again. Long computations off the loop call this between pieces."""
    time.sleep(0)
