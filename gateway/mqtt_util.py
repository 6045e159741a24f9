"""What aiomqtt does not expose: noticing at once that a connection has dropped.

aiomqtt 2.x learns of a lost connection through a private future (``Client._disconnected``).
Nothing public says so while the client sits idle, and a publish in flight keeps waiting for
its PUBACK until its timeout. Both the gateway's outbox publisher and the simulators need to
know at once, so the private attribute is read here, in one place, with a fallback (``None``)
should a later aiomqtt rename it.
"""

from __future__ import annotations

import asyncio

import aiomqtt


def connection_lost(client: aiomqtt.Client) -> asyncio.Future[None] | None:
    """The future aiomqtt completes when the connection ends, or ``None`` if it has none."""
    fut = getattr(client, "_disconnected", None)
    return fut if isinstance(fut, asyncio.Future) else None


def reason_lost(fut: asyncio.Future[None]) -> BaseException | None:
    """Why the connection ended. Reading it also stops asyncio from reporting the future's
    exception as "never retrieved" when aiomqtt's ``__aexit__`` skips it."""
    if not fut.done() or fut.cancelled():
        return None
    return fut.exception()
