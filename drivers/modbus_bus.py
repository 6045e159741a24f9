"""One RS-485 bus of Modbus RTU detectors, polled round-robin: edges, liveness, reconnects.

``ModbusBus`` owns one serial port and one ``pymodbus.client.AsyncModbusSerialClient`` (RTU
framer, pymodbus ≥ 3.10: ``device_id=``) for every detector wired to it::

    bus = ModbusBus("/dev/serial/by-id/usb-…-port0", devices=[("gas-1-101", 1, profile), …],
                    clock=clock, baudrate=9600, parity="N", stopbits=1,
                    poll_interval=2.0, offline_after=3)
    await bus.run(emit)   # forever, until cancelled

``emit(device_id, observations, raw_hex)`` is awaited once per device and poll that has
something to say. ``raw_hex`` is the registers read, each block as 4 hex digits per register,
blocks separated by a space (``"8003002500000000000001"``), or ``""`` for ``online`` /
``offline``. What a device emits:

- its alarm state on a change only: ``gas_alarm`` {level} when an alarm bit rises or its level
  changes, ``gas_clear`` when the bits fall (``smoke_alarm`` / ``smoke_clear`` for smoke
  profiles); the first valid reading is always emitted;
- ``sensor_fault`` {fault} when a fault appears or the set of faults changes to a non-empty one;
- ``heartbeat`` {concentration, unit, status, fault} — the telemetry — on the first reading, every
  ``telemetry_interval`` seconds, when the concentration moved by ``deadband`` or more since
  the last one emitted, or when status or fault changed;
- ``offline`` {port, reason, failures} after ``offline_after`` consecutive failed polls
  (``reason``: ``timeout``, ``no_response``) or at once when the port is lost or cannot be
  opened (``port_lost``, ``open_failed``); ``online`` {port, unit_id} with the first good
  answer after that (and at the very first answer).

A poll fails when the request times out (pymodbus ``timeout``, no retries: the next poll is the
retry) or the answer is garbled. A Modbus exception answer (illegal address …) is *not* a
failure — the detector is there, the profile is wrong: it is counted as ``exceptions`` and
logged once. Registers the profile decodes to a ``PayloadError`` are counted as ``malformed``
and handed to ``on_malformed`` if given.

The port: opened at start; when it fails (adapter unplugged, ``/dev/serial/by-id/…`` gone),
every device still online is reported offline, the client is closed and the port reopened with
capped exponential back-off (``backoff_initial`` … ``backoff_max``), forever. pymodbus's own
reconnect is switched off: this loop owns it.

Cancellation: ``run`` stops when cancelled, wherever it is — also inside a pymodbus call.
pymodbus awaits the answer (and the port's opening) with ``asyncio.wait_for``, which on Python
3.11 drops a cancel that arrives once the answer is in but before the task resumed: it returns
the answer instead of raising (CPython gh-86296, was bpo-42130; 3.12 rewrote ``wait_for``).
Every pymodbus await therefore goes through ``_cancel_safe``, which raises ``CancelledError``
when the task was cancelled during the call, whatever the call returned or raised.

Time: every wait is the injected ``Clock``'s (poll spacing, back-off); only the request
timeout inside pymodbus is real time. Counters: ``counters.take()`` gives what changed since
the last call, as ``polls``, ``failures``, ``timeouts``, ``exceptions``, ``malformed``,
``reconnects`` for the bus and ``<device_id>.polls`` … per device.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from drivers.modbus_profiles import Profile, decode
from gateway.clock import Clock
from gateway.errors import PayloadError
from gateway.models import Kind, Observation

log = logging.getLogger("sensegate.modbus")

Emit = Callable[[str, list[Observation], str], Awaitable[None]]
OnMalformed = Callable[[str, PayloadError, str], Awaitable[None]]
T = TypeVar("T")


# ------------------------------------------------------------------ the client seam


class Client(Protocol):
    """The part of ``AsyncModbusSerialClient`` the bus uses (tests may pass a twin)."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]: ...

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class PortSettings:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    timeout: float = 1.0


ClientFactory = Callable[[PortSettings], Client]


def pymodbus_client(settings: PortSettings) -> Client:
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusSerialClient

    # pymodbus logs every timeout with a dump of the last 20 frames: one mute detector would
    # fill the log every poll. The bus reports it (offline, counters); keep pymodbus for real
    # trouble unless the operator configured its logger on purpose.
    pm_log = logging.getLogger("pymodbus")
    if pm_log.level == logging.NOTSET:
        pm_log.setLevel(logging.CRITICAL)

    client: Client = AsyncModbusSerialClient(
        settings.port,
        framer=FramerType.RTU,
        baudrate=settings.baudrate,
        bytesize=settings.bytesize,
        parity=settings.parity,
        stopbits=settings.stopbits,
        timeout=settings.timeout,
        retries=0,  # the next poll is the retry; a retry here would hold up the other detectors
        reconnect_delay=0,  # no reconnect of its own: ModbusBus reopens with its back-off
    )
    return client


async def _cancel_safe(call: Awaitable[T]) -> T:
    """Await a pymodbus call; if this task was cancelled meanwhile, raise ``CancelledError``
    even when the call returned (or failed) instead — see the module docstring (3.11 wait_for)."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    try:
        result = await call
    except Exception as exc:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from exc
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


# ------------------------------------------------------------------ edges (pure)


@dataclass(slots=True)
class EdgeFilter:
    """Level observations of one device in, the ones worth emitting out. Pure; times given."""

    telemetry_interval: float = 60.0
    deadband: float = 1.0
    alarm: Observation | None = None
    fault: str = ""
    telemetry: Observation | None = None
    telemetry_at: float = 0.0

    def admit(self, observations: Sequence[Observation], now: float) -> list[Observation]:
        out: list[Observation] = []
        for o in observations:
            if o.kind in (Kind.GAS_ALARM, Kind.GAS_CLEAR, Kind.SMOKE_ALARM, Kind.SMOKE_CLEAR):
                if o != self.alarm:
                    self.alarm = o
                    out.append(o)
            elif o.kind == Kind.SENSOR_FAULT:
                fault = str(o.values.get("fault", ""))
                if fault != self.fault:
                    out.append(o)
            elif o.kind == Kind.HEARTBEAT:
                fault = str(o.values.get("fault", ""))
                if self._telemetry_due(o, now):
                    self.telemetry = o
                    self.telemetry_at = now
                    out.append(o)
                self.fault = fault
        return out

    def _telemetry_due(self, o: Observation, now: float) -> bool:
        last = self.telemetry
        if last is None or now - self.telemetry_at >= self.telemetry_interval:
            return True
        if {k: v for k, v in o.values.items() if k != "concentration"} != {
            k: v for k, v in last.values.items() if k != "concentration"
        }:
            return True  # status, fault or unit changed
        new, old = o.values.get("concentration"), last.values.get("concentration")
        if isinstance(new, int | float) and isinstance(old, int | float):
            return abs(new - old) >= self.deadband
        return new != old

    def reset_telemetry(self) -> None:
        """After the device was offline: report the telemetry again with the next reading."""
        self.telemetry = None


# ------------------------------------------------------------------ counters


_COUNTERS = ("polls", "failures", "timeouts", "exceptions", "malformed", "reconnects")


@dataclass(slots=True)
class BusCounters:
    values: dict[str, int] = field(default_factory=dict)
    _taken: dict[str, int] = field(default_factory=dict, repr=False)

    def add(self, name: str, device_id: str | None = None, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n
        if device_id is not None:
            key = f"{device_id}.{name}"
            self.values[key] = self.values.get(key, 0) + n

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def totals(self) -> dict[str, int]:
        return dict(self.values)

    def take(self) -> dict[str, int]:
        now = self.totals()
        delta = {k: v - self._taken.get(k, 0) for k, v in now.items() if v != self._taken.get(k, 0)}
        self._taken = now
        return delta


# ------------------------------------------------------------------ the bus


@dataclass(slots=True)
class Detector:
    device_id: str
    unit_id: int
    profile: Profile
    online: bool | None = None  # None until the first answer or the first offline report
    failures: int = 0  # consecutive failed polls
    edges: EdgeFilter = field(default_factory=EdgeFilter)


class _PortLost(Exception):
    pass


class ModbusBus:
    def __init__(
        self,
        port: str,
        devices: Sequence[tuple[str, int, Profile]],
        clock: Clock,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        timeout: float = 1.0,
        poll_interval: float = 2.0,
        offline_after: int = 3,
        telemetry_interval: float = 60.0,
        deadband: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        client_factory: ClientFactory = pymodbus_client,
        on_malformed: OnMalformed | None = None,
        name: str = "",
    ) -> None:
        if not devices:
            raise ValueError("a Modbus bus needs at least one device")
        ids = [d[0] for d in devices]
        units = [d[1] for d in devices]
        if len(set(ids)) != len(ids) or len(set(units)) != len(units):
            raise ValueError(f"device ids and unit ids must be unique on one bus: {ids} / {units}")
        if any(not 1 <= u <= 247 for u in units):
            raise ValueError(f"Modbus RTU unit ids are 1–247: {units}")
        if offline_after < 1 or poll_interval <= 0:
            raise ValueError("offline_after ≥ 1 and poll_interval > 0")
        self.settings = PortSettings(port, baudrate, bytesize, parity, stopbits, timeout)
        self.devices = [Detector(d, u, p, edges=EdgeFilter(telemetry_interval, deadband)) for d, u, p in devices]
        self.clock = clock
        self.poll_interval = poll_interval
        self.offline_after = offline_after
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.client_factory = client_factory
        self.on_malformed = on_malformed
        self.name = name or port
        self.counters = BusCounters()
        self.opens = 0
        self._warned: set[tuple[str, str]] = set()

    @property
    def port(self) -> str:
        return self.settings.port

    async def run(self, emit: Emit) -> None:
        """Open, poll round-robin, reopen on loss — forever, until cancelled."""
        backoff = self.backoff_initial
        while True:
            client = self.client_factory(self.settings)
            try:
                try:
                    ok = await _cancel_safe(client.connect())
                except Exception as exc:  # pyserial / pymodbus errors on open
                    log.debug("%s: connect raised %r", self.name, exc)
                    ok = False
                if not ok or not client.connected:
                    await self._all_down(emit, "open_failed")
                    await self.clock.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                self.opens += 1
                if self.opens > 1:
                    self.counters.add("reconnects")
                log.info("%s: opened %s at %d baud", self.name, self.port, self.settings.baudrate)
                answered = await self._session(client, emit)
            finally:
                client.close()
            await self._all_down(emit, "port_lost")
            if answered:
                backoff = self.backoff_initial
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _session(self, client: Client, emit: Emit) -> bool:
        answered = False
        while True:
            started = self.clock.monotonic()
            for det in self.devices:
                try:
                    answered |= await self.poll(client, det, emit)
                except _PortLost as exc:
                    log.warning("%s: port lost: %s", self.name, exc)
                    return answered
            wait = self.poll_interval - (self.clock.monotonic() - started)
            await self.clock.sleep(max(0.0, wait))

    async def poll(self, client: Client, det: Detector, emit: Emit) -> bool:
        """Poll one detector once. True if it answered."""
        self.counters.add("polls", det.device_id)
        blocks: list[list[int]] = []
        failure = ""
        for r in det.profile.reads:
            if not client.connected:
                raise _PortLost("client disconnected")
            read = client.read_holding_registers if r.function == 3 else client.read_input_registers
            try:
                rr = await _cancel_safe(read(r.address, count=r.count, device_id=det.unit_id))
            except Exception as exc:
                failure = self._classify(exc)
                if failure == "port_lost":
                    raise _PortLost(str(exc)) from exc
                break
            if rr.isError():
                self.counters.add("exceptions", det.device_id)
                code = getattr(rr, "exception_code", "?")
                self._warn_once(
                    det.device_id,
                    f"exception{code}",
                    "%s: unit %d answered FC%02d %#06x with exception %s",
                    det.device_id,
                    det.unit_id,
                    r.function,
                    r.address,
                    code,
                )
                await self._up(det, emit)
                return True
            blocks.append(list(rr.registers))
        if failure:
            await self._failed(det, emit, failure)
            return False
        await self._up(det, emit)
        raw = " ".join("".join(f"{v:04x}" for v in b) for b in blocks)
        try:
            level = decode(det.profile, blocks)
        except PayloadError as exc:
            self.counters.add("malformed", det.device_id)
            self._warn_once(det.device_id, exc.reason, "%s: registers %s: %s", det.device_id, raw, exc)
            if self.on_malformed is not None:
                await self.on_malformed(det.device_id, exc, raw)
            return True
        out = det.edges.admit(level, self.clock.monotonic())
        if out:
            await emit(det.device_id, out, raw)
        return True

    def _classify(self, exc: Exception) -> str:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        if isinstance(exc, ConnectionException):
            return "port_lost"
        if isinstance(exc, ModbusIOException | TimeoutError):
            return "timeout"
        return "no_response"

    async def _failed(self, det: Detector, emit: Emit, reason: str) -> None:
        self.counters.add("failures", det.device_id)
        if reason == "timeout":
            self.counters.add("timeouts", det.device_id)
        det.failures += 1
        if det.failures >= self.offline_after and det.online is not False:
            det.online = False
            det.edges.reset_telemetry()
            log.warning("%s: unit %d silent for %d polls", det.device_id, det.unit_id, det.failures)
            values: dict[str, str | int | bool | float] = {
                "port": self.port,
                "reason": reason,
                "failures": det.failures,
            }
            await emit(det.device_id, [Observation(Kind.OFFLINE, values)], "")

    async def _up(self, det: Detector, emit: Emit) -> None:
        det.failures = 0
        if det.online is not True:
            det.online = True
            log.info("%s: unit %d answering on %s", det.device_id, det.unit_id, self.port)
            await emit(det.device_id, [Observation(Kind.ONLINE, {"port": self.port, "unit_id": det.unit_id})], "")

    async def _all_down(self, emit: Emit, reason: str) -> None:
        for det in self.devices:
            if det.online is not False:
                det.online = False
                det.edges.reset_telemetry()
                await emit(det.device_id, [Observation(Kind.OFFLINE, {"port": self.port, "reason": reason})], "")

    def _warn_once(self, device_id: str, reason: str, msg: str, *args: object) -> None:
        if (device_id, reason) not in self._warned:
            self._warned.add((device_id, reason))
            log.warning(msg, *args)
