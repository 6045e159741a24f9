"""Wiegand 26 / 34: the PROTOCOLS.md §4.2 vectors, parity, round trip, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import wiegand
from gateway.errors import PayloadError

REASONS = {"bad_parity", "bad_length", "unknown_format"}


def test_h10301_vectors_from_protocols_md() -> None:
    # FC 90, CN 324 → 00101101000000001010001000 (the bit string as PROTOCOLS.md prints it)
    data = wiegand.encode(90, 324)
    assert format(wiegand.to_int(26, data), "026b") == "00101101000000001010001000"
    assert wiegand.decode(26, data) == wiegand.Card(26, 90, 324)
    # FC 123, CN 4567 → BD 88 EB 80, the osdp_RAW card bytes of the example packet
    assert wiegand.encode(123, 4567) == bytes.fromhex("BD88EB80")
    assert wiegand.decode(26, bytes.fromhex("BD88EB80")) == wiegand.Card(26, 123, 4567)
    assert wiegand.credential(26, bytes.fromhex("BD88EB80")) == "card:123-4567"


def test_osdp_raw_reply_example_carries_the_same_card() -> None:
    # 53 80 10 00 05 | 50 | 00 | 01 | 1A 00 | BD 88 EB 80 | CD 65  (PROTOCOLS.md §4.1)
    packet = bytes.fromhex("53 80 10 00 05 50 00 01 1A 00 BD 88 EB 80 CD 65")
    bits = int.from_bytes(packet[8:10], "little")
    assert bits == 26 and packet[7] == 1  # raw Wiegand
    assert wiegand.decode(bits, packet[10:14]) == wiegand.Card(26, 123, 4567)


def test_every_single_bit_flip_is_a_parity_error_or_another_valid_card_never_a_crash() -> None:
    good = wiegand.to_int(26, wiegand.encode(123, 4567))
    for i in range(26):
        flipped = wiegand.from_int(26, good ^ (1 << i))
        with pytest.raises(PayloadError) as info:
            wiegand.decode(26, flipped)
        assert info.value.reason == "bad_parity"  # one flipped bit always breaks one parity


def test_w34_layout_even_over_first_16_odd_over_last_16() -> None:
    data = wiegand.encode(0xFFFF, 0x0001, bits=34)
    value = wiegand.to_int(34, data)
    assert value >> 33 == 0  # 16 ones: even parity bit 0
    assert value & 1 == 0  # one 1: odd parity bit 0
    assert (value >> 1) & 0xFFFFFFFF == 0xFFFF0001
    assert len(data) == 5 and wiegand.decode(34, data) == wiegand.Card(34, 0xFFFF, 1)
    assert wiegand.credential(34, data) == "card:65535-1"


def test_other_formats_are_named_raw() -> None:
    assert wiegand.credential(37, bytes.fromhex("0a1b2c3d48")) == "card:raw37-0a1b2c3d48"
    # a reader that says "raw, unspecified" for 26 bits: not guessed to be H10301
    assert wiegand.credential(26, bytes.fromhex("BD88EB80"), wiegand=False) == "card:raw26-bd88eb80"
    # padding bits after the card bits are not part of the card
    assert wiegand.credential(4, b"\xff") == "card:raw4-f0"


@pytest.mark.parametrize(
    ("bits", "data", "reason"),
    [
        (26, b"\xbd\x88\xeb", "bad_length"),
        (0, b"", "unknown_format"),
        (27, b"\x00" * 4, "unknown_format"),
        (26, bytes.fromhex("BD88EB00"), "bad_parity"),
    ],
)
def test_bad_reads(bits: int, data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        wiegand.decode(bits, data)
    assert info.value.reason == reason


def test_raw_reads_need_a_sane_bit_count_and_enough_bytes() -> None:
    for bits, data in ((0, b""), (-3, b"\x00"), (2000, b"\x00" * 300), (37, b"\x00" * 4)):
        with pytest.raises(PayloadError) as info:
            wiegand.credential(bits, data)
        assert info.value.reason == "bad_length"


def test_encode_refuses_what_the_format_cannot_hold() -> None:
    for args in ((256, 1, 26), (1, 65536, 26), (-1, 1, 26), (1, 1, 30)):
        with pytest.raises(PayloadError) as info:
            wiegand.encode(*args)
        assert info.value.reason == "not_encodable"


@given(st.sampled_from([26, 34]), st.data())
def test_round_trip(bits: int, data: st.DataObject) -> None:
    fc_bits, cn_bits = wiegand.FORMATS[bits]
    fc = data.draw(st.integers(0, (1 << fc_bits) - 1))
    cn = data.draw(st.integers(0, (1 << cn_bits) - 1))
    card = wiegand.decode(bits, wiegand.encode(fc, cn, bits))
    assert card == wiegand.Card(bits, fc, cn)
    assert card.credential == f"card:{fc}-{cn}"


@given(st.integers(-5, 2000), st.binary(max_size=140), st.booleans())
def test_fuzz_only_payload_errors(bits: int, data: bytes, is_wiegand: bool) -> None:
    try:
        text = wiegand.credential(bits, data, wiegand=is_wiegand)
    except PayloadError as exc:
        assert exc.reason in REASONS
    else:
        assert text.startswith("card:") and " " not in text
