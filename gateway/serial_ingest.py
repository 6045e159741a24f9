"""Serial ingest: one supervised link per serial device, events committed in small group commits.

For every device configured with ``serial = {…}`` the runtime runs ``run_device(id)`` under
``supervise``: a ``drivers.serial_link.SerialLink`` on the device's port with the codec named by
``serial.protocol`` (``drivers.SERIAL_CODECS``). Each frame is decoded, passed through the
device's ``RadarLatch`` (fall and residence always stored; repeated telemetry thinned) and made
into events by the registry (identity, location, receive time from the clock, the frame in hex
as ``raw``). The link going down or coming back becomes an ``offline`` / ``online`` event with
``values.reason`` and ``values.port``.

One writer (``run_writer``) gathers what every device produced since the last commit — no
waiting: whatever is queued when the previous commit ends goes into the next, up to
``store.commit_batch`` items — and commits events, malformed-frame records and counters in one
transaction, then hands the stored events to ``on_stored`` (the alert path), as the MQTT
ingest does. A serial device cannot be asked to resend, so a frame is safe once it is read:
the link never pauses reading while the store commits.

Counters (in the store, shown by ``sensegate status``): ``serial.<device>.bytes``,
``.frames``, ``.bad_checksums``, ``.resync_bytes``, ``.reopens``, ``.thinned``, and
``malformed.<reason>`` for frames that pass the checksum but cannot be decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers import SERIAL_CODECS
from drivers.framing import FrameCodec
from drivers.radar_latch import RadarLatch
from drivers.serial_link import Frames, LinkDown, LinkItem, LinkUp, Opener, SerialLink, open_serial
from gateway.clock import Clock
from gateway.config import SiteConfig
from gateway.errors import PayloadError
from gateway.log import LogOnce
from gateway.models import Event, Kind, Observation
from gateway.registry import Registry
from gateway.store import Store

log = logging.getLogger("sensegate.serial_ingest")


@dataclass(slots=True)
class _Batch:
    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def merge(self, other: _Batch) -> None:
        self.events.extend(other.events)
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.rejected.extend(other.rejected)


class SerialIngest:
    def __init__(
        self,
        config: SiteConfig,
        registry: Registry,
        store: Store,
        clock: Clock,
        outputs: dict[str, frozenset[str] | None],
        on_stored: Callable[[list[Event]], Awaitable[None]],
        opener: Opener = open_serial,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.clock = clock
        self.outputs = outputs
        self.on_stored = on_stored
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._log_once = LogOnce(log)
        self.links: dict[str, SerialLink] = {}
        self.latches: dict[str, RadarLatch] = {}
        self.codecs: dict[str, FrameCodec] = {}
        for device_id, entry in registry.serial_devices.items():
            src = entry.config.serial
            assert src is not None  # serial_devices holds only those
            codec: FrameCodec = SERIAL_CODECS[src.protocol]
            self.codecs[device_id] = codec
            self.latches[device_id] = RadarLatch(refresh=src.refresh_interval)
            self.links[device_id] = SerialLink(
                src.port,
                codec,
                clock,
                baudrate=src.baudrate,
                idle_timeout=src.idle_timeout,
                backoff_initial=src.backoff_initial,
                backoff_max=src.backoff_max,
                settings=src.radar.as_dict() if src.radar is not None else None,
                opener=opener,
                name=f"radar {device_id}",
            )

    # ------------------------------------------------------------------ per device

    async def run_device(self, device_id: str) -> None:
        link = self.links[device_id]

        async def handle(item: LinkItem) -> None:
            self._queue.put_nowait(self._convert(device_id, link, item))

        await link.run(handle)

    def _convert(self, device_id: str, link: SerialLink, item: LinkItem) -> _Batch:
        batch = _Batch()
        codec = self.codecs[device_id]
        source = f"serial:{codec.NAME}"
        if isinstance(item, LinkUp | LinkDown):
            kind = Kind.ONLINE if isinstance(item, LinkUp) else Kind.OFFLINE
            values: dict[str, str | bool | int | float] = {"port": link.path}
            if isinstance(item, LinkDown):
                values["reason"] = item.reason
            else:
                values["opens"] = link.opens
            obs = [Observation(kind, values)]
            batch.events.extend(self.registry.serial_events(device_id, obs, b"", item.at, source))
        elif isinstance(item, Frames):
            latch = self.latches[device_id]
            now = self.clock.monotonic()
            for frame in item.frames:
                try:
                    decoded = codec.decode(frame)
                except PayloadError as exc:
                    name = f"malformed.{exc.reason}"
                    batch.counts[name] = batch.counts.get(name, 0) + 1
                    self._log_once.warning(
                        (exc.reason, device_id), "skipped frame: reason=%s device=%s: %s", exc.reason, device_id, exc
                    )
                    batch.rejected.append((f"serial/{device_id}", exc.reason, str(exc), frame))
                    continue
                admitted = [o for o in (latch.admit(obs, now) for obs in decoded) if o is not None]
                if admitted:
                    batch.events.extend(self.registry.serial_events(device_id, admitted, frame, item.at, source))
        for name, delta in link.counters.take().items():
            batch.counts[f"serial.{device_id}.{name}"] = delta
        thinned = self.latches[device_id].thinned
        if thinned:
            batch.counts[f"serial.{device_id}.thinned"] = thinned
            self.latches[device_id].thinned = 0
        return batch

    # ------------------------------------------------------------------ the writer

    async def run_writer(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        n = 1
        while n < self.config.store.commit_batch:
            try:
                batch.merge(self._queue.get_nowait())
                n += 1
            except asyncio.QueueEmpty:
                break
        if not (batch.events or batch.counts or batch.rejected):
            return
        now = self.clock.now()
        stored = await asyncio.to_thread(
            self.store.append, batch.events, self.outputs, (), batch.counts, batch.rejected, now
        )
        if stored:
            await self.on_stored(stored)

    async def drain(self) -> None:
        """Commit whatever is queued (on an orderly stop, after the device tasks are cancelled)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                await self._commit(self._queue.get_nowait())
