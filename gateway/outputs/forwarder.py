"""Store-and-forward: drains each output's pending events from the store into its sink.

The sink is thin (connect, write a batch, close); this wrapper owns what makes delivery
trustworthy, the same for every output:

- batches of up to ``batch_size``, at most one partial batch per ``flush_interval``;
- rows are deleted only after the sink returned, i.e. the database confirmed;
- ``RetryableSinkError`` → capped exponential back-off with jitter, the batch stays pending;
- store calls are made on the event loop (a batch's select or delete takes milliseconds),
  which keeps the forwarder deterministic under a virtual clock;
- ``RejectedBatchError`` → the batch is split in halves until the offending events are
  isolated; those go to the dead-letter table with the database's reason, the rest are
  delivered. Writes are idempotent (see docs/influxdb.md), so re-sending a good half is safe.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from gateway.clock import Clock
from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.log import LogOnce
from gateway.models import Event
from gateway.outputs.sinks import Sink
from gateway.store import Store

log = logging.getLogger("sensegate.forwarder")


class Forwarder:
    def __init__(
        self,
        name: str,
        sink: Sink,
        store: Store,
        clock: Clock,
        *,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.sink = sink
        self.store = store
        self.clock = clock
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random(name)
        self.healthy = True
        self._log_once = LogOnce(log, clock)

    async def run(self) -> None:
        backoff = self.backoff_initial
        opened = False
        try:
            while True:
                try:
                    if not opened:
                        await self.sink.open()
                        opened = True
                    full = await self.step()
                except RetryableSinkError as exc:
                    self.healthy = False
                    self.store.count({f"retried.{self.name}": 1})
                    self._log_once.warning(
                        ("down",), "output %s unavailable, will retry with back-off: %s", self.name, exc
                    )
                    # Jitter spreads the retries of many gateways after a central outage.
                    await self.clock.sleep(backoff * (0.8 + 0.4 * self.rng.random()))
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                if not self.healthy:
                    log.info("output %s delivering again", self.name)
                    self._log_once.reset(("down",))
                    self.healthy = True
                backoff = self.backoff_initial
                if not full:
                    # A partial batch means the queue is drained: wait, so light traffic
                    # goes out in few requests (latency to the database ≤ flush_interval).
                    await self.clock.sleep(self.flush_interval)
        finally:
            if opened:
                await self.sink.close()

    async def step(self) -> bool:
        """Deliver one batch. Returns whether it was full (more is probably waiting)."""
        batch = self.store.pending_batch(self.name, self.batch_size)
        if batch:
            await self._deliver(batch)
        return len(batch) >= self.batch_size

    async def _deliver(self, batch: Sequence[Event]) -> None:
        try:
            await self.sink.write(batch)
        except RejectedBatchError as exc:
            if len(batch) == 1:
                log.warning(
                    "output %s rejected event seq=%d device=%s; moved to dead letters: %s",
                    self.name,
                    batch[0].seq,
                    batch[0].device_id,
                    exc,
                )
                self.store.dead_letter(self.name, batch, str(exc), self.clock.now())
                return
            half = len(batch) // 2
            await self._deliver(batch[:half])
            await self._deliver(batch[half:])
            return
        self.store.delivered(self.name, [e.seq for e in batch])
