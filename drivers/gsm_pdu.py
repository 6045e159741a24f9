"""SMS-SUBMIT PDUs in UCS2 (3GPP TS 23.040 / 23.038): encode, split with concatenation, decode.

A pure codec: no I/O, no clock. ``encode_submit`` turns (number, text) into one PDU per part;
``decode_submit`` reads one back (the modem simulator uses it to check what the modem was asked
to send); ``join`` puts the parts of a concatenated message back together. Whatever bytes it is
given, the decoder raises nothing but ``PayloadError``.

Layout of what the modem gets after ``AT+CMGS=<tpdu_length>``, hex-encoded, then Ctrl-Z::

    00                  SMSC: length 0 = use the SIM's default SMSC (not counted in tpdu_length)
    ── TPDU ──
    fo                  first octet: 0x01 SMS-SUBMIT | 0x20 status report requested
                        | 0x40 UDHI (a user data header is present); VPF bits 4-3 = 00 (no TP-VP)
    mr                  message reference (0: most modems substitute their own)
    len ton digits…     destination: number of digits, 0x91 international (+86…) or 0x81
                        (unknown: national 138…), BCD digits nibble-swapped, F-padded
    00                  PID
    08                  DCS: UCS2 (UTF-16BE)
    udl                 user data length in octets (UDH included)
    [udhl iei iel …]    concatenation UDH: 05 00 03 ref total seq (8-bit ref) or
                        06 08 04 refH refL total seq (16-bit ref)
    text                UTF-16BE

Sizes: 140 octets of user data = 70 UTF-16 units alone, 67 per part with the 8-bit-ref UDH, 66
with the 16-bit one. A character outside the BMP (emoji) is a surrogate pair — two units — and a
part never ends between the two halves. At most 255 parts.

Example (made with python-gsmmodem-new 0.13.0 from PyPI, ``status_report=True``)::

    AT+CMGS=52
    0021000D91683108108300F000082630107D2760253011003353F7697C0035003000325BA472EC5C4580014EBA8DCC501262A58B66

GSM 7-bit is not implemented: every alert text is Chinese, and UCS2 carries ASCII too (at 70
rather than 160 characters a message).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import PayloadError

DCS_UCS2 = 0x08
MAX_USER_DATA = 140  # octets
MAX_PARTS = 255
UNITS_SINGLE = 70  # UTF-16 units in one message without a UDH
UNITS_PER_PART = 67  # with the 6-octet 8-bit-reference UDH (05 00 03 ref total seq)
UNITS_PER_PART_WIDE = 66  # with the 7-octet 16-bit-reference UDH (06 08 04 refH refL total seq)
ELLIPSIS = "…"

_FO_SUBMIT = 0x01
_FO_SRR = 0x20
_FO_UDHI = 0x40
_TON_INTERNATIONAL = 0x91
_TON_UNKNOWN = 0x81
_NUMBER = re.compile(r"\+?[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Concat:
    """The concatenation information element: part ``seq`` of ``total`` of message ``ref``."""

    ref: int
    total: int
    seq: int
    wide: bool = False  # 16-bit reference (IEI 0x08) rather than 8-bit (IEI 0x00)


@dataclass(frozen=True, slots=True)
class Pdu:
    """One encoded part: ``data`` as the modem wants it (SMSC octet + TPDU)."""

    data: bytes
    tpdu_length: int  # for AT+CMGS=<n>: the octets after the SMSC field

    def hex(self) -> str:
        return self.data.hex().upper()


@dataclass(frozen=True, slots=True)
class Submit:
    """A decoded SMS-SUBMIT."""

    number: str  # "+8613800138000" for an international address, else the digits as given
    text: str  # this part's text
    reference: int = 0  # TP-MR
    status_report: bool = False
    concat: Concat | None = None
    smsc: str = ""  # "" = the SIM's default
    dcs: int = DCS_UCS2


# ------------------------------------------------------------------ splitting


def _units(text: str) -> bytes:
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:  # a lone surrogate: not text a phone can show
        raise PayloadError("not_encodable", f"text has a lone surrogate at {exc.start}") from exc


def units(text: str) -> int:
    """UTF-16 units in ``text`` (what SMS sizes count; an emoji is two)."""
    return len(_units(text)) // 2


def split_text(text: str, *, wide_ref: bool = False) -> list[str]:
    """Cut ``text`` into the parts it is sent in: one if it fits in 70 units, else 67 (66) each.

    A part never ends between the halves of a surrogate pair.
    """
    data = _units(text)
    if len(data) <= 2 * UNITS_SINGLE:
        return [text]
    size = 2 * (UNITS_PER_PART_WIDE if wide_ref else UNITS_PER_PART)
    parts: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data) and 0xD8 <= data[end - 2] <= 0xDB:  # the last unit is a high surrogate
            end -= 2
        parts.append(data[start:end].decode("utf-16-be"))
        start = end
    return parts


def parts_needed(text: str, *, wide_ref: bool = False) -> int:
    return len(split_text(text, wide_ref=wide_ref))


def fit(text: str, max_parts: int, *, wide_ref: bool = False) -> tuple[str, bool]:
    """``text`` cut so that it goes in at most ``max_parts`` parts, ending with "…" if cut.

    Returns (text, cut). Never leaves half a surrogate pair.
    """
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    if parts_needed(text, wide_ref=wide_ref) <= max_parts:
        return text, False
    per_part = UNITS_PER_PART_WIDE if wide_ref else UNITS_PER_PART
    budget = (UNITS_SINGLE if max_parts == 1 else per_part * max_parts) - units(ELLIPSIS)
    data = _units(text)[: 2 * budget]
    if data and 0xD8 <= data[-2] <= 0xDB:
        data = data[:-2]
    cut = data.decode("utf-16-be") + ELLIPSIS
    # Splitting moves a boundary back by one unit when it falls inside a surrogate pair, so
    # the parts can hold a few units less than budgeted: trim until it fits.
    while parts_needed(cut, wide_ref=wide_ref) > max_parts:
        cut = cut[:-2] + ELLIPSIS
    return cut, True


# ------------------------------------------------------------------ encoding


def encode_number(number: str) -> bytes:
    """The TP-DA address field: digit count, type of number, BCD digits (nibble-swapped)."""
    if not isinstance(number, str) or not _NUMBER.fullmatch(number):
        raise PayloadError("not_encodable", f"not a phone number: {number!r} (digits, optionally after '+')")
    international = number.startswith("+")
    digits = number.lstrip("+")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), _TON_INTERNATIONAL if international else _TON_UNKNOWN]) + bytes.fromhex(swapped)


def encode_submit(
    number: str,
    text: str,
    *,
    reference: int = 0,
    mr: int = 0,
    status_report: bool = False,
    wide_ref: bool | None = None,
) -> list[Pdu]:
    """One SMS-SUBMIT PDU per part of ``text`` to ``number``, UCS2.

    ``reference`` is the concatenation reference, the same in every part of one message and
    different between messages to the same phone (else the phone may mix their parts); a
    reference over 255 uses the 16-bit IE. ``mr`` is the TP-MR (0 lets the modem choose).
    """
    if not 0 <= reference <= 0xFFFF:
        raise PayloadError("not_encodable", f"concatenation reference {reference} is not 0…65535")
    if not 0 <= mr <= 0xFF:
        raise PayloadError("not_encodable", f"message reference {mr} is not 0…255")
    wide = reference > 0xFF if wide_ref is None else wide_ref
    if not wide and reference > 0xFF:
        raise PayloadError("not_encodable", f"concatenation reference {reference} needs the 16-bit IE")
    address = encode_number(number)
    parts = split_text(text, wide_ref=wide)
    if len(parts) > MAX_PARTS:
        raise PayloadError("too_large", f"text needs {len(parts)} parts; at most {MAX_PARTS}")
    first = _FO_SUBMIT | (_FO_SRR if status_report else 0)
    pdus: list[Pdu] = []
    for seq, part in enumerate(parts, start=1):
        body = _units(part)
        fo = first
        udh = b""
        if len(parts) > 1:
            fo |= _FO_UDHI
            if wide:
                udh = bytes([6, 0x08, 4, reference >> 8, reference & 0xFF, len(parts), seq])
            else:
                udh = bytes([5, 0x00, 3, reference, len(parts), seq])
        user_data = udh + body
        tpdu = bytes([fo, mr]) + address + bytes([0x00, DCS_UCS2, len(user_data)]) + user_data
        pdus.append(Pdu(b"\x00" + tpdu, len(tpdu)))
    return pdus


# ------------------------------------------------------------------ decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PayloadError("bad_value", f"PDU ends inside {what} (offset {self.pos}, {len(self.data)} octets)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def octet(self, what: str) -> int:
        return self.take(1, what)[0]


def _bcd(data: bytes, digits: int, what: str) -> str:
    out = []
    for octet in data:
        out.append(octet & 0x0F)
        out.append(octet >> 4)
    if any(d > 9 for d in out[:digits]) or any(d != 0xF for d in out[digits:]):
        raise PayloadError("bad_value", f"{what} is not BCD digits: {data.hex()}")
    return "".join(str(d) for d in out[:digits])


def _address(reader: _Reader) -> str:
    digits = reader.octet("the destination length")
    if digits > 20:
        raise PayloadError("bad_value", f"destination of {digits} digits (at most 20)")
    ton = reader.octet("the destination type")
    if ton & 0x80 == 0:
        raise PayloadError("bad_value", f"type of address 0x{ton:02X} lacks bit 7")
    if (ton >> 4) & 0x07 == 0x05:
        raise PayloadError("bad_value", "alphanumeric destination")
    number = _bcd(reader.take((digits + 1) // 2, "the destination"), digits, "destination")
    return "+" + number if (ton >> 4) & 0x07 == 0x01 else number


def _smsc(reader: _Reader) -> str:
    length = reader.octet("the SMSC length")
    if length == 0:
        return ""
    if length > 11:
        raise PayloadError("bad_value", f"SMSC field of {length} octets (at most 11)")
    ton = reader.octet("the SMSC type")
    raw = reader.take(length - 1, "the SMSC")
    digits = 2 * len(raw) - (1 if raw and raw[-1] >> 4 == 0xF else 0)
    number = _bcd(raw, digits, "SMSC")
    return "+" + number if (ton >> 4) & 0x07 == 0x01 else number


def _udh(header: bytes) -> Concat | None:
    concat: Concat | None = None
    i = 0
    while i < len(header):
        if i + 2 > len(header):
            raise PayloadError("bad_value", "user data header ends inside an information element")
        iei, length = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + length]
        if len(value) != length:
            raise PayloadError("bad_value", f"information element 0x{iei:02X} longer than the header")
        if iei in (0x00, 0x08):
            if length != (3 if iei == 0x00 else 4):
                raise PayloadError("bad_value", f"concatenation IE 0x{iei:02X} of {length} octets")
            ref = value[0] if iei == 0x00 else value[0] << 8 | value[1]
            total, seq = value[-2], value[-1]
            if total == 0 or not 1 <= seq <= total:
                raise PayloadError("bad_value", f"concatenation part {seq} of {total}")
            concat = Concat(ref, total, seq, wide=iei == 0x08)
        i += 2 + length
    return concat


def decode_submit(pdu: bytes | str) -> Submit:
    """Decode one SMS-SUBMIT (SMSC field first, as sent after ``AT+CMGS``), UCS2 only."""
    if isinstance(pdu, str):
        try:
            data = bytes.fromhex(pdu)
        except ValueError as exc:
            raise PayloadError("bad_value", f"PDU is not hex: {pdu[:40]!r}") from exc
    elif isinstance(pdu, bytes | bytearray | memoryview):
        data = bytes(pdu)
    else:
        raise PayloadError("wrong_type", f"PDU must be bytes or hex, not {type(pdu).__name__}")
    if not data:
        raise PayloadError("empty", "empty PDU")
    if len(data) > 1 + 11 + 1 + 1 + 12 + 2 + 7 + 1 + MAX_USER_DATA:
        raise PayloadError("too_large", f"{len(data)} octets is longer than any SMS-SUBMIT")
    reader = _Reader(data)
    smsc = _smsc(reader)
    fo = reader.octet("the first octet")
    if fo & 0x03 != _FO_SUBMIT:
        raise PayloadError("bad_value", f"first octet 0x{fo:02X} is not an SMS-SUBMIT")
    mr = reader.octet("the message reference")
    number = _address(reader)
    reader.octet("the PID")
    dcs = reader.octet("the DCS")
    # General data coding (bits 7-6 = 00, uncompressed) with alphabet bits 3-2 = 10, or 0x08 exactly.
    if dcs & 0xE0 != 0 or dcs & 0x0C != 0x08:
        raise PayloadError("bad_value", f"DCS 0x{dcs:02X} is not uncompressed UCS2")
    vpf = (fo >> 3) & 0x03
    reader.take({0: 0, 2: 1}.get(vpf, 7), "the validity period")
    udl = reader.octet("the user data length")
    if udl > MAX_USER_DATA:
        raise PayloadError("bad_value", f"user data length {udl} > {MAX_USER_DATA}")
    user_data = reader.take(udl, "the user data")
    if reader.pos != len(data):
        raise PayloadError("bad_value", f"{len(data) - reader.pos} octets after the user data")
    concat = None
    if fo & _FO_UDHI:
        if not user_data:
            raise PayloadError("bad_value", "UDHI set but no user data")
        udhl = user_data[0]
        if 1 + udhl > len(user_data):
            raise PayloadError("bad_value", f"user data header of {udhl} octets in {udl}")
        concat = _udh(user_data[1 : 1 + udhl])
        body = user_data[1 + udhl :]
    else:
        body = user_data
    if len(body) % 2:
        raise PayloadError("bad_value", f"UCS2 text of an odd {len(body)} octets")
    try:
        text = body.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise PayloadError("bad_utf8", f"UCS2 text has a lone surrogate at octet {exc.start}") from exc
    return Submit(number, text, mr, bool(fo & _FO_SRR), concat, smsc, dcs)


def join(parts: Iterable[Submit]) -> list[str]:
    """Reassemble messages from decoded parts, in the order each message's first part came.

    Parts of one message share number and reference; they are put in ``seq`` order. A message
    with a part missing raises ``PayloadError``.
    """
    Key = tuple[str, int, int, bool]
    messages: dict[Key, dict[int, str]] = {}
    slots: list[str | Key] = []  # a single part's text, or the key of a concatenated message
    for part in parts:
        if part.concat is None:
            slots.append(part.text)
            continue
        key = (part.number, part.concat.ref, part.concat.total, part.concat.wide)
        if key not in messages:
            messages[key] = {}
            slots.append(key)
        messages[key][part.concat.seq] = part.text
    out: list[str] = []
    for slot in slots:
        if isinstance(slot, str):
            out.append(slot)
            continue
        got = messages[slot]
        missing = [s for s in range(1, slot[2] + 1) if s not in got]
        if missing:
            raise PayloadError("missing_field", f"message {slot[1]} to {slot[0]} lacks parts {missing}")
        out.append("".join(got[s] for s in range(1, slot[2] + 1)))
    return out


def decode_all(pdus: Sequence[bytes | str]) -> list[str]:
    """The texts of a run of PDUs, concatenated parts joined."""
    return join(decode_submit(p) for p in pdus)
