"""Outputs: where stored events are forwarded. Each sink is thin (docs/influxdb.md).

A sink knows how to connect, write one batch and close, and says which failures are worth
retrying. The runtime's forwarder owns the durable queue, batching, back-off and metrics.

Contract::

    open()        set up clients and pools; no network I/O, so a server down at start-up is
                  not an error here
    write(batch)  all-or-nothing from the caller's view; returns when the server accepted it,
                  else raises
                    RetryableSinkError  keep the batch and try again later (unreachable, timeout,
                                        5xx, 429, auth or other config problems)
                    RejectedBatchError  the server refused the data itself (HTTP 400 / 422),
                                        or the batch is too large (413: halve it);
                                        the message carries the server's reason
                  and never anything else. An empty batch is a no-op.
    close()       release connections; safe to call twice

Add a sink: a module here with a class that fits ``Sink``, one line in ``SINKS``, an
integration test against a real server in tests/sinks/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.models import Event
from gateway.outputs.sinks.influx_v1 import InfluxV1Sink
from gateway.outputs.sinks.influx_v2 import InfluxV2Sink


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


SINKS: dict[str, type[Sink]] = {
    "influxdb_v1": InfluxV1Sink,
    "influxdb_v2": InfluxV2Sink,
}

__all__ = ["SINKS", "InfluxV1Sink", "InfluxV2Sink", "Sink"]
