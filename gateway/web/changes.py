"""The board's change counter: what the runtime bumps and the console's event streams wait on.
Its own module, so that a gateway without the console imports no web framework for it."""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    """Something on the board may have changed: a version number and a wake-up for the event
    streams. ``bump`` runs on the event loop (the runtime hands it over from other threads)."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen: int, within: float) -> None:
        """Until the version differs from ``seen``, or ``within`` seconds."""
        if self.version != seen:
            return
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()
