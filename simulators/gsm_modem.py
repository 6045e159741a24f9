"""A GSM modem on a real pseudo-terminal: the twin of ``drivers.gsm_modem`` for tests and demos.

``PtyModem`` answers the AT commands the driver uses, as a SIM800 / EC20 class modem does, and
records every PDU it is asked to send, decoded with the driver's own codec
(``drivers.gsm_pdu.decode_submit``) — so a test reads back the exact text, parts joined::

    modem = PtyModem(tmp_path / "ttyGSM")
    modem.open()                         # /dev/pts/N behind the symlink
    ...                                  # the gateway sends
    modem.texts("+8613800138000")        # ["【跌倒报警】…"]: what that phone would show

Commands answered: ``AT``, ``ATE0``/``ATE1``, ``AT+CMEE=n``, ``AT+CMGF=0|1``, ``AT+CPIN?`` and
``AT+CPIN="…"``, ``AT+CREG?``, ``AT+CEREG?``, ``AT+CSQ``, ``AT+CMGS=<n>`` (then ``\\r\\n> ``; the
hex PDU ended by Ctrl-Z is checked — length as announced, decodable — and answered
``+CMGS: <mr>`` / ``OK`` or ``+CMS ERROR: 304``; ESC abandons it), and for incoming messages
``AT+CNMI=…``, ``AT+CPMS?`` / ``AT+CPMS="…"``, ``AT+CMGL=<stat>`` (PDU mode: ``+CMGL: <index>,
<stat>,,<length>`` and the PDU, unread ones then marked read) and ``AT+CMGD=<index>[,<flag>]``
(``+CMS ERROR: 321`` for an empty index). Anything else: ``ERROR``.

Someone texting the gateway: ``deliver(number, text)`` stores the message in the SIM as
SMS-DELIVER PDUs made by the driver's own codec (``drivers.gsm_pdu.encode_deliver``: UCS2, or
GSM 7-bit with ``gsm7=True``; several parts when long) and, once ``AT+CNMI=2,1,…`` asked for it,
announces each with ``+CMTI: "SM",<index>``. The SIM holds ``capacity`` messages; one that
arrives when it is full is lost (counted in ``lost``) — what a SIM nobody empties does.

What a test can make it do:

- ``registration = 2`` (searching), ``3`` (denied) …: not registered; ``eps_registration``: the
  LTE (CEREG) state when it differs; ``lte = False``: a 2G module; ``rssi`` (CSQ 0-31, 99);
- ``cms_error = n``: answer the next PDUs with ``+CMS ERROR: n``; ``cms_error_for[number] = n``:
  only those to that number; ``fail_once[k] = n``: only the PDU after ``k`` were sent, once;
- ``mute = True``: stop answering (a hung modem), ``mute_after_prompt``: hang at the PDU;
- ``pin = "1234"``: the SIM wants a PIN;
- ``vanish()`` / ``reappear()``: unplugged, and back as another /dev/pts behind the same link;
- ``deliver(number, text)``: an incoming SMS; ``inbox`` what the SIM holds, ``lost`` what did not fit;
  ``storage_name = "ME"``: received messages stored in the modem, not where ``AT+CMGL`` reads
  until ``AT+CPMS`` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from drivers.gsm_pdu import Submit, decode_submit, encode_deliver, join
from gateway.errors import PayloadError
from simulators.pty import PtyPort

CTRL_Z = 0x1A
ESC = 0x1B
CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class Sent:
    """One PDU the modem accepted and "sent"."""

    pdu: str  # hex, as received
    submit: Submit
    mr: int


@dataclass(slots=True)
class ModemState:
    echo: bool = True
    cmee: int = 0
    pdu_mode: bool = False
    pin_entered: bool = False
    indications: bool = False  # AT+CNMI=…,1,…: announce a new message with +CMTI
    commands: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Received:
    """A message in the SIM."""

    pdu: str  # hex, SMSC field first
    tpdu_length: int
    status: int = 0  # 0 REC UNREAD, 1 REC READ


class PtyModem(PtyPort):
    def __init__(self, link: str | Path, *, pin: str = "") -> None:
        super().__init__(link)
        self.pin = pin
        self.registration = 1  # CREG <stat>: 1 home, 5 roaming, 0/2/3/4 not registered
        self.eps_registration: int | None = None  # CEREG <stat> if not the same as CREG's
        self.lte = True  # False: a 2G module, AT+CEREG? is an ERROR
        self.rssi = 20  # CSQ: −73 dBm
        self.cms_error: int | None = None
        self.cms_error_for: dict[str, int] = {}
        self.fail_once: dict[int, int] = {}  # after this many PDUs sent, refuse the next one once with n
        self.mute = False
        self.mute_after_prompt = False
        self.sent: list[Sent] = []
        self.rejected: list[tuple[str, int]] = []  # (pdu hex, +CMS error code)
        self.state = ModemState()
        self._mr = 0
        self._line = bytearray()
        self._pdu_length: int | None = None  # set while at the "> " prompt
        self._pdu = bytearray()
        self.capacity = 30  # messages the SIM holds
        self.inbox: dict[int, Received] = {}  # index → message, in the storage AT+CMGL reads
        self.elsewhere: dict[int, Received] = {}  # received into "ME" while AT+CMGL reads "SM"
        self.storage_name = "SM"  # where received messages go (mem3)
        self.read_storage = "SM"  # where AT+CMGL / AT+CMGD look (mem1)
        self.lost = 0
        self.deleted: list[int] = []

    # ------------------------------------------------------------------ someone texts the gateway

    def deliver(
        self,
        number: str,
        text: str,
        *,
        at: datetime | None = None,
        gsm7: bool = False,
        reference: int = 0,
        smsc: str = "+8613800100500",
    ) -> list[int]:
        """Store an incoming SMS (the indexes its parts got; a part that found the SIM full is lost)."""
        pdus = encode_deliver(
            number, text, at or datetime.now(CHINA).replace(microsecond=0), gsm7=gsm7, reference=reference, smsc=smsc
        )
        box = self.inbox if self.storage_name == self.read_storage else self.elsewhere
        indexes: list[int] = []
        for pdu in pdus:
            if len(box) >= self.capacity:
                self.lost += 1
                continue
            index = next(i for i in range(1, self.capacity + 1) if i not in box)
            box[index] = Received(pdu.hex(), pdu.tpdu_length)
            indexes.append(index)
            if self.state.indications and self._pdu_length is None:
                self._write(f'\r\n+CMTI: "{self.storage_name}",{index}\r\n')
        return indexes

    # ------------------------------------------------------------------ what was sent

    def submits(self, number: str | None = None) -> list[Submit]:
        return [s.submit for s in self.sent if number is None or s.submit.number == number]

    def texts(self, number: str | None = None) -> list[str]:
        """The messages a phone (or all phones) got, concatenated parts joined."""
        return join(self.submits(number))

    @property
    def commands(self) -> list[str]:
        return self.state.commands

    # ------------------------------------------------------------------ the pty

    def opened(self) -> None:
        # A modem plugged back in boots with its defaults: echo on, text mode, no CMEE.
        self.state = ModemState(commands=self.state.commands)
        self._line.clear()
        self._pdu_length = None

    def received(self, data: bytes) -> None:
        if self.mute:
            return
        for byte in data:
            if self._pdu_length is not None:
                self._pdu_byte(byte)
            elif byte == 0x0D:
                line = self._line.decode("ascii", "replace")
                self._line.clear()
                if self.state.echo:
                    self._write(line + "\r")
                self._command(line)
            elif byte != 0x0A:
                self._line.append(byte)
                if len(self._line) > 1024:
                    self._line.clear()

    def _write(self, text: str) -> None:
        if not self.is_open or self.mute:
            return
        data = text.encode("ascii")
        while data:
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                return  # nobody reads: dropped, as on a real UART
            except OSError:
                return
            data = data[written:]

    def _reply(self, *lines: str, final: str = "OK") -> None:
        self._write("".join(f"\r\n{line}\r\n" for line in (*lines, final)))

    def _error(self, code: int, cms: bool = False) -> None:
        if self.state.cmee:
            self._reply(final=f"+{'CMS' if cms else 'CME'} ERROR: {code}")
        else:
            self._reply(final="ERROR")

    # ------------------------------------------------------------------ commands

    def _command(self, raw: str) -> None:
        start = raw.upper().find("AT")  # a DCE ignores what comes before "AT" (V.250), ESC included
        if start < 0:
            return
        line = raw[start:].strip()
        self.state.commands.append("AT+CPIN=<pin>" if line.upper().startswith("AT+CPIN=") else line)
        cmd = line.upper()
        sim_ready = not self.pin or self.state.pin_entered
        if cmd == "AT":
            self._reply()
        elif cmd in ("ATE0", "ATE1"):
            self.state.echo = cmd == "ATE1"
            self._reply()
        elif cmd.startswith("AT+CMEE="):
            self.state.cmee = int(cmd[8:]) if cmd[8:].isdigit() else 0
            self._reply()
        elif cmd == "AT+CPIN?":
            self._reply("+CPIN: READY" if sim_ready else "+CPIN: SIM PIN")
        elif cmd.startswith("AT+CPIN="):
            if line[8:].strip('"') == self.pin:
                self.state.pin_entered = True
                self._reply()
            else:
                self._error(16)  # incorrect password
        elif not sim_ready:
            self._error(311)  # SIM PIN required
        elif cmd in ("AT+CMGF=0", "AT+CMGF=1"):
            self.state.pdu_mode = cmd.endswith("0")
            self._reply()
        elif cmd == "AT+CREG?":
            self._reply(f"+CREG: 0,{self.registration}")
        elif cmd == "AT+CEREG?" and self.lte:
            eps = self.registration if self.eps_registration is None else self.eps_registration
            self._reply(f"+CEREG: 0,{eps}")
        elif cmd == "AT+CSQ":
            self._reply(f"+CSQ: {self.rssi},99")
        elif cmd.startswith("AT+CNMI="):
            fields = cmd[8:].split(",")
            self.state.indications = len(fields) > 1 and fields[1].strip() in ("1", "3")
            self._reply()
        elif cmd == "AT+CPMS?":
            used, other = len(self.inbox), len(self.elsewhere)
            read = f'"{self.read_storage}",{used},{self.capacity}'
            mem3 = used if self.storage_name == self.read_storage else other
            self._reply(f'+CPMS: {read},{read},"{self.storage_name}",{mem3},{self.capacity}')
        elif cmd.startswith("AT+CPMS="):
            names = [n.strip().strip('"') for n in line[8:].split(",")]
            if names[0] not in ("SM", "ME", "MT"):
                self._error(302, cms=True)
                return
            if names[0] != self.read_storage:
                self.read_storage = names[0]
                self.inbox, self.elsewhere = self.elsewhere, self.inbox
            n = len(self.inbox)
            self._reply(f"+CPMS: {n},{self.capacity},{n},{self.capacity},{n},{self.capacity}")
        elif cmd.startswith("AT+CMGL"):
            stat = cmd[8:] if cmd.startswith("AT+CMGL=") else "0"
            if not self.state.pdu_mode or stat not in ("0", "1", "2", "3", "4"):
                self._error(302, cms=True)  # text-mode "ALL" and friends: this simulator speaks PDU mode
                return
            lines: list[str] = []
            for index in sorted(self.inbox):
                message = self.inbox[index]
                if stat == "4" or int(stat) == message.status:
                    lines += [f"+CMGL: {index},{message.status},,{message.tpdu_length}", message.pdu]
                    message.status = 1 if message.status == 0 else message.status
            self._reply(*lines)
        elif cmd.startswith("AT+CMGD="):
            index_text = cmd[8:].split(",")[0]
            if not index_text.isdigit() or int(index_text) not in self.inbox:
                self._error(321, cms=True)  # invalid memory index
                return
            del self.inbox[int(index_text)]
            self.deleted.append(int(index_text))
            self._reply()
        elif cmd.startswith("AT+CMGS="):
            if not self.state.pdu_mode:
                self._error(305, cms=True)  # this simulator speaks PDU mode only
            elif not cmd[8:].isdigit() or not 7 <= int(cmd[8:]) <= 164:
                self._error(304, cms=True)
            else:
                self._pdu_length = int(cmd[8:])
                self._pdu = bytearray()
                self._write("\r\n> ")
        else:
            self._reply(final="ERROR")

    def _pdu_byte(self, byte: int) -> None:
        if byte == ESC:
            self._pdu_length = None
            self._reply()
            return
        if byte != CTRL_Z:
            if byte not in (0x0D, 0x0A):
                self._pdu.append(byte)
            if len(self._pdu) > 400:
                self._pdu_length = None
                self._error(304, cms=True)
            return
        length, self._pdu_length = self._pdu_length, None
        if self.mute_after_prompt:
            return
        text = self._pdu.decode("ascii", "replace")
        try:
            submit = decode_submit(text)
            data = bytes.fromhex(text)
        except (PayloadError, ValueError):
            self.rejected.append((text, 304))
            self._error(304, cms=True)
            return
        if len(data) - 1 - data[0] != length:  # AT+CMGS counts the TPDU, not the SMSC field
            self.rejected.append((text, 304))
            self._error(304, cms=True)
            return
        eps = self.registration if self.eps_registration is None else self.eps_registration
        if self.registration not in (1, 5) and not (self.lte and eps in (1, 5)):
            self.rejected.append((text, 331))
            self._error(331, cms=True)  # no network service
            return
        code = self.fail_once.pop(len(self.sent), None)
        if code is None:
            code = self.cms_error_for.get(submit.number, self.cms_error)
        if code is not None:
            self.rejected.append((text, code))
            self._error(code, cms=True)
            return
        self._mr = (self._mr + 1) & 0xFF
        self.sent.append(Sent(text.upper(), submit, self._mr))
        self._reply(f"+CMGS: {self._mr}")
