"""SMS PDUs (3GPP TS 23.040 / 23.038): SMS-SUBMIT out in UCS2, SMS-DELIVER in, in UCS2 or GSM 7-bit.

A pure codec: no I/O, no clock. ``encode_submit`` turns (number, text) into one PDU per part;
``decode_submit`` reads one back (the modem simulator uses it to check what the modem was asked
to send); ``decode_deliver`` reads a message the phone network delivered (what ``AT+CMGL`` lists:
the replies people text to the gateway), ``encode_deliver`` makes one (for the simulator, so the
fake modem and the real decoder share one codec); ``join`` puts the parts of a concatenated
message back together. Whatever bytes they are given, the decoders raise nothing but
``PayloadError``.

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

What we send is always UCS2: every alert text is Chinese, and UCS2 carries ASCII too (at 70
rather than 160 characters a message). What we receive may be either: a phone texts "1 7K3Q" in
the GSM 7-bit default alphabet and "确认 7K3Q" in UCS2.

An SMS-DELIVER as ``AT+CMGL`` lists it in PDU mode (TS 27.005 §3.4.2), hex::

    08 91 683108705505F0   SMSC: 8 octets with its type, international, +8613800755500 (00: none)
    ── TPDU ──
    fo                  first octet: bits 1-0 = 00 SMS-DELIVER | 0x04 TP-MMS | 0x20 TP-SRI
                        | 0x40 UDHI | 0x80 TP-RP
    len ton digits…     originator: number of digits (semi-octets), type (0x91 international,
                        0xA1 national, 0x81 unknown, 0xD0 alphanumeric: GSM 7-bit packed name)
    pid                 protocol identifier
    dcs                 data coding: 0x00 GSM 7-bit, 0x08 UCS2, 0x04 8-bit data (§4 of TS 23.038:
                        groups 00xx/01xx by bits 3-2, 1100/1101 GSM 7-bit, 1110 UCS2, 1111 bit 2)
    scts                service-centre time stamp: 7 octets of swapped BCD, YY MM DD hh mm ss and
                        the zone in quarter hours (bit 3 of the last octet: west of Greenwich)
    udl                 user data length: septets for GSM 7-bit (UDH included), else octets
    [udhl iei iel …]    a user data header (concatenation) when UDHI is set; GSM 7-bit text then
                        starts at the next septet boundary (fill bits)
    text                UTF-16BE, or septets packed LSB first (TS 23.038 §6.1.2.1)

Example, from +8613510133046 on 2014-05-22 09:30:21 (UTC+8), UCS2 "*500#大"::

    0891683108705505F0040D91683115103340F60008415022900312230C002A00350030003000235927
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from gateway.errors import PayloadError

DCS_GSM7 = 0x00
DCS_8BIT = 0x04
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


def _user_data(reader: _Reader, size: int, udhi: bool) -> tuple[bytes, bytes]:
    """The user data (``size`` octets, the last of the PDU) and its header, UDHL octet included
    (empty without UDHI): SMS-SUBMIT and SMS-DELIVER end alike."""
    user_data = reader.take(size, "the user data")
    if reader.pos != len(reader.data):
        raise PayloadError("bad_value", f"{len(reader.data) - reader.pos} octets after the user data")
    if not udhi:
        return user_data, b""
    if not user_data:
        raise PayloadError("bad_value", "UDHI set but no user data")
    udhl = user_data[0]
    if 1 + udhl > len(user_data):
        raise PayloadError("bad_value", f"user data header of {udhl} octets in {len(user_data)}")
    return user_data, user_data[: 1 + udhl]


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
    data = _data(pdu, 1 + 11 + 1 + 1 + 12 + 2 + 7 + 1 + MAX_USER_DATA, "SMS-SUBMIT")
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
    user_data, header = _user_data(reader, udl, bool(fo & _FO_UDHI))
    concat = _udh(header[1:]) if header else None
    body = user_data[len(header) :]
    if len(body) % 2:
        raise PayloadError("bad_value", f"UCS2 text of an odd {len(body)} octets")
    try:
        text = body.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise PayloadError("bad_utf8", f"UCS2 text has a lone surrogate at octet {exc.start}") from exc
    return Submit(number, text, mr, bool(fo & _FO_SRR), concat, smsc, dcs)


# ------------------------------------------------------------------ SMS-DELIVER (received)

# TS 23.038 §6.2.1: the GSM 7-bit default alphabet, and its extension table after ESC (0x1B).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
_GSM7_CODE = {c: i for i, c in enumerate(GSM7_BASIC) if i != 0x1B}
_GSM7_ESCAPED = {c: i for i, c in GSM7_EXTENSION.items()}
_ESC = 0x1B
SEPTETS_SINGLE = 160
SEPTETS_PER_PART = 153  # with the 6-octet UDH: 7 septets of header and fill
_FO_MMS = 0x04  # TP-MMS: no more messages waiting at the service centre
_TON_ALPHANUMERIC = 0x05


@dataclass(frozen=True, slots=True)
class Deliver:
    """A decoded SMS-DELIVER: what someone texted to the gateway's SIM."""

    number: str  # the originator: "+8613800138000", national digits "13800138000", or a name ("10086", "MCHS")
    text: str  # this part's text
    timestamp: datetime | None  # when the service centre took it, with its zone; None if the field is not a date
    concat: Concat | None = None
    smsc: str = ""
    dcs: int = DCS_UCS2
    pid: int = 0


class _Part(Protocol):
    @property
    def number(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def concat(self) -> Concat | None: ...


def gsm7_septets(text: str) -> list[int]:
    """``text`` as GSM 7-bit default-alphabet codes (an extension character is ESC and its
    code); ``PayloadError`` for a character the alphabet lacks."""
    out: list[int] = []
    for i, char in enumerate(text):
        if char in _GSM7_CODE:
            out.append(_GSM7_CODE[char])
        elif char in _GSM7_ESCAPED:
            out += [_ESC, _GSM7_ESCAPED[char]]
        else:
            raise PayloadError("not_encodable", f"{char!r} at {i} is not in the GSM 7-bit alphabet")
    return out


def gsm7_text(septets: Sequence[int]) -> str:
    """Codes of the GSM 7-bit default alphabet as text. An ESC before a code the extension table
    lacks shows that code's basic character, as TS 23.038 §6.2.1.1 asks; a trailing ESC is dropped."""
    out: list[str] = []
    escaped = False
    for code in septets:
        if escaped:
            out.append(GSM7_EXTENSION.get(code) or GSM7_BASIC[code])
            escaped = False
        elif code == _ESC:
            escaped = True
        else:
            out.append(GSM7_BASIC[code])
    return "".join(out)


def pack7(septets: Sequence[int], fill_bits: int = 0) -> bytes:
    """Septets packed LSB first into octets, after ``fill_bits`` zero bits (TS 23.038 §6.1.2.1.1)."""
    value = 0
    bits = fill_bits
    for code in septets:
        value |= (code & 0x7F) << bits
        bits += 7
    return value.to_bytes((bits + 7) // 8, "little") if bits else b""


def unpack7(data: bytes, count: int, skip_bits: int = 0) -> list[int]:
    """``count`` septets from ``data``, starting ``skip_bits`` into it."""
    value = int.from_bytes(data, "little")
    return [(value >> (skip_bits + 7 * i)) & 0x7F for i in range(count)]


def _swapped_bcd(octet: int) -> int | None:
    low, high = octet & 0x0F, octet >> 4
    return None if low > 9 or high > 9 else low * 10 + high


def _timestamp(raw: bytes) -> datetime | None:
    """The 7-octet TP-SCTS (TS 23.040 §9.2.3.11); None if it is not a date (some networks send junk)."""
    fields = [_swapped_bcd(b) for b in raw[:6]]
    zone_octet = raw[6]
    quarters = _swapped_bcd(zone_octet & 0xF7)
    if any(f is None for f in fields) or quarters is None:
        return None
    yy, mo, dd, hh, mi, ss = (int(f or 0) for f in fields)
    offset = timedelta(minutes=15 * quarters) * (-1 if zone_octet & 0x08 else 1)
    try:
        # Two digits of year: 90-99 are the 1990s (the oldest published examples), the rest 20xx.
        return datetime(1900 + yy if yy >= 90 else 2000 + yy, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        return None


def encode_timestamp(at: datetime) -> bytes:
    """A TP-SCTS for an aware ``at`` (its zone a whole number of quarter hours, at most ±19:45)."""
    offset = at.utcoffset()
    if offset is None:
        raise PayloadError("not_encodable", "a time stamp needs a zone")
    quarters, rest = divmod(int(offset.total_seconds()), 900)
    if rest or abs(quarters) > 79:
        raise PayloadError("not_encodable", f"zone {offset} is not a number of quarter hours within ±19:45")

    def bcd(n: int) -> int:
        return (n % 10) << 4 | (n // 10)

    zone = bcd(abs(quarters)) | (0x08 if quarters < 0 else 0)
    return bytes([bcd(at.year % 100), bcd(at.month), bcd(at.day), bcd(at.hour), bcd(at.minute), bcd(at.second), zone])


_SEMI_OCTETS = "0123456789*#abc"  # TS 23.040 §9.1.2.3: 1010 '*', 1011 '#', 1100-1110 a-c; 1111 filler


def _originator(reader: _Reader) -> str:
    length = reader.octet("the originator length")  # useful semi-octets
    if length > 20:
        raise PayloadError("bad_value", f"originator of {length} semi-octets (at most 20)")
    ton = reader.octet("the originator type")
    if ton & 0x80 == 0:
        raise PayloadError("bad_value", f"type of address 0x{ton:02X} lacks bit 7")
    raw = reader.take((length + 1) // 2, "the originator")
    if (ton >> 4) & 0x07 == _TON_ALPHANUMERIC:
        return gsm7_text(unpack7(raw, len(raw) * 8 // 7)).rstrip("@")  # trailing @ is padding (code 0)
    nibbles = [n for b in raw for n in (b & 0x0F, b >> 4)][:length]
    if any(n == 0x0F for n in nibbles):
        raise PayloadError("bad_value", f"originator has a filler inside its digits: {raw.hex()}")
    number = "".join(_SEMI_OCTETS[n] for n in nibbles)
    return "+" + number if (ton >> 4) & 0x07 == 0x01 else number


def _alphabet(dcs: int) -> int:
    """DCS_GSM7, DCS_8BIT or DCS_UCS2 for a TP-DCS (TS 23.038 §4); ``PayloadError`` for
    compressed text and the reserved groups."""
    group = dcs >> 4
    if group <= 0x07:  # general data coding, and the same with automatic deletion
        if dcs & 0x20:
            raise PayloadError("bad_value", f"DCS 0x{dcs:02X}: compressed text is not supported")
        alphabet = (dcs >> 2) & 0x03
        if alphabet == 0x03:
            raise PayloadError("bad_value", f"DCS 0x{dcs:02X}: reserved alphabet")
        return (DCS_GSM7, DCS_8BIT, DCS_UCS2)[alphabet]
    if group in (0x0C, 0x0D):  # message waiting indication: discard / store, GSM 7-bit
        return DCS_GSM7
    if group == 0x0E:  # message waiting indication, store, UCS2
        return DCS_UCS2
    if group == 0x0F:  # data coding / message class
        return DCS_8BIT if dcs & 0x04 else DCS_GSM7
    raise PayloadError("bad_value", f"DCS 0x{dcs:02X}: reserved coding group")


def _data(pdu: bytes | str, most: int, what: str = "SMS PDU") -> bytes:
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
    if len(data) > most:
        raise PayloadError("too_large", f"{len(data)} octets is longer than any {what}")
    return data


def decode_deliver(pdu: bytes | str) -> Deliver:
    """Decode one SMS-DELIVER, SMSC field first (as ``AT+CMGL`` / ``AT+CMGR`` list it in PDU
    mode): UCS2 or GSM 7-bit text, concatenation header, time stamp. 8-bit data, compressed
    text, and anything that is not an SMS-DELIVER (a status report) raise ``PayloadError``."""
    data = _data(pdu, 1 + 11 + 1 + 12 + 2 + 7 + 1 + MAX_USER_DATA)
    reader = _Reader(data)
    smsc = _smsc(reader)
    fo = reader.octet("the first octet")
    if fo & 0x03 != 0x00:
        kind = {0x01: "an SMS-SUBMIT", 0x02: "a status report"}.get(fo & 0x03, "reserved")
        raise PayloadError("bad_value", f"first octet 0x{fo:02X} is {kind}, not an SMS-DELIVER")
    number = _originator(reader)
    pid = reader.octet("the PID")
    dcs = reader.octet("the DCS")
    alphabet = _alphabet(dcs)
    timestamp = _timestamp(reader.take(7, "the time stamp"))
    udl = reader.octet("the user data length")
    if alphabet == DCS_GSM7:
        if udl > SEPTETS_SINGLE:
            raise PayloadError("bad_value", f"user data length {udl} septets > {SEPTETS_SINGLE}")
        size = (udl * 7 + 7) // 8
    else:
        if udl > MAX_USER_DATA:
            raise PayloadError("bad_value", f"user data length {udl} > {MAX_USER_DATA}")
        size = udl
    user_data, header = _user_data(reader, size, bool(fo & _FO_UDHI))
    concat = _udh(header[1:]) if header else None
    if alphabet == DCS_8BIT:
        raise PayloadError("bad_value", f"DCS 0x{dcs:02X}: 8-bit data, not text")
    if alphabet == DCS_GSM7:
        header_septets = (len(header) * 8 + 6) // 7
        if header_septets > udl:
            raise PayloadError("bad_value", f"user data header longer than the {udl} septets")
        septets = unpack7(user_data, udl)[header_septets:]
        text = gsm7_text(septets)
    else:
        body = user_data[len(header) :]
        if len(body) % 2:
            raise PayloadError("bad_value", f"UCS2 text of an odd {len(body)} octets")
        try:
            text = body.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise PayloadError("bad_utf8", f"UCS2 text has a lone surrogate at octet {exc.start}") from exc
    return Deliver(number, text, timestamp, concat, smsc, dcs, pid)


def _encode_originator(number: str) -> bytes:
    if _NUMBER.fullmatch(number):
        return encode_number(number)
    septets = gsm7_septets(number)
    packed = pack7(septets)
    if not number or len(septets) > 11:
        raise PayloadError("not_encodable", f"an alphanumeric originator of 1-11 characters, not {number!r}")
    return bytes([(len(septets) * 7 + 3) // 4, 0xD0]) + packed


def _split_gsm7(septets: list[int]) -> list[list[int]]:
    if len(septets) <= SEPTETS_SINGLE:
        return [septets]
    parts: list[list[int]] = []
    start = 0
    while start < len(septets):
        end = min(start + SEPTETS_PER_PART, len(septets))
        if end < len(septets) and septets[end - 1] == _ESC and (end - 1 == start or septets[end - 2] != _ESC):
            end -= 1  # never split an escape from its character
        parts.append(septets[start:end])
        start = end
    return parts


def encode_deliver(
    number: str,
    text: str,
    at: datetime,
    *,
    gsm7: bool = False,
    reference: int = 0,
    smsc: str = "",
    pid: int = 0,
) -> list[Pdu]:
    """SMS-DELIVER PDUs for ``text`` from ``number``, as a modem would list them (the simulator's
    incoming messages): UCS2, or GSM 7-bit when ``gsm7`` (``PayloadError`` if the text has a
    character that alphabet lacks); several parts, with an 8-bit concatenation reference, when
    the text does not fit in one."""
    if not 0 <= reference <= 0xFF:
        raise PayloadError("not_encodable", f"concatenation reference {reference} is not 0…255")
    originator = _encode_originator(number)
    stamp = encode_timestamp(at)
    centre = b"\x00"
    if smsc:
        address = encode_number(smsc)  # digit count, type, digits → the SMSC field counts octets
        centre = bytes([len(address) - 1]) + address[1:]
    if gsm7:
        septet_parts = _split_gsm7(gsm7_septets(text))
    else:
        septet_parts = []
        ucs2_parts = split_text(text)
    total = len(septet_parts) if gsm7 else len(ucs2_parts)
    if total > MAX_PARTS:
        raise PayloadError("too_large", f"text needs {total} parts; at most {MAX_PARTS}")
    pdus: list[Pdu] = []
    for seq in range(1, total + 1):
        udh = bytes([5, 0x00, 3, reference, total, seq]) if total > 1 else b""
        if gsm7:
            septets = septet_parts[seq - 1]
            skip = len(udh) * 8 + (7 - len(udh) * 8 % 7) % 7  # the header, then fill to a septet boundary
            user_data = udh + pack7(septets, skip)[len(udh) :]
            udl = skip // 7 + len(septets)
            dcs = DCS_GSM7
        else:
            user_data = udh + _units(ucs2_parts[seq - 1])
            udl = len(user_data)
            dcs = DCS_UCS2
        fo = 0x00 | _FO_MMS | (_FO_UDHI if udh else 0)
        tpdu = bytes([fo]) + originator + bytes([pid, dcs]) + stamp + bytes([udl]) + user_data
        pdus.append(Pdu(centre + tpdu, len(tpdu)))
    return pdus


def join(parts: Iterable[_Part]) -> list[str]:
    """Reassemble messages from decoded parts, in the order each message's first part came.

    Parts of one message share number and reference; they are put in ``seq`` order. A message
    with a part missing raises ``PayloadError``. Works for sent (``Submit``) and received
    (``Deliver``) parts alike.
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
            raise PayloadError("missing_field", f"message {slot[1]} with {slot[0]} lacks parts {missing}")
        out.append("".join(got[s] for s in range(1, slot[2] + 1)))
    return out


def decode_all(pdus: Sequence[bytes | str]) -> list[str]:
    """The texts of a run of PDUs, concatenated parts joined."""
    return join(decode_submit(p) for p in pdus)
