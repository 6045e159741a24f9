"""A simulated OSDP door reader (门禁读卡器) on a real pseudo-terminal, through libosdp.

``PtyOsdpReader`` is an OSDP peripheral device (libosdp's ``PeripheralDevice``, the same library
the gateway's control panel uses, so the two cannot disagree about the protocol) behind a pty
whose slave side a symlink you choose points at (standing in for ``/dev/serial/by-id/…``)::

    reader = PtyOsdpReader(tmp_path / "ttyOSDP", address=0)
    reader.open()
    reader.present_card(123, 4567)          # a W26 card (bits from drivers.wiegand.encode)
    reader.present_card(1000, 4567, bits=34)
    reader.present_raw(37, bytes.fromhex("0a1b2c3d48"))
    reader.door(True); reader.door(False)   # the door contact (input 0): open, closed
    reader.exit_button()                    # request to exit (input 1): pressed and released
    reader.tamper(True); reader.power(False)
    reader.commands                         # LED / buzzer / output commands it was sent
    reader.mute = True                      # stops answering (line cut, reader powered off)
    reader.vanish(); reader.reappear()      # unplugged; back as another /dev/pts/N

The bytes the gateway writes arrive on the pty master through the event loop
(``PtyPort.received``) and wait in a buffer that libosdp's thread reads through the
``osdp.Channel`` below; what libosdp writes goes straight to the master. A fresh
``PeripheralDevice`` is started on every (re)open, as a reader that power-cycles, and it
reports its inputs and tamper state at once (a real reader answers the CP's status queries
the same way after it comes up).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import osdp

from drivers import wiegand
from simulators.pty import PtyPort

CAPABILITIES = [
    (osdp.Capability.ContactStatusMonitoring, 1, 2),  # input 0: door contact, input 1: exit button
    (osdp.Capability.OutputControl, 1, 1),  # output 0: the door strike
    (osdp.Capability.LEDControl, 1, 1),
    (osdp.Capability.AudibleControl, 1, 1),
    (osdp.Capability.CardDataFormat, 1, 1),
]


class _Channel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type information
    def __init__(self, owner: PtyOsdpReader) -> None:
        super().__init__()
        self.owner = owner

    def read(self, max_bytes: int) -> bytes:
        return self.owner._take(max_bytes)

    def write(self, buf: bytes) -> int:
        return self.owner._put(bytes(buf))

    def flush(self) -> None:
        pass


class PtyOsdpReader(PtyPort):
    def __init__(
        self, link: str | Path, address: int = 0, scbk: bytes | None = None, log_level: int = osdp.LogLevel.Error
    ) -> None:
        super().__init__(link)
        self.address = address
        self.scbk = scbk
        self.log_level = log_level
        self.mute = False
        self.commands: list[dict[str, Any]] = []
        self.inputs = [False, False]  # door contact open, exit button pressed
        self.tampered = False
        self.power_ok = True
        self._rx = bytearray()
        self._io = threading.Lock()  # the fds and the buffer, between the loop and libosdp's thread
        self._pd: Any = None

    # ------------------------------------------------------------------ what the reader does

    def present_card(self, facility: int, number: int, bits: int = 26) -> None:
        self.present_raw(bits, wiegand.encode(facility, number, bits), wiegand_format=True)

    def present_raw(self, bits: int, data: bytes, wiegand_format: bool = False) -> None:
        fmt = osdp.CardFormat.Wiegand if wiegand_format else osdp.CardFormat.Unspecified
        self._submit(
            {"event": osdp.Event.CardRead, "reader_no": 0, "format": fmt, "direction": 0, "length": bits, "data": data}
        )

    def door(self, is_open: bool) -> None:
        self.inputs[0] = is_open
        self._report_inputs()

    def exit_button(self) -> None:
        self.inputs[1] = True
        self._report_inputs()
        self.inputs[1] = False
        self._report_inputs()

    def tamper(self, on: bool) -> None:
        self.tampered = on
        self._report_local()

    def power(self, ok: bool) -> None:
        self.power_ok = ok
        self._report_local()

    def _report_inputs(self) -> None:
        report = bytes(int(x) for x in self.inputs)
        self._submit({"event": osdp.Event.Status, "type": osdp.StatusReportType.Input, "report": report})

    def _report_local(self) -> None:
        report = bytes([int(self.tampered), int(not self.power_ok)])
        self._submit({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local, "report": report})

    def _submit(self, event: dict[str, Any]) -> None:
        if self._pd is None:
            raise RuntimeError("the reader is not open")
        if not self._pd.submit_event(event):
            raise RuntimeError(f"libosdp refused the event {event}")

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:  # libosdp's thread
        with self._io:
            self.commands.append(dict(command))
        return 0, None

    # ------------------------------------------------------------------ the port

    def opened(self) -> None:
        self._stop_pd()
        with self._io:
            self._rx.clear()
        info = osdp.PDInfo(self.address, _Channel(self), scbk=self.scbk, name=f"sim-reader-{self.address}")
        pd = osdp.PeripheralDevice(
            info, osdp.PDCapabilities(CAPABILITIES), log_level=self.log_level, command_handler=self._on_command
        )
        pd.start()
        self._pd = pd
        self._report_inputs()  # the state it comes up in
        self._report_local()

    def received(self, data: bytes) -> None:
        with self._io:
            if not self.mute:
                self._rx += data

    def _take(self, n: int) -> bytes:
        with self._io:
            chunk = bytes(self._rx[:n])
            del self._rx[:n]
            return chunk

    def _put(self, data: bytes) -> int:
        with self._io:
            if self.mute or self._master < 0:
                return len(data)  # a cut line: what the reader says goes nowhere
            try:
                return os.write(self._master, data)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError:
                return len(data)

    def _close_fds(self) -> None:
        with self._io:
            super()._close_fds()

    def _stop_pd(self) -> None:
        if self._pd is not None:
            with contextlib.suppress(RuntimeError):
                self._pd.stop()
            self._pd = None

    def close(self) -> None:
        super().close()
        self._stop_pd()
