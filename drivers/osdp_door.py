"""OSDP door readers (门禁) as the control panel sees them: what a reader reported, who may
open which door, and one door's state machine. Pure: no I/O, no clock — times are given.

Three parts, each testable alone:

1. ``parse_event(d)``: one event dict as ``libosdp``'s ``ControlPanel`` delivers it → a typed
   ``Reading``. Shapes (libosdp 3.2.9, checked by running it CP to PD over a pty):

   - card read (osdp_RAW 0x50): ``{'event': 1, 'reader_no', 'format': 1 (Wiegand) | 0 (raw,
     unspecified) | 2 (ASCII), 'direction', 'length': <bits>, 'data': bytes}`` → ``CardRead``
     whose ``credential`` comes from ``drivers.wiegand.credential``;
   - key press (osdp_KEYPAD 0x53): ``{'event': 2, 'reader_no', 'data': bytes}`` → ``KeyPress``;
   - status (ISTATR 0x49 / LSTATR 0x48): ``{'event': 4, 'type': 0 (input) | 2 (local),
     'report': bytes}`` → ``Inputs`` (one byte per input: 1 active) or ``Local`` (byte 0
     tamper, byte 1 power failure);
   - notification: ``{'event': 5, 'type': 2 (PD status), 'arg0': 1 online | 0 offline}`` →
     ``PdStatus``; other notifications (command completion, secure channel) → ``None``.

   Anything else is ``PayloadError`` (``wrong_type``, ``unknown_event``, ``bad_length`` …).

2. ``Directory``: credential → holder (resident, staff, registered visitor) and the doors each
   may open; ``decide(credential, door)`` → ``Decision``. Who opens what:

   - a resident: the public doors of their household's building and their own household's door;
   - staff: the public doors of the buildings they cover (``staff.buildings``; empty = every
     building); not a household's own door;
   - a registered visitor (探访人): the public doors of the buildings of the households they
     look after, and those households' doors.

   Denial reasons: ``unknown_credential``, ``wrong_building`` (a card of this block, not valid
   for this building), ``wrong_household`` (a household door that is not theirs).

3. ``DoorMachine``: one door and its reader. Given card decisions, the door-contact input
   (ISTATR), the request-to-exit input, tamper / power (LSTATR) and the time, it returns
   ``Observation``s for the store and ``Signal``s for the reader:

   - ``access_granted`` / ``access_denied`` {credential, person, person_kind, method, reader,
     reason (denied)} — grant: ``Signal("grant")`` (green LED, one short beep, the strike
     output pulsed for ``unlock_window``); deny: ``Signal("deny")`` (red LED, one long beep);
   - ``door_opened`` {secured}: ``secured = true`` when the door opened while its lock was
     secured — no grant and no exit request within ``unlock_window`` before it, seen while the
     reader was online: the ``door_forced`` rule of the smart_community pack keys on exactly
     that (非法开门). An opening the machine cannot judge (the first report after start-up, or
     the first after the link was down) is ``secured = false``;
   - ``door_closed`` {open_for, held_open}: how long it was open, and whether that was longer
     than ``held_open_after``. The alert for a door held open (开门超时) is the pack's
     ``door_held_open`` rule, a ``held`` rule on ``door_opened`` (public door) → ``door_closed``
     with its own duration; the machine does not store a second kind for it (another
     ``door_opened`` would read as a new opening to the elderly-care rules). At the reader,
     a door open past ``held_open_after`` gets ``Signal("held_open")`` (red LED flashing,
     beeps), as a real controller's door-ajar warning, once per opening;
   - ``tamper`` / ``tamper_clear`` on the reader's tamper switch; ``sensor_fault``
     {fault: "power"} when it reports a power failure.

   ``online`` / ``offline`` are the link's (``drivers.osdp_link``), not the door's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from drivers import wiegand
from gateway.errors import PayloadError
from gateway.models import Kind, Observation, Scalar

# libosdp's numbers (osdp.Event, osdp.CardFormat, osdp.StatusReportType, osdp.EventNotification):
# the C library's ABI, spelled out here so this module needs no libosdp to import.
EVENT_CARDREAD, EVENT_KEYPRESS, EVENT_STATUS, EVENT_NOTIFICATION = 1, 2, 4, 5
CARD_RAW, CARD_WIEGAND, CARD_ASCII = 0, 1, 2
STATUS_INPUT, STATUS_LOCAL = 0, 2
NOTIFY_PD_STATUS = 2

MAX_REPORT = 64  # inputs or local-status bytes in one report; more is not a reader


# ------------------------------------------------------------------ 1. what a reader reported


@dataclass(frozen=True, slots=True)
class CardRead:
    reader: int
    credential: str
    bits: int


@dataclass(frozen=True, slots=True)
class KeyPress:
    reader: int
    keys: str


@dataclass(frozen=True, slots=True)
class Inputs:
    active: tuple[bool, ...]  # input i active (door contact open, exit button pressed …)


@dataclass(frozen=True, slots=True)
class Local:
    tamper: bool
    power_failure: bool


@dataclass(frozen=True, slots=True)
class PdStatus:
    online: bool


Reading = CardRead | KeyPress | Inputs | Local | PdStatus


def _int(d: Mapping[str, object], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PayloadError("wrong_type", f"event field {key!r} should be an integer, got {v!r:.40}")
    return v


def _bytes(d: Mapping[str, object], key: str) -> bytes:
    v = d.get(key)
    if not isinstance(v, bytes | bytearray):
        raise PayloadError("wrong_type", f"event field {key!r} should be bytes, got {v!r:.40}")
    return bytes(v)


def parse_event(d: object) -> Reading | None:
    """One libosdp event dict → a ``Reading`` (``None``: nothing a door cares about)."""
    if not isinstance(d, Mapping):
        raise PayloadError("wrong_type", f"an OSDP event is a dict, got {type(d).__name__}")
    kind = _int(d, "event")
    if kind == EVENT_CARDREAD:
        reader, fmt = _int(d, "reader_no"), _int(d, "format")
        data = _bytes(d, "data")
        if fmt == CARD_ASCII:
            text = data.decode("ascii", errors="replace")
            if not text or any(c.isspace() or not c.isprintable() for c in text):
                raise PayloadError("bad_value", f"ASCII card data {data!r:.40} is not printable")
            return CardRead(reader, f"card:{text}", len(data) * 8)
        if fmt not in (CARD_RAW, CARD_WIEGAND):
            raise PayloadError("unknown_format", f"card format {fmt} (known: 0 raw, 1 Wiegand, 2 ASCII)")
        bits = _int(d, "length")
        return CardRead(reader, wiegand.credential(bits, data, wiegand=fmt == CARD_WIEGAND), bits)
    if kind == EVENT_KEYPRESS:
        data = _bytes(d, "data")
        return KeyPress(_int(d, "reader_no"), data.decode("ascii", errors="replace"))
    if kind == EVENT_STATUS:
        typ, report = _int(d, "type"), _bytes(d, "report")
        if len(report) > MAX_REPORT:
            raise PayloadError("bad_length", f"status report of {len(report)} bytes")
        if typ == STATUS_INPUT:
            return Inputs(tuple(b != 0 for b in report))
        if typ == STATUS_LOCAL:
            if len(report) < 2:
                raise PayloadError("bad_length", f"a local status report has 2 bytes, got {len(report)}")
            return Local(report[0] != 0, report[1] != 0)
        return None  # output / remote-reader status: nothing a door decides on
    if kind == EVENT_NOTIFICATION:
        if _int(d, "type") == NOTIFY_PD_STATUS:
            return PdStatus(_int(d, "arg0") != 0)
        return None
    if kind == 3:  # manufacturer-specific reply
        return None
    raise PayloadError("unknown_event", f"OSDP event type {kind}")


# ------------------------------------------------------------------ 2. who may open what

PersonKind = Literal["resident", "staff", "visitor"]


@dataclass(frozen=True, slots=True)
class Holder:
    person: str  # the resident, staff or visitor id
    kind: PersonKind
    buildings: frozenset[str] | None  # public doors of these buildings; None: every building
    households: frozenset[str] = frozenset()  # these households' own doors


@dataclass(frozen=True, slots=True)
class Door:
    building: str
    household: str = ""  # "" for a public door (building, unit or gate)


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    credential: str
    person: str = ""
    person_kind: str = ""
    reason: str = ""  # why denied


@dataclass(frozen=True, slots=True)
class Directory:
    holders: Mapping[str, Holder] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, Holder]]) -> Directory:
        return cls(dict(entries))

    def decide(self, credential: str, door: Door) -> Decision:
        h = self.holders.get(credential)
        if h is None:
            return Decision(False, credential, reason="unknown_credential")
        who = {"person": h.person, "person_kind": h.kind}
        if door.household:
            if door.household in h.households:
                return Decision(True, credential, **who)
            return Decision(False, credential, reason="wrong_household", **who)
        if h.buildings is None or door.building in h.buildings:
            return Decision(True, credential, **who)
        return Decision(False, credential, reason="wrong_building", **who)


# ------------------------------------------------------------------ 3. one door


@dataclass(frozen=True, slots=True)
class Signal:
    """What the reader should show: ``grant``, ``deny`` or ``held_open`` (drivers.osdp_link
    turns it into osdp_LED / osdp_BUZ / osdp_OUT commands)."""

    what: Literal["grant", "deny", "held_open"]
    reader: int = 0


@dataclass(slots=True)
class DoorMachine:
    door: Door
    held_open_after: float = 30.0  # seconds open before the reader warns (and held_open on close)
    unlock_window: float = 5.0  # seconds the lock stays released after a grant or an exit request
    door_input: int = 0  # ISTATR input wired to the door contact (active = open)
    rex_input: int | None = 1  # input wired to the exit button (active = pressed), or None
    # state
    is_open: bool | None = None  # None: not known since start-up
    opened_at: float = 0.0
    unlocked_until: float = float("-inf")
    warned: bool = False  # held_open signalled for this opening
    tamper: bool | None = None
    power_failure: bool | None = None
    judged: bool = False  # the contact was seen closed while online, so an opening can be judged
    rex_active: bool = False

    def card(self, decision: Decision, now: float, reader: int = 0) -> tuple[list[Observation], list[Signal]]:
        values: dict[str, Scalar] = {"credential": decision.credential, "method": "card", "reader": reader}
        if decision.person:
            values["person"] = decision.person
            values["person_kind"] = decision.person_kind
        if decision.granted:
            self.unlocked_until = now + self.unlock_window
            return [Observation(Kind.ACCESS_GRANTED, values)], [Signal("grant", reader)]
        values["reason"] = decision.reason
        return [Observation(Kind.ACCESS_DENIED, values)], [Signal("deny", reader)]

    def inputs(self, report: Inputs, now: float) -> tuple[list[Observation], list[Signal]]:
        out: list[Observation] = []
        rex = self.rex_input
        if rex is not None and rex < len(report.active):
            pressed = report.active[rex]
            if pressed and not self.rex_active:
                self.unlocked_until = now + self.unlock_window  # free egress: not a forced door
            self.rex_active = pressed
        if self.door_input >= len(report.active):
            return out, []
        is_open = report.active[self.door_input]
        if is_open == self.is_open:
            return out, []
        if is_open:
            secured = self.judged and now > self.unlocked_until
            self.opened_at, self.warned = now, False
            out.append(Observation(Kind.DOOR_OPENED, {"secured": secured}))
        elif self.is_open is not None:
            open_for = max(0.0, now - self.opened_at)
            held = open_for > self.held_open_after
            out.append(Observation(Kind.DOOR_CLOSED, {"open_for": round(open_for, 1), "held_open": held}))
        self.is_open = is_open
        if not is_open:
            self.judged = True
            self.unlocked_until = float("-inf")  # the door closed: the lock is secured again
        return out, []

    def local(self, report: Local) -> list[Observation]:
        out: list[Observation] = []
        if report.tamper != self.tamper:
            if report.tamper:
                out.append(Observation(Kind.TAMPER))
            elif self.tamper is not None:
                out.append(Observation(Kind.TAMPER_CLEAR))
            self.tamper = report.tamper
        if report.power_failure != self.power_failure:
            if report.power_failure:
                out.append(Observation(Kind.SENSOR_FAULT, {"fault": "power"}))
            self.power_failure = report.power_failure
        return out

    def link_lost(self) -> None:
        """The reader went offline: an opening seen after it comes back cannot be judged."""
        self.judged = False

    def deadline(self) -> float | None:
        """When ``tick`` has something to do (the held-open warning), or None."""
        if self.is_open and not self.warned:
            return self.opened_at + self.held_open_after
        return None

    def tick(self, now: float, reader: int = 0) -> list[Signal]:
        due = self.deadline()
        if due is not None and now >= due:
            self.warned = True
            return [Signal("held_open", reader)]
        return []
