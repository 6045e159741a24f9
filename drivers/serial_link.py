"""The serial transport for UART devices: open, read without pause, frame, supervise, reopen.

A driver is a pure codec plus this thin transport. ``SerialLink`` owns one port for one device:

- It opens the port by path — a stable ``/dev/serial/by-id/…`` symlink (recommended: it
  survives the adapter coming back as another ``ttyUSBn``) or ``/dev/ttyUSB0`` — through an
  injected ``Opener`` (``open_serial``: pyserial + ``serial_asyncio_fast``; tests pass an
  in-memory twin). After opening it writes the codec's start-up commands (MR60FDA2: install
  height, fall threshold, sensitivity from the config, then a parameters query).
- It reads continuously: the event loop hands over every chunk the moment the port has data,
  with no sleep between reads (a radar sends a fall only once, on change; a pause can lose it).
  Chunks are appended to a buffer and cut into frames by ``codec.split``; garbage and bad
  checksums are counted and skipped, good frames around them go on.
- It notices a lost device: a read error (USB adapter unplugged, pty closed) or silence —
  no valid frame for ``idle_timeout`` seconds (the radar lost power, the cable broke, the
  port is open but nothing talks). At half the timeout it sends the codec's keepalive query
  if it has one (MR60FDA2 has no heartbeat). It then closes the port and reopens it with
  capped exponential back-off, forever; a port that does not exist yet is retried the same way.
- It reports ``LinkUp`` when the first valid frame arrives after an open (the device is
  talking, not just the adapter present) and ``LinkDown(reason)`` once when it is lost
  (``read_error``, ``silent``, ``open_failed``) — the runtime turns them into ``online`` /
  ``offline`` events. A device that never answers is reported down once, not every retry.

Time comes from the injected ``Clock`` (back-off, idle timeout), so all of it runs on a
``VirtualClock`` in tests. Library exceptions become ``TransportError`` at the boundary.

Counters (``PortCounters``): ``bytes``, ``frames``, ``bad_checksums``, ``resync_bytes``
(garbage skipped) and ``reopens``; ``take()`` returns what changed since the last call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Protocol

from drivers.framing import FrameCodec
from gateway.clock import Clock
from gateway.errors import TransportError

log = logging.getLogger("sensegate.serial")

MAX_BUFFER = 64 * 1024  # a codec that never finds a frame must not make the buffer grow forever


# ------------------------------------------------------------------ the port seam


class Port(Protocol):
    """An open serial port. ``read`` waits for the next chunk and raises ``TransportError``
    once the port is lost or closed; ``close`` makes a pending ``read`` raise."""

    async def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


Opener = Callable[[str, int], Awaitable[Port]]


class _QueueProtocol(asyncio.Protocol):
    """asyncio protocol → a queue of chunks, ended by the exception that closed it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(bytes(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(exc or TransportError("port closed"))


class QueuePort:
    """A ``Port`` over an asyncio transport and ``_QueueProtocol`` (the real serial port)."""

    def __init__(self, transport: asyncio.BaseTransport, protocol: _QueueProtocol, name: str) -> None:
        self._transport = transport
        self._protocol = protocol
        self.name = name
        self._closed = False

    async def read(self) -> bytes:
        if self._closed:
            raise TransportError(f"{self.name}: closed")
        item = await self._protocol.queue.get()
        if isinstance(item, BaseException):
            self._closed = True
            self._protocol.queue.put_nowait(item)  # later reads fail the same way
            if isinstance(item, TransportError):
                raise item
            raise TransportError(f"{self.name}: {item}") from item
        return item

    def write(self, data: bytes) -> None:
        if not self._closed and isinstance(self._transport, asyncio.WriteTransport):
            self._transport.write(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._protocol.queue.put_nowait(TransportError(f"{self.name}: closed"))
            if isinstance(self._transport, asyncio.WriteTransport):
                self._transport.abort()  # drop unsent writes: the port is being given up
            else:
                self._transport.close()


async def open_serial(path: str, baudrate: int) -> Port:
    """Open ``path`` at ``baudrate`` 8N1, non-blocking, through serial_asyncio_fast."""
    import serial
    import serial_asyncio_fast

    loop = asyncio.get_running_loop()
    protocol = _QueueProtocol()
    try:
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: protocol, path, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, exclusive=True
        )
    except (OSError, serial.SerialException, ValueError) as exc:
        raise TransportError(f"cannot open {path}: {exc}") from exc
    return QueuePort(transport, protocol, path)


# ------------------------------------------------------------------ what the link reports


@dataclass(frozen=True, slots=True)
class LinkUp:
    at: float  # clock.now() of the first valid frame after an open


@dataclass(frozen=True, slots=True)
class LinkDown:
    at: float
    reason: str  # "read_error" | "silent" | "open_failed"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Frames:
    at: float  # clock.now() when the chunk that completed them was read
    frames: tuple[bytes, ...]


LinkItem = LinkUp | LinkDown | Frames


@dataclass(slots=True)
class PortCounters:
    bytes: int = 0
    frames: int = 0
    bad_checksums: int = 0
    resync_bytes: int = 0
    reopens: int = 0
    _taken: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def totals(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def take(self) -> dict[str, int]:
        """What changed since the last ``take`` (for counters committed with events)."""
        now = self.totals()
        delta = {k: v - self._taken.get(k, 0) for k, v in now.items() if v != self._taken.get(k, 0)}
        self._taken = now
        return delta


class SerialLink:
    def __init__(
        self,
        path: str,
        codec: FrameCodec,
        clock: Clock,
        *,
        baudrate: int = 115200,
        idle_timeout: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        settings: Mapping[str, float] | None = None,
        opener: Opener = open_serial,
        name: str = "",
    ) -> None:
        self.path = path
        self.codec = codec
        self.clock = clock
        self.baudrate = baudrate
        self.idle_timeout = idle_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.startup = list(codec.startup_commands(dict(settings or {})))
        self.opener = opener
        self.name = name or path
        self.counters = PortCounters()
        self.online: bool | None = None  # None until the first frame or the first failure
        self.opens = 0
        self.last_down = ""

    async def run(self, handle: Callable[[LinkItem], Awaitable[None]]) -> None:
        """Open, read, reopen, forever (until cancelled)."""
        backoff = self.backoff_initial
        while True:
            try:
                port = await self.opener(self.path, self.baudrate)
            except TransportError as exc:
                await self._down(handle, "open_failed", str(exc))
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            self.opens += 1
            if self.opens > 1:
                self.counters.reopens += 1
            log.info("%s: opened %s at %d baud", self.name, self.path, self.baudrate)
            try:
                talked = await self._session(port, handle)
            finally:
                port.close()
            if talked:
                backoff = self.backoff_initial  # it worked for a while: a new failure, not a loop
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _down(self, handle: Callable[[LinkItem], Awaitable[None]], reason: str, detail: str) -> None:
        if self.online is not False:
            self.online = False
            self.last_down = reason
            log.warning("%s: device lost (%s): %s", self.name, reason, detail)
            await handle(LinkDown(self.clock.now(), reason, detail))

    def receive(self, buffer: bytearray, chunk: bytes) -> list[LinkItem]:
        """One chunk read from the port: append it to ``buffer``, cut the whole frames out,
        count bytes, garbage and bad checksums. Returns ``[LinkUp, Frames]`` for the first
        frames after an open (the device is talking), ``[Frames]`` after that, ``[]`` while
        no frame is complete. The scenario runner feeds a step's bytes through this too."""
        self.counters.bytes += len(chunk)
        buffer += chunk
        result = self.codec.split(buffer)
        del buffer[: result.used]
        if len(buffer) > MAX_BUFFER:  # cannot happen with a sane codec; never grow unbounded
            self.counters.resync_bytes += len(buffer)
            buffer.clear()
        self.counters.resync_bytes += result.skipped
        self.counters.bad_checksums += result.bad_checksums
        if not result.frames:
            return []
        self.counters.frames += len(result.frames)
        now = self.clock.now()
        items: list[LinkItem] = []
        if self.online is not True:
            self.online = True
            log.info("%s: device talking on %s", self.name, self.path)
            items.append(LinkUp(now))
        items.append(Frames(now, tuple(result.frames)))
        return items

    async def _session(self, port: Port, handle: Callable[[LinkItem], Awaitable[None]]) -> bool:
        """Read one open port until it fails or goes silent. True if any valid frame came."""
        for command in self.startup:
            port.write(command)
        buffer = bytearray()
        last_frame = self.clock.monotonic()
        silent = False
        talked = False

        async def watchdog() -> None:
            nonlocal silent
            poked = False
            keepalive = self.codec.keepalive()
            while True:
                quiet = self.clock.monotonic() - last_frame
                if quiet >= self.idle_timeout:
                    silent = True
                    port.close()
                    return
                if keepalive is not None and not poked and quiet >= self.idle_timeout / 2:
                    port.write(keepalive)
                    poked = True
                elif quiet < self.idle_timeout / 2:
                    poked = False
                wait = self.idle_timeout / 2 - quiet if quiet < self.idle_timeout / 2 else self.idle_timeout - quiet
                await self.clock.sleep(wait)

        dog = asyncio.create_task(watchdog())
        try:
            while True:
                try:
                    chunk = await port.read()
                except TransportError as exc:
                    await self._down(handle, "silent" if silent else "read_error", str(exc))
                    return talked
                items = self.receive(buffer, chunk)
                if not items:
                    continue
                last_frame = self.clock.monotonic()
                talked = True
                for item in items:
                    await handle(item)
        finally:
            dog.cancel()
            # Not `suppress(CancelledError): await dog`: a cancel of this task arriving now would
            # be taken for the dog's and dropped, and the link would go on reopening forever.
            await asyncio.wait({dog})
            if not dog.cancelled():
                dog.result()  # a watchdog that failed says so
