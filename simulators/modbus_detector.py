"""Modbus RTU gas / smoke detectors on one simulated RS-485 bus, on a real pseudo-terminal.

``PtyModbusBus`` makes a pty pair with ``os.openpty()`` and points a symlink you choose
(``tmp/ttyRS485``, standing in for ``/dev/serial/by-id/…``) at the slave side; the gateway opens
that path like a USB–RS-485 adapter. The master side is the bus: requests are cut and decoded
by pymodbus's own RTU framer and PDU classes (server side), and each answer is a pymodbus
response PDU framed by the same framer — the simulator never writes Modbus bytes by hand. The
registers come from ``drivers.modbus_profiles.encode(profile, state)``, so the simulated
detector and the driver read the same map::

    bus = PtyModbusBus(tmp_path / "ttyRS485")
    gas = bus.add(1, profile)                     # unit id 1
    bus.open()
    gas.alarm("high", concentration=42)           # low / high / … level bits of the profile
    gas.clear(); gas.fault("sensor_lost"); gas.warmup(); gas.set(concentration=7.5)
    gas.mute = True                               # this unit stops answering
    bus.vanish(); bus.reappear()                  # unplugged, back as another /dev/pts/N

Why not pymodbus's ``ModbusSerialServer``: it opens a port path itself (so it would need a
``socat`` pair) and reconnects on its own schedule, and it cannot silence one unit id or
vanish on command. The datastore here is the profile's register blocks; a read outside them
gets exception 02 (illegal data address), a function other than FC03/FC04 exception 01.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from drivers.modbus_profiles import DetectorState, Profile, encode
from simulators.pty import PtyPort

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2


class SimDetector:
    """One detector (one unit id): its state and its registers."""

    def __init__(self, unit_id: int, profile: Profile) -> None:
        self.unit_id = unit_id
        self.profile = profile
        self.state = DetectorState()
        self.mute = False  # powered off / cable cut for this unit only: no answer at all
        self.requests = 0

    def set(self, **changes: object) -> None:
        self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]
        encode(self.profile, self.state)  # refuse a state the profile cannot express, now

    def alarm(self, *levels: str, concentration: float | None = None) -> None:
        """Raise alarm bits (default: every level the profile has up to the named one)."""
        names = tuple(self.profile.alarm.levels)
        if not levels:
            levels = names[:1]
        elif len(levels) == 1 and levels[0] in names:
            levels = names[: names.index(levels[0]) + 1]  # a "high" detector also shows "low"
        self.set(levels=tuple(levels), **({} if concentration is None else {"concentration": concentration}))

    def clear(self, concentration: float | None = 0.0) -> None:
        self.set(levels=(), **({} if concentration is None else {"concentration": concentration}))

    def fault(self, *names: str) -> None:
        self.set(faults=tuple(names))

    def warmup(self, on: bool = True) -> None:
        self.set(status="warmup" if on else "ok")

    def registers(self, function: int, address: int, count: int) -> list[int] | None:
        """The registers a read asks for, or None when they are not all in one block."""
        blocks = encode(self.profile, self.state)
        for r, block in zip(self.profile.reads, blocks, strict=True):
            if r.function == function and r.address <= address and address + count <= r.address + r.count:
                return block[address - r.address : address - r.address + count]
        return None

    def answer(self, request: ModbusPDU) -> ModbusPDU:
        self.requests += 1
        fc = request.function_code
        if fc not in (3, 4):
            return ExceptionResponse(fc, ILLEGAL_FUNCTION, device_id=self.unit_id)
        values = self.registers(fc, request.address, request.count)
        if values is None:
            return ExceptionResponse(fc, ILLEGAL_ADDRESS, device_id=self.unit_id)
        cls = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
        return cls(dev_id=self.unit_id, registers=values)


class PtyModbusBus(PtyPort):
    """Several ``SimDetector``s on one pty; needs a running event loop once opened."""

    def __init__(self, link: str | Path) -> None:
        super().__init__(link)
        self.units: dict[int, SimDetector] = {}
        self.framer = FramerRTU(DecodePDU(True))
        self.answered = 0
        self._inbox = b""

    def add(self, unit_id: int, profile: Profile) -> SimDetector:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id}: Modbus RTU unit ids are 1–247")
        self.units[unit_id] = det = SimDetector(unit_id, profile)
        return det

    def opened(self) -> None:
        self._inbox = b""

    def received(self, data: bytes) -> None:
        """Requests from the gateway's poller: each unit on the bus answers its own."""
        self._inbox += data
        while self._inbox:
            try:
                used, pdu = self.framer.handleFrame(self._inbox, 0, 0)
            except Exception:  # an undecodable request: drop what we have, as a device would
                self._inbox = b""
                return
            self._inbox = self._inbox[used:]
            if pdu is None:
                return
            unit = self.units.get(pdu.dev_id)
            if unit is None or unit.mute:
                continue  # not for anyone on this bus: silence, as on a real RS-485 line
            reply = unit.answer(pdu)
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._master, self.framer.buildFrame(reply))
                self.answered += 1
