"""Wiegand card formats as OSDP readers pass them on: 26-bit HID H10301 and 34-bit. Pure.

An OSDP reader sends a card read as ``osdp_RAW`` (reply 0x50): a bit count and the card bits,
MSB first, left-aligned in ``ceil(bits / 8)`` bytes (PROTOCOLS.md §4.1). This module turns those
bits into a facility code and a card number, and back (the simulated reader uses ``encode``).

26-bit H10301 (PROTOCOLS.md §4.2, [V])::

    bit  0        1 ……… 8     9 ………………… 24    25
         P_even | FC (8)    | CN (16)         | P_odd
         even parity over bits 1–12 (FC and the top 4 bits of CN);
         odd parity over bits 13–24.

    FC 123, CN 4567 → 1 01111011 0001000111010111 0 → BD 88 EB 80 (left-aligned)

34-bit ([I] — an inference, not verified against a datasheet; PROTOCOLS.md §4.2 and §9.7: the
common Chinese "W34" has the same structure with 32 data bits)::

    bit  0        1 ………… 16     17 ………… 32     33
         P_even | FC (16)     | CN (16)       | P_odd
         even parity over bits 1–16, odd parity over bits 17–32.

The gateway names a card by its credential string, as access controllers report it in
``values.credential`` and as the site config lists it (``credentials = ["card:123-4567"]``):

- a card that decodes as W26 or W34: ``card:<facility>-<number>`` in decimal, no padding;
- any other bit count (a 37-bit or 40-bit format, a raw UID) or a reader that says the data is
  "raw, unspecified": ``card:raw<bits>-<hex>``, the card bits as the reader sent them, in
  lower-case hex, e.g. ``card:raw37-0a1b2c3d48``. Put exactly that string into the config to
  admit such a card.

A W26 / W34 read with a bad parity bit is a misread (a card pulled away mid-read, noise on the
D0/D1 lines): ``PayloadError("bad_parity")``, never a different card.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import PayloadError

# bits → (facility-code bits, card-number bits)
FORMATS: dict[int, tuple[int, int]] = {26: (8, 16), 34: (16, 16)}
MAX_BITS = 1024  # an OSDP RAW reply cannot carry more; anything longer is not a card


@dataclass(frozen=True, slots=True)
class Card:
    bits: int  # 26 or 34
    facility: int
    number: int

    @property
    def credential(self) -> str:
        return f"card:{self.facility}-{self.number}"


def _parity(value: int) -> int:
    return value.bit_count() & 1


def _split(bits: int) -> tuple[int, int]:
    """Data bits, and how many of the last ones the trailing odd parity covers (the leading
    even parity covers the rest)."""
    fc, cn = FORMATS[bits]
    data = fc + cn
    return data, data - data // 2


def to_int(bits: int, data: bytes) -> int:
    """The ``bits`` card bits, MSB first, left-aligned in ``data`` → an integer."""
    if not 0 < bits <= MAX_BITS:
        raise PayloadError("bad_length", f"card bit count {bits} is not 1–{MAX_BITS}")
    need = (bits + 7) // 8
    if len(data) < need:
        raise PayloadError("bad_length", f"{bits} card bits need {need} bytes, got {len(data)}")
    return int.from_bytes(data[:need], "big") >> (need * 8 - bits)


def from_int(bits: int, value: int) -> bytes:
    """The inverse of ``to_int``: left-aligned, zero padding."""
    need = (bits + 7) // 8
    return (value << (need * 8 - bits)).to_bytes(need, "big")


def decode(bits: int, data: bytes) -> Card:
    """A W26 / W34 read → facility code and card number. ``PayloadError`` for another bit
    count (``unknown_format``), too few bytes (``bad_length``) or a parity error (``bad_parity``)."""
    if bits not in FORMATS:
        raise PayloadError("unknown_format", f"no Wiegand format with {bits} bits (known: 26, 34)")
    value = to_int(bits, data)
    n_data, n_odd = _split(bits)
    payload = (value >> 1) & ((1 << n_data) - 1)
    lead, trail = value >> (bits - 1), value & 1
    high, low = payload >> n_odd, payload & ((1 << n_odd) - 1)
    if _parity(high) != lead or _parity(low) ^ 1 != trail:
        raise PayloadError("bad_parity", f"W{bits} parity check failed on {data.hex()}")
    cn_bits = FORMATS[bits][1]
    return Card(bits, payload >> cn_bits, payload & ((1 << cn_bits) - 1))


def encode(facility: int, number: int, bits: int = 26) -> bytes:
    """Facility code and card number → the card bits as a reader sends them (left-aligned)."""
    if bits not in FORMATS:
        raise PayloadError("not_encodable", f"no Wiegand format with {bits} bits (known: 26, 34)")
    fc_bits, cn_bits = FORMATS[bits]
    if not (0 <= facility < 1 << fc_bits and 0 <= number < 1 << cn_bits):
        raise PayloadError(
            "not_encodable", f"W{bits} holds FC < {1 << fc_bits} and CN < {1 << cn_bits}: {facility}, {number}"
        )
    n_odd = _split(bits)[1]
    payload = facility << cn_bits | number
    lead = _parity(payload >> n_odd)
    trail = _parity(payload & ((1 << n_odd) - 1)) ^ 1
    return from_int(bits, lead << (bits - 1) | payload << 1 | trail)


def credential(bits: int, data: bytes, wiegand: bool = True) -> str:
    """The credential string for a card read (see the module docstring).

    ``wiegand`` is false when the reader said the format is "raw, unspecified": the bits are
    then named as they are, even with 26 or 34 of them."""
    if wiegand and bits in FORMATS:
        return decode(bits, data).credential
    value = to_int(bits, data)
    return f"card:raw{bits}-{from_int(bits, value).hex()}"
