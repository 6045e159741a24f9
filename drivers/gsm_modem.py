"""A GSM modem on a serial port, spoken to in AT commands (3GPP TS 27.005 / 27.007), PDU mode.

The transport half of the SMS driver; the codec is ``drivers.gsm_pdu``. ``GsmModem`` owns one
port and serialises commands on it:

- ``connect()`` opens the port (the same ``Opener`` seam as ``drivers.serial_link``: pyserial +
  serial_asyncio_fast, or a test's twin) and initialises the modem: ``ESC`` (drop a half-typed
  PDU a previous session left at the ``>`` prompt), ``ATE0`` (no echo), ``AT+CMEE=1`` (numeric
  ``+CME ERROR: n``), ``AT+CPIN?`` (and ``AT+CPIN="…"`` once, if the SIM wants the configured
  PIN — never again after a refusal: three wrong PINs lock the SIM), ``AT+CMGF=0`` (PDU mode).
- ``check_health()`` asks ``AT+CREG?`` (and ``AT+CEREG?`` when CREG says not registered: LTE
  modules like the EC20 may be registered on EPS only) and ``AT+CSQ``, and keeps the answer in
  ``health``: registered or not, the registration state, the signal in dBm.
- ``send_pdu(pdu)`` sends one part: ``AT+CMGS=<tpdu length>``, waits for the ``> `` prompt,
  writes the hex PDU and Ctrl-Z, and waits for ``+CMGS: <mr>`` and ``OK`` (up to
  ``send_timeout``: the network's answer can take tens of seconds).
- ``list_messages()`` reads what the SIM received: ``AT+CMGL=4`` (all, PDU mode; TS 27.005
  §3.4.2), each ``+CMGL: <index>,<stat>,[<alpha>],<length>`` line followed by the PDU in hex
  (decoded by ``drivers.gsm_pdu.decode_deliver``); ``delete_message(index)`` is ``AT+CMGD=<index>``.
  The first read after (re)opening sets reading up: ``AT+CNMI=2,1,0,0,0`` (store every new
  message and announce it with ``+CMTI``, never hand it over as a ``+CMT`` that bypasses the
  storage and would be lost here) and ``AT+CPMS?`` — if received messages are stored somewhere
  other than where ``AT+CMGL`` reads (``<mem3>`` ≠ ``<mem1>``), ``AT+CPMS="<mem3>"`` makes them
  the same. A modem that refuses either keeps its defaults (logged once). ``storage`` keeps how
  full the storage is, for ``sensegate status``.

Every wait is bounded (``timeout`` per command, ``send_timeout`` for the network's answer to a
PDU). A modem that does not answer in time, a read error (USB modem unplugged) or a port that
cannot be opened closes the port; the next call opens and initialises it again. The error tree,
all ``TransportError`` so the caller maps them at its boundary::

    TransportError          the port is gone or cannot be opened
    └── ModemError
        ├── NoAnswer        no final result code in time (the port is closed and reopened next time)
        ├── NotRegistered   not on a network (CREG/CEREG state other than 1 home, 5 roaming)
        └── CommandError    ERROR, +CME ERROR: n or +CMS ERROR: n; ``permanent`` when the
                            error is about this message (bad number, bad PDU), not the modem

A timeout after the PDU was handed over leaves it unknown whether the network took it; a retry
may then deliver that part twice. The clock gives timestamps (``health.checked_at``,
``last_error_at``); I/O waits use asyncio timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from drivers.gsm_pdu import Pdu
from drivers.serial_link import Opener, Port, open_serial
from gateway.clock import Clock
from gateway.errors import TransportError

log = logging.getLogger("sensegate.gsm")

CTRL_Z = b"\x1a"
ESC = b"\x1b"
MAX_LINE = 4096  # a line longer than this is noise, not a modem answer

# +CMS ERROR codes that mean "this message can never go", not "the modem or network is unwell".
# 3GPP TS 24.011 Annex E (RP causes, 0-127), TS 23.040 §9.2.3.22 (TP-FCS, 128-255), TS 27.005
# §3.2.5 (ME errors, 300-).
PERMANENT_CMS = {
    1: "unassigned (unallocated) number",
    28: "unidentified subscriber",
    95: "semantically incorrect message",
    96: "invalid mandatory information",
    97: "message type non-existent",
    99: "information element non-existent",
    0x8F: "unspecified TP-PID error",
    0x90: "data coding scheme not supported",
    0x9F: "unspecified TP-DCS error",
    0xB0: "TPDU not supported",
    0xC3: "invalid SME address",
    304: "invalid PDU mode parameter",
}
# A few more, for the log: everything not above is treated as worth a retry.
CMS_TEXT = {
    **PERMANENT_CMS,
    8: "operator determined barring",
    10: "call barred",
    21: "short message transfer rejected",
    27: "destination out of service",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable",
    50: "requested facility not subscribed",
    0xC0: "SC busy",
    0xC2: "SC system failure",
    300: "ME failure",
    302: "operation not allowed",
    310: "SIM not inserted",
    311: "SIM PIN required",
    316: "SIM PUK required",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
REGISTRATION = {0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming"}

_FINAL_OK = "OK"
_ERROR = re.compile(r"^(?:\+(CME|CMS) ERROR: *(.*)|ERROR|NO CARRIER)$")


class ModemError(TransportError):
    pass


class NoAnswer(ModemError):
    pass


class NotRegistered(ModemError):
    pass


class CommandError(ModemError):
    """The modem answered ERROR / +CME ERROR: n / +CMS ERROR: n."""

    def __init__(self, command: str, kind: str, code: int | None, detail: str = "") -> None:
        self.command = command
        self.kind = kind  # "CMS", "CME" or "" (plain ERROR)
        self.code = code
        what = f"+{kind} ERROR: {code if code is not None else detail}" if kind else "ERROR"
        meaning = CMS_TEXT.get(code, "") if kind == "CMS" and code is not None else ""
        if not meaning and code is not None and detail and not detail.isdigit():
            meaning = detail
        super().__init__(f"{command}: {what}" + (f" ({meaning})" if meaning else ""))

    @property
    def permanent(self) -> bool:
        """True when the error is about the message itself, so retrying it cannot help."""
        return self.kind == "CMS" and self.code in PERMANENT_CMS


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as ``AT+CMGL`` lists it in PDU mode."""

    index: int  # its place in the storage, for AT+CMGD
    status: int  # 0 received unread, 1 received read, 2 stored unsent, 3 stored sent
    length: int  # TPDU octets (the SMSC field not counted)
    pdu: str  # hex, SMSC field first

    @property
    def received(self) -> bool:
        return self.status in (0, 1)


@dataclass(slots=True)
class Storage:
    """How full the message storage is (``AT+CPMS``), for health."""

    name: str = ""  # "SM" the SIM, "ME" the modem, "MT" both
    used: int | None = None
    total: int | None = None


@dataclass(slots=True)
class Health:
    registered: bool | None = None  # None until first asked
    registration: str = ""  # home / roaming / searching / denied / not_registered / unknown
    signal_dbm: int | None = None  # None: unknown (CSQ 99) or not asked yet
    checked_at: float | None = None  # clock.now() of the last answer


def csq_to_dbm(rssi: int) -> int | None:
    """27.007 §8.5: 0 → −113 dBm or less, 1 → −111, 2…30 → −109…−53, 31 → −51 or more, 99 unknown."""
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    return None


class GsmModem:
    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        baudrate: int = 115200,
        timeout: float = 10.0,
        send_timeout: float = 60.0,
        pin: str = "",
        opener: Opener = open_serial,
        name: str = "",
    ) -> None:
        self.path = path
        self.clock = clock
        self.baudrate = baudrate
        self.timeout = timeout
        self.send_timeout = send_timeout
        self.opener = opener
        self.name = name or path
        self.health = Health()
        self.opens = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self._pin = pin
        self._pin_refused = False
        self._port: Port | None = None
        self._buffer = bytearray()
        self._lock = asyncio.Lock()
        self.storage = Storage()
        self._reading_set_up = 0  # the value of ``opens`` when reading was last set up

    @property
    def is_open(self) -> bool:
        return self._port is not None

    # ------------------------------------------------------------------ public

    async def connect(self) -> None:
        """Open and initialise the port unless it is open already."""
        async with self._lock:
            await self._ensure_open()

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    async def command(self, command: str) -> list[str]:
        """Send one AT command; the information lines of its answer (without OK)."""
        async with self._lock:
            await self._ensure_open()
            return await self._guarded(command)

    async def check_health(self) -> Health:
        """Registration and signal, now. Raises ``NotRegistered`` when not on a network."""
        async with self._lock:
            await self._ensure_open()
            state = _registration(await self._guarded("AT+CREG?"), "+CREG:")
            if state not in (1, 5):
                try:
                    eps = _registration(await self._guarded("AT+CEREG?", record=False), "+CEREG:")
                except CommandError:
                    eps = None  # a 2G module without LTE: not an error
                if eps in (1, 5):
                    state = eps
            dbm: int | None = None
            for line in await self._guarded("AT+CSQ"):
                if line.startswith("+CSQ:"):
                    try:
                        dbm = csq_to_dbm(int(line[5:].split(",")[0]))
                    except ValueError:
                        dbm = None
            self.health = Health(
                registered=state in (1, 5),
                registration=REGISTRATION.get(state if state is not None else 4, "unknown"),
                signal_dbm=dbm,
                checked_at=self.clock.now(),
            )
            if not self.health.registered:
                raise self._failed(NotRegistered(f"{self.name}: not registered ({self.health.registration})"))
            return self.health

    async def send_pdu(self, pdu: Pdu) -> int:
        """Send one SMS-SUBMIT; the message reference the network gave it."""
        async with self._lock:
            port = await self._ensure_open()
            command = f"AT+CMGS={pdu.tpdu_length}"
            try:
                async with asyncio.timeout(self.timeout):
                    self._discard()
                    port.write(command.encode() + b"\r")
                    await self._prompt(command)
            except TimeoutError as exc:
                port.write(ESC)  # leave the prompt, if it came late
                self._drop()
                raise self._failed(NoAnswer(f"{self.name}: no '> ' prompt after {command}")) from exc
            except TransportError as exc:
                self._drop()
                raise self._failed(exc) from None
            try:
                async with asyncio.timeout(self.send_timeout):
                    port.write(pdu.hex().encode() + CTRL_Z)
                    lines = await self._final(command)
            except TimeoutError as exc:
                self._drop()
                raise self._failed(NoAnswer(f"{self.name}: no answer to the PDU after {command}")) from exc
            except CommandError as exc:
                raise self._failed(exc) from None
            except TransportError as exc:
                self._drop()
                raise self._failed(exc) from None
            for line in lines:
                if line.startswith("+CMGS:"):
                    try:
                        return int(line[6:].strip().split(",")[0])
                    except ValueError:
                        break
            return -1  # OK without +CMGS: taken, reference unknown

    async def list_messages(self) -> list[Stored]:
        """Every message in the storage ``AT+CMGL`` reads (received ones are marked read by it)."""
        async with self._lock:
            await self._ensure_open()
            if self._reading_set_up != self.opens:
                await self._set_up_reading()
            lines = await self._guarded("AT+CMGL=4")
        found: list[Stored] = []
        header: tuple[int, int, int] | None = None
        for line in lines:
            if line.startswith("+CMGL:"):
                header = _cmgl_header(line)
            elif header is not None and _HEX.fullmatch(line):
                found.append(Stored(header[0], header[1], header[2], line.upper()))
                header = None
            else:
                header = None  # an unsolicited line where the PDU should be: skip that entry
        return found

    async def delete_message(self, index: int) -> None:
        """``AT+CMGD=<index>``; an index that is already empty (+CMS ERROR: 321) is no error."""
        async with self._lock:
            await self._ensure_open()
            try:
                await self._guarded(f"AT+CMGD={int(index)}", record=False)
            except CommandError as exc:
                if not (exc.kind == "CMS" and exc.code == 321):
                    raise self._failed(exc) from None

    async def _set_up_reading(self) -> None:
        try:
            await self._guarded("AT+CNMI=2,1,0,0,0", record=False)
        except CommandError as exc:
            log.warning("%s: the modem refused AT+CNMI (%s); keeping its own indication settings", self.name, exc)
        try:
            answer = " ".join(await self._guarded("AT+CPMS?", record=False))
            stores = re.findall(r'"([A-Z]{2})",(\d+),(\d+)', answer)
            if len(stores) >= 3 and stores[0][0] != stores[2][0]:
                log.info("%s: received messages go to %s: reading from there too", self.name, stores[2][0])
                await self._guarded(f'AT+CPMS="{stores[2][0]}"', record=False)
                stores[0] = stores[2]
            if stores:
                self.storage = Storage(stores[0][0], int(stores[0][1]), int(stores[0][2]))
        except CommandError as exc:
            log.warning("%s: the modem refused AT+CPMS (%s); reading its default storage", self.name, exc)
        self._reading_set_up = self.opens

    # ------------------------------------------------------------------ the session

    async def _ensure_open(self) -> Port:
        if self._port is not None:
            return self._port
        if self.opens:
            # A dropped port is closed by its transport on the loop's next turn; until then its
            # exclusive lock makes the reopen fail. Let it go first.
            for _ in range(3):
                await asyncio.sleep(0)
        try:
            port = await self.opener(self.path, self.baudrate)
        except TransportError as exc:
            raise self._failed(exc) from None
        self._port = port
        self._buffer.clear()
        self.opens += 1
        try:
            port.write(ESC)  # leave a "> " prompt a previous session left; ignored before "AT"
            await self._drain()
            await self._init()
        except BaseException:
            self._drop()
            raise
        log.info("%s: modem ready on %s", self.name, self.path)
        return port

    async def _init(self) -> None:
        try:
            await self._exchange("ATE0")
            await self._exchange("AT+CMEE=1")
            answer = " ".join(await self._exchange("AT+CPIN?"))
            if "SIM PIN" in answer:
                if not self._pin or self._pin_refused:
                    raise CommandError("AT+CPIN?", "CME", 311, "SIM PIN required")
                try:
                    await self._exchange(f'AT+CPIN="{self._pin}"', log_as="AT+CPIN=<pin>")
                except CommandError:
                    self._pin_refused = True  # never try again: three wrong PINs lock the SIM
                    raise
            elif "READY" not in answer:
                raise CommandError("AT+CPIN?", "CME", None, answer or "no SIM state")
            await self._exchange("AT+CMGF=0")
        except TimeoutError as exc:
            raise self._failed(NoAnswer(f"{self.name}: no answer to the start-up commands")) from exc
        except TransportError as exc:
            raise self._failed(exc) from None

    async def _guarded(self, command: str, *, record: bool = True) -> list[str]:
        """``_exchange``, with a timeout or a lost port closing the session."""
        try:
            return await self._exchange(command)
        except TimeoutError as exc:
            self._drop()
            raise self._failed(NoAnswer(f"{self.name}: no answer to {command}")) from exc
        except CommandError as exc:
            raise (self._failed(exc) if record else exc) from None
        except TransportError as exc:
            self._drop()
            raise self._failed(exc) from None

    async def _exchange(self, command: str, *, log_as: str = "") -> list[str]:
        port = self._port
        if port is None:
            raise TransportError(f"{self.name}: port closed")
        async with asyncio.timeout(self.timeout):
            self._discard()
            port.write(command.encode() + b"\r")
            return await self._final(command, log_as or command)

    async def _drain(self, quiet: float = 0.2) -> None:
        """Read and forget until the line has been quiet for ``quiet`` seconds (an I/O wait)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with asyncio.timeout(quiet):
                    await self._read()
            except TimeoutError:
                break
        self._buffer.clear()

    async def _final(self, command: str, shown: str = "") -> list[str]:
        """Lines up to the final result code; raises ``CommandError`` on an error code.

        ``shown`` names the command in errors when ``command`` holds a secret (the PIN)."""
        lines: list[str] = []
        while True:
            line = await self._line()
            if line == _FINAL_OK:
                return lines
            match = _ERROR.match(line)
            if match:
                kind, detail = match.group(1) or "", (match.group(2) or "").strip()
                code = int(detail) if detail.isdigit() else None
                raise CommandError(shown or command, kind, code, detail)
            if line.upper() == command.upper():
                continue  # echo, before ATE0 took effect
            lines.append(line)

    async def _prompt(self, command: str) -> None:
        """Wait for "> " (or an error instead of it)."""
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            if stripped.startswith(b">"):
                del self._buffer[:]
                return
            if b"\r" in stripped or b"\n" in stripped:
                line = await self._line()
                match = _ERROR.match(line)
                if match:
                    kind, detail = match.group(1) or "", (match.group(2) or "").strip()
                    raise CommandError(command, kind, int(detail) if detail.isdigit() else None, detail)
                continue  # echo or an unsolicited line
            await self._read()

    async def _line(self) -> str:
        while True:
            for sep in (b"\r", b"\n"):
                while self._buffer.startswith(sep):
                    del self._buffer[:1]
            end = min((i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0), default=-1)
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                line = raw.decode("ascii", "replace").strip()
                if line:
                    return line
                continue
            if len(self._buffer) > MAX_LINE:
                self._buffer.clear()
            await self._read()

    async def _read(self) -> None:
        port = self._port
        if port is None:
            raise TransportError(f"{self.name}: port closed")
        self._buffer += await port.read()

    def _discard(self) -> None:
        """Forget what came before a command (unsolicited result codes: +CMTI, RING …)."""
        self._buffer.clear()

    def _drop(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None
            self._buffer.clear()

    def _failed(self, exc: TransportError) -> TransportError:
        self.last_error = str(exc)
        self.last_error_at = self.clock.now()
        return exc


_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def _cmgl_header(line: str) -> tuple[int, int, int] | None:
    """(index, stat, length) of a "+CMGL: <index>,<stat>,[<alpha>],<length>" line; None if garbled."""
    fields = line[len("+CMGL:") :].split(",")
    try:
        return int(fields[0]), int(fields[1]), int(fields[-1])
    except (ValueError, IndexError):
        return None


def _registration(lines: list[str], prefix: str) -> int | None:
    """The <stat> of a "+CREG: <n>,<stat>[,…]" answer."""
    for line in lines:
        if line.startswith(prefix):
            fields = line[len(prefix) :].split(",")
            if len(fields) >= 2:
                try:
                    return int(fields[1].strip())
                except ValueError:
                    return None
    return None
