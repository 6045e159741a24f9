"""The OSDP transport: the gateway as control panel (CP) on one RS-485 bus, through ``libosdp``.

``OsdpLink`` owns one serial port and one ``osdp.ControlPanel`` for every reader (PD) wired to
it::

    link = OsdpLink("/dev/serial/by-id/usb-…-port0", [0, 1], clock, baudrate=9600, scbk=key)
    await link.run(handle)          # forever, until cancelled
    link.signal(address, Signal("grant"))   # LED / buzzer / strike at one reader

libosdp does the protocol (POLL, ID, CAP, secure channel, sequence numbers, CRC, replies); this
module gives it a byte channel and turns what it reports into asyncio items:

- **The channel** (``SerialChannel``, an ``osdp.Channel``): the port opened with pyserial (8N1,
  exclusive) and then read and written non-blocking on its file descriptor, from libosdp's own
  thread (``ControlPanel.start`` runs ``refresh`` every 20 ms). A read or write error (adapter
  unplugged, pty closed: EIO) or a hang-up is reported once to the event loop.
- **The bridge**: libosdp calls the event handler on its thread; the handler only hands the
  event to the loop with ``loop.call_soon_threadsafe`` (nothing else runs on that thread).
  ``handle`` is then awaited on the loop with ``PdUp`` / ``PdDown`` / ``PdEvent`` items in
  order. Commands go the other way through ``ControlPanel.submit_command`` (a short lock
  shared with the refresh thread).
- **Liveness** comes from libosdp's PD-status notifications (``LibFlag.EnableNotification``):
  a reader that stops answering is declared offline by libosdp after about 8 s of failed
  polls. libosdp itself would then wait 300 s before trying that reader again; the link
  instead re-probes it (``disable_pd`` + ``enable_pd``) after a capped exponential back-off.
  ``PdUp`` is reported on the first answer after a start or an outage, ``PdDown(reason)``
  once when it is lost (``silent``, ``read_error``, ``open_failed``, ``no_answer``).
- **The port**: on a read/write error, or when no reader is online for ``online_timeout``
  seconds (a port that opens but where nothing answers: a renamed adapter, a cut bus), the
  control panel is stopped, the port closed and reopened with capped exponential back-off
  (``backoff_initial`` … ``backoff_max``), forever; a fresh ``ControlPanel`` each time.

The secure channel base key (``scbk``, 16 bytes) is handed to libosdp and never logged;
without one the readers must be in install mode (plain text). libosdp logs to stderr at
``log_level`` (default: errors only — its debug level would print packets).

Time: every wait of this module is the injected ``Clock``'s (back-off, the online timeout);
libosdp's poll cadence and reply timeouts inside its thread are real time. Counters
(``counters.take()``: what changed since the last call): ``bytes_in``, ``bytes_out``,
``events``, ``card_reads``, ``commands``, ``commands_failed``, ``read_errors``, ``reopens``,
``reprobes`` and ``<address>.…`` per reader for ``events``, ``card_reads`` and ``reprobes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import osdp

from drivers.modbus_bus import BusCounters
from drivers.osdp_door import EVENT_CARDREAD, EVENT_NOTIFICATION, NOTIFY_PD_STATUS, Signal
from gateway.clock import Clock
from gateway.errors import TransportError

log = logging.getLogger("sensegate.osdp")

BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400)  # what OSDP allows (PROTOCOLS.md §4.1)


# ------------------------------------------------------------------ what the link reports


@dataclass(frozen=True, slots=True)
class PdUp:
    address: int
    at: float


@dataclass(frozen=True, slots=True)
class PdDown:
    address: int
    at: float
    reason: str  # "silent" | "read_error" | "open_failed" | "no_answer"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PdEvent:
    address: int
    at: float
    event: Mapping[str, Any]  # as libosdp gives it; drivers.osdp_door.parse_event reads it


LinkItem = PdUp | PdDown | PdEvent


# ------------------------------------------------------------------ the channel


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type information
    """A serial port as libosdp's byte channel: non-blocking reads and writes on its fd."""

    def __init__(self, fd: int, closer: Callable[[], None], name: str) -> None:
        super().__init__()
        self.fd = fd
        self.name = name
        self._closer = closer
        self._lock = threading.Lock()  # close() must not race a read or write on the CP thread
        self._closed = False
        self.on_error: Callable[[str], None] = lambda detail: None
        self._failed = False
        self.bytes_in = 0
        self.bytes_out = 0

    def _fail(self, detail: str) -> None:
        if not self._failed:
            self._failed = True
            self.on_error(detail)

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            if self._closed or self._failed:
                return b""
            try:
                # The port is in raw mode with VMIN = VTIME = 0: a read with nothing waiting
                # returns b"" at once. Readable *and* empty is a hang-up (the node went away).
                if not select.select([self.fd], [], [], 0)[0]:
                    return b""
                data = os.read(self.fd, max_bytes)
            except (BlockingIOError, InterruptedError):
                return b""
            except (OSError, ValueError) as exc:
                self._fail(f"{self.name}: read: {getattr(exc, 'strerror', None) or exc}")
                return b""
            if not data:
                self._fail(f"{self.name}: hung up")
                return b""
            self.bytes_in += len(data)
            return data

    def write(self, buf: bytes) -> int:
        with self._lock:
            if self._closed or self._failed:
                return 0
            try:
                n = os.write(self.fd, buf)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:
                self._fail(f"{self.name}: write: {exc.strerror or exc}")
                return 0
            self.bytes_out += n
            return n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(Exception):
                    self._closer()


ChannelOpener = Callable[[str, int], SerialChannel]


def open_channel(path: str, baudrate: int) -> SerialChannel:
    """Open ``path`` 8N1 at ``baudrate`` with pyserial (exclusive), then use it non-blocking."""
    import serial

    try:
        port = serial.Serial(
            path, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=0, write_timeout=0, exclusive=True
        )
    except (OSError, serial.SerialException, ValueError) as exc:
        raise TransportError(f"cannot open {path}: {exc}") from exc
    fd = port.fileno()
    os.set_blocking(fd, False)
    return SerialChannel(fd, port.close, path)


# ------------------------------------------------------------------ reader signals → commands

# osdp_LED / osdp_BUZ / osdp_OUT as libosdp's command dicts. Times are in units of 100 ms.
# LED temporary control code 2: "set the temporary state and start its timer"; buzzer tone
# code 2: the default tone; output code 5: "temporary on" for timer_count (OSDP 2.2 [I]).
_GREEN, _RED, _OFF = 2, 1, 0


def _led(color: int, on: int, off: int, timer: int, reader: int) -> dict[str, Any]:
    return {
        "command": osdp.Command.LED,
        "reader": reader,
        "led_number": 0,
        "control_code": 2,
        "temporary": True,
        "on_color": color,
        "off_color": _OFF,
        "on_count": on,
        "off_count": off,
        "timer_count": timer,
    }


def _buzzer(on: int, off: int, repeat: int, reader: int) -> dict[str, Any]:
    return {
        "command": osdp.Command.Buzzer,
        "reader": reader,
        "control_code": 2,
        "on_count": on,
        "off_count": off,
        "rep_count": repeat,
    }


def commands_for(signal: Signal, unlock_window: float, strike_output: int | None = 0) -> list[dict[str, Any]]:
    """Grant: green LED 2 s, one short beep (200 ms), the strike output on for the unlock
    window. Deny: red LED 2 s, one long beep (1 s). Held open: red flashing 5 s, three beeps."""
    r = signal.reader
    if signal.what == "grant":
        cmds = [_led(_GREEN, 20, 0, 20, r), _buzzer(2, 0, 1, r)]
        if strike_output is not None:
            timer = max(1, min(255, round(unlock_window * 10)))
            cmds.append(
                {"command": osdp.Command.Output, "output_no": strike_output, "control_code": 5, "timer_count": timer}
            )
        return cmds
    if signal.what == "deny":
        return [_led(_RED, 20, 0, 20, r), _buzzer(10, 0, 1, r)]
    return [_led(_RED, 5, 5, 50, r), _buzzer(5, 5, 3, r)]


# ------------------------------------------------------------------ the link


class _SessionEnd(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Reader:
    address: int
    online: bool | None = None  # None until its first answer or first failure
    retry_at: float | None = None  # monotonic time of the next re-probe while offline
    backoff: float = 1.0


class OsdpLink:
    def __init__(
        self,
        path: str,
        addresses: Sequence[int],
        clock: Clock,
        *,
        baudrate: int = 9600,
        scbk: bytes | None = None,
        online_timeout: float = 15.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        strike_output: int | None = 0,
        unlock_window: float = 5.0,
        opener: ChannelOpener = open_channel,
        log_level: int = osdp.LogLevel.Error,
        name: str = "",
    ) -> None:
        if not addresses or len(set(addresses)) != len(addresses):
            raise ValueError(f"an OSDP bus needs distinct reader addresses: {list(addresses)}")
        if any(not 0 <= a <= 0x7E for a in addresses):
            raise ValueError(f"OSDP addresses are 0–126 (127 is broadcast): {list(addresses)}")
        if baudrate not in BAUDRATES:
            raise ValueError(f"OSDP baud rates are {BAUDRATES}: {baudrate}")
        if scbk is not None and len(scbk) != 16:
            raise ValueError("an OSDP secure channel base key is 16 bytes")
        self.path = path
        self.addresses = list(addresses)
        self.clock = clock
        self.baudrate = baudrate
        self._scbk = scbk
        self.online_timeout = online_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.strike_output = strike_output
        self.unlock_window = unlock_window
        self.opener = opener
        self.log_level = log_level
        self.name = name or path
        self.counters = BusCounters()
        self.readers = {a: _Reader(a, backoff=backoff_initial) for a in self.addresses}
        self.opens = 0
        self._cp: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"OsdpLink({self.path!r}, {self.addresses}, secure={self._scbk is not None})"

    # ------------------------------------------------------------------ commands

    def signal(self, address: int, signal: Signal) -> bool:
        """Show a decision at a reader (LED, buzzer, strike). False if it could not be queued."""
        return all([self.submit(address, c) for c in commands_for(signal, self.unlock_window, self.strike_output)])

    def submit(self, address: int, command: dict[str, Any]) -> bool:
        cp = self._cp
        if cp is None or not self.readers[address].online:
            self.counters.add("commands_failed")
            return False
        try:
            ok = bool(cp.submit_command(address, command))
        except Exception as exc:  # libosdp raises plain exceptions for a command it cannot build
            log.warning("%s: reader %d: command %s not sent: %s", self.name, address, command.get("command"), exc)
            ok = False
        self.counters.add("commands" if ok else "commands_failed")
        return ok

    # ------------------------------------------------------------------ the loop

    async def run(self, handle: Callable[[LinkItem], Awaitable[None]]) -> None:
        """Open, run the control panel, reopen, forever (until cancelled)."""
        backoff = self.backoff_initial
        while True:
            try:
                channel = await asyncio.to_thread(self.opener, self.path, self.baudrate)
            except TransportError as exc:
                await self._all_down(handle, "open_failed", str(exc))
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            self.opens += 1
            if self.opens > 1:
                self.counters.add("reopens")
            log.info("%s: opened %s at %d baud for readers %s", self.name, self.path, self.baudrate, self.addresses)
            talked = False
            try:
                talked = await self._session(channel, handle)
            finally:
                channel.close()
            if talked:
                backoff = self.backoff_initial
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _all_down(self, handle: Callable[[LinkItem], Awaitable[None]], reason: str, detail: str) -> None:
        for r in self.readers.values():
            await self._down(handle, r, reason, detail)

    async def _down(self, handle: Callable[[LinkItem], Awaitable[None]], r: _Reader, reason: str, detail: str) -> None:
        if r.online is not False:
            r.online = False
            log.warning("%s: reader %d offline (%s) %s", self.name, r.address, reason, detail)
            await handle(PdDown(r.address, self.clock.now(), reason, detail))

    def _make_cp(self, channel: SerialChannel, post: Callable[[tuple[Any, ...]], None]) -> Any:
        flags = [osdp.LibFlag.EnableNotification]
        if self._scbk is not None:
            flags.append(osdp.LibFlag.EnforceSecure)  # with a key, never fall back to plain text
        infos = [osdp.PDInfo(a, channel, scbk=self._scbk, name=f"reader-{a}", flags=flags) for a in self.addresses]
        addresses = list(self.addresses)

        def on_event(pd: int, event: dict[str, Any]) -> int:  # libosdp's thread: hand over, nothing else
            post(("event", addresses[pd], event))
            return 0

        return osdp.ControlPanel(infos, log_level=self.log_level, event_handler=on_event)

    async def _session(self, channel: SerialChannel, handle: Callable[[LinkItem], Awaitable[None]]) -> bool:
        """Run one control panel on one open port until the port fails or nothing answers.
        True if any reader came online."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def post(item: tuple[Any, ...]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the gateway is stopping
                loop.call_soon_threadsafe(queue.put_nowait, item)

        channel.on_error = lambda detail: post(("error", detail))
        cp = await asyncio.to_thread(self._make_cp, channel, post)
        cp.start()
        self._cp = cp
        talked = False
        started = self.clock.monotonic()
        last_online = started
        for r in self.readers.values():
            r.retry_at, r.backoff = None, self.backoff_initial

        async def tick() -> None:  # wakes the loop for the clock-driven checks
            while True:
                await self.clock.sleep(min(1.0, self.backoff_initial, self.online_timeout / 4))
                queue.put_nowait(("tick",))

        ticker = asyncio.create_task(tick())
        seen_in, seen_out = 0, 0
        try:
            while True:
                item = await queue.get()
                if channel.bytes_in != seen_in or channel.bytes_out != seen_out:
                    self.counters.add("bytes_in", n=channel.bytes_in - seen_in)
                    self.counters.add("bytes_out", n=channel.bytes_out - seen_out)
                    seen_in, seen_out = channel.bytes_in, channel.bytes_out
                now = self.clock.monotonic()
                if item[0] == "error":
                    self.counters.add("read_errors")
                    raise _SessionEnd("read_error", str(item[1]))
                if item[0] == "event":
                    address, event = item[1], item[2]
                    with contextlib.suppress(Exception):
                        cp.get_event(address, -1)  # libosdp also queues every event for get_event: drop it
                    r = self.readers[address]
                    if event.get("event") == EVENT_NOTIFICATION and event.get("type") == NOTIFY_PD_STATUS:
                        if event.get("arg0"):
                            talked = True
                            r.retry_at, r.backoff = None, self.backoff_initial
                            if r.online is not True:
                                r.online = True
                                log.info("%s: reader %d online", self.name, address)
                                await handle(PdUp(address, self.clock.now()))
                        else:
                            await self._down(handle, r, "silent", "no answer to polls")
                            r.retry_at = now + r.backoff
                            r.backoff = min(r.backoff * 2, self.backoff_max)
                        continue
                    if event.get("event") == EVENT_NOTIFICATION:
                        continue  # command completions, secure-channel state: libosdp's business
                    self.counters.add("events", str(address))
                    if event.get("event") == EVENT_CARDREAD:
                        self.counters.add("card_reads", str(address))
                    await handle(PdEvent(address, self.clock.now(), event))
                    continue
                # a tick: re-probe readers that are due, give up on a port where nothing answers
                if any(r.online for r in self.readers.values()):
                    last_online = now
                elif now - last_online >= self.online_timeout:
                    raise _SessionEnd("no_answer", f"no reader answered for {self.online_timeout:g} s")
                for r in self.readers.values():
                    if r.online is not True and r.retry_at is not None and now >= r.retry_at:
                        r.retry_at = now + r.backoff
                        r.backoff = min(r.backoff * 2, self.backoff_max)
                        self.counters.add("reprobes", str(r.address))
                        await asyncio.to_thread(self._reprobe, cp, r.address)
        except _SessionEnd as end:
            await self._all_down(handle, end.reason, end.detail)
            return talked
        finally:
            ticker.cancel()
            # wait, not await: a cancel of this task arriving now must not be swallowed.
            await asyncio.wait({ticker})
            self._cp = None
            await asyncio.shield(asyncio.to_thread(self._stop, cp))

    @staticmethod
    def _reprobe(cp: Any, address: int) -> None:
        # libosdp waits 300 s before polling an offline reader again; disabling and enabling
        # it makes it start over (ID, CAP, secure channel) at once.
        cp.disable_pd(address)
        cp.enable_pd(address)

    @staticmethod
    def _stop(cp: Any) -> None:
        with contextlib.suppress(RuntimeError):
            cp.stop()
