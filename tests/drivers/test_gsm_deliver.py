"""SMS-DELIVER (what people text to the gateway): real PDUs from public sources, GSM 7-bit and UCS2,
round trips through the simulator's encoder, and the decoder fed garbage."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gsm_pdu import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Concat,
    decode_deliver,
    decode_submit,
    encode_deliver,
    encode_timestamp,
    gsm7_septets,
    gsm7_text,
    join,
    pack7,
    unpack7,
)
from gateway.errors import PayloadError

GOLDEN = json.loads((Path(__file__).parent / "testdata" / "sms_deliver.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_real_pdus(case: dict[str, Any]) -> None:
    got = decode_deliver(case["pdu"])
    assert (got.smsc, got.number, got.text, got.dcs) == (case["smsc"], case["number"], case["text"], case["dcs"])
    assert got.timestamp == datetime.fromisoformat(case["timestamp"])
    assert (
        got.timestamp is not None and got.timestamp.utcoffset() == datetime.fromisoformat(case["timestamp"]).utcoffset()
    )
    concat = case.get("concat")
    assert got.concat == (Concat(**concat) if concat else None)
    assert decode_deliver(bytes.fromhex(case["pdu"])) == got  # bytes or hex alike
    assert decode_deliver(case["pdu"].lower()) == got


def test_a_real_two_part_gsm7_message_with_fill_bits_joins() -> None:
    concat = GOLDEN["concatenated"]
    parts = [decode_deliver(p) for p in reversed(concat["pdus"])]  # arriving out of order
    assert [p.concat.seq for p in parts if p.concat] == [2, 1]
    assert {p.number for p in parts} == {concat["number"]}
    assert join(parts) == [concat["text"]]


def test_not_a_deliver_is_refused() -> None:
    submit = (
        "0021000D91683108108300F000082630107D2760253011003353F7697C0035003000325BA472EC5C4580014EBA8DCC501262A58B66"
    )
    decode_submit(submit)
    with pytest.raises(PayloadError, match="SMS-SUBMIT"):
        decode_deliver(submit)
    status_report = "0006D60B911326880736F4111011719551401110117195714000"  # no SMSC, fo 0x06: MTI 10
    with pytest.raises(PayloadError, match="status report"):
        decode_deliver(status_report)


def test_eight_bit_data_and_compressed_text_are_not_text() -> None:
    at = datetime(2026, 3, 2, 3, 12, tzinfo=timezone(timedelta(hours=8)))
    (pdu,) = encode_deliver("+8613800000011", "1 7K3Q", at)
    raw = bytearray(pdu.data)
    dcs_at = 1 + 1 + 1 + 2 + 6 + 1  # SMSC 00, fo, OA length, type, 6 octets of digits, PID
    for dcs, what in ((0x04, "8-bit data"), (0x28, "compressed"), (0x0C, "reserved alphabet"), (0x80, "reserved")):
        raw[dcs_at] = dcs
        with pytest.raises(PayloadError, match=what):
            decode_deliver(bytes(raw))


def test_dcs_groups_that_mean_gsm7_or_ucs2() -> None:
    at = datetime(2026, 3, 2, 3, 12, tzinfo=UTC)
    dcs_at = 1 + 1 + 1 + 2 + 6 + 1
    (ucs2,) = encode_deliver("+8613800000011", "确认 7K3Q", at)
    for dcs in (0x08, 0x18, 0x48, 0xE0):  # general (class / auto-delete) and message-waiting UCS2
        raw = bytearray(ucs2.data)
        raw[dcs_at] = dcs
        assert decode_deliver(bytes(raw)).text == "确认 7K3Q"
    (gsm7,) = encode_deliver("+8613800000011", "1 7K3Q", at, gsm7=True)
    for dcs in (0x00, 0x10, 0xC0, 0xD0, 0xF0, 0xF1):
        raw = bytearray(gsm7.data)
        raw[dcs_at] = dcs
        assert decode_deliver(bytes(raw)).text == "1 7K3Q"


def test_gsm7_alphabet_extension_and_an_unknown_escape() -> None:
    assert len(GSM7_BASIC) == 128 and GSM7_BASIC[0x1B] == "\x1b"
    text = "Price: 5€ [ok] {x} ~^|\\ @£$¥ ÄÖÑÜ§ ¿àéù"
    septets = gsm7_septets(text)
    assert septets.count(0x1B) == sum(c in GSM7_EXTENSION.values() for c in text)
    assert gsm7_text(septets) == text
    assert gsm7_text([0x1B, 0x41]) == "A"  # an escape the table lacks shows the basic character
    assert gsm7_text([0x41, 0x1B]) == "A"
    with pytest.raises(PayloadError, match="not in the GSM 7-bit alphabet"):
        gsm7_septets("确认")


def test_septet_packing_matches_the_spec_example() -> None:
    # TS 23.038 §6.1.2.1.1 / the dreamfabric example: "hellohello" packs to E8329BFD4697D9EC37.
    assert pack7(gsm7_septets("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    assert gsm7_text(unpack7(bytes.fromhex("E8329BFD4697D9EC37"), 10)) == "hellohello"


def test_time_stamps() -> None:
    east = datetime(2026, 3, 2, 3, 12, 5, tzinfo=timezone(timedelta(hours=8)))
    assert encode_timestamp(east).hex().upper() == "62302030215023"
    west = datetime(2026, 3, 2, 3, 12, 5, tzinfo=timezone(-timedelta(hours=4, minutes=30)))
    assert encode_timestamp(west)[6] == 0x89  # 18 quarters, swapped, with the sign bit
    for at in (east, west):
        (pdu,) = encode_deliver("10086", "x", at)
        assert decode_deliver(pdu.data).timestamp == at
    with pytest.raises(PayloadError):
        encode_timestamp(datetime(2026, 3, 2))  # naive
    with pytest.raises(PayloadError):
        encode_timestamp(datetime(2026, 3, 2, tzinfo=timezone(timedelta(minutes=10))))


def test_a_time_stamp_that_is_not_a_date_is_none_not_an_error() -> None:
    (pdu,) = encode_deliver("+8613800000011", "1 7K3Q", datetime(2026, 3, 2, tzinfo=UTC))
    raw = bytearray(pdu.data)
    stamp_at = len(raw) - 7 - 1 - 12  # before the UDL and 12 octets of UCS2
    raw[stamp_at + 1] = 0x31  # month 13
    assert decode_deliver(bytes(raw)).timestamp is None
    raw[stamp_at] = 0xFA  # not BCD
    assert decode_deliver(bytes(raw)).text == "1 7K3Q"


def test_originators() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    for number in ("+8613800000011", "13800000011", "10086", "SenseGate"):
        (pdu,) = encode_deliver(number, "hi", at)
        assert decode_deliver(pdu.data).number == number
    with pytest.raises(PayloadError):
        encode_deliver("a name far too long", "hi", at)
    # Service numbers may hold * and # (TS 23.040 §9.1.2.3): "*#06#" is semi-octets A B 0 6 B.
    (pdu,) = encode_deliver("10086", "hi", at)
    raw = pdu.data.replace(bytes.fromhex("05810180F6"), bytes.fromhex("0581BA60FB"), 1)
    assert decode_deliver(raw).number == "*#06#"


def test_the_smsc_field_is_read() -> None:
    (pdu,) = encode_deliver("+8613800000011", "1 7K3Q", datetime(2026, 3, 2, tzinfo=UTC), smsc="+8613800100500")
    assert pdu.hex().startswith("0891683108100005F0")
    assert decode_deliver(pdu.hex()).smsc == "+8613800100500"
    assert pdu.tpdu_length == len(pdu.data) - 9


def test_long_replies_split_and_join() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    ucs2 = "已到现场，老人无碍。" * 20
    pdus = encode_deliver("+8613800000011", ucs2, at, reference=7)
    assert len(pdus) == 3 and all(len(p.data) - 1 <= 1 + 12 + 2 + 7 + 1 + 140 for p in pdus)
    assert join(decode_deliver(p.data) for p in pdus) == [ucs2]
    gsm7 = "on my way " * 40 + "€"
    pdus = encode_deliver("+8613800000011", gsm7, at, gsm7=True, reference=8)
    assert len(pdus) == 3
    assert join(decode_deliver(p.data) for p in pdus) == [gsm7]
    with pytest.raises(PayloadError, match="lacks parts"):
        join(decode_deliver(p.data) for p in pdus[:2])


# ------------------------------------------------------------------ properties

gsm7_chars = st.sampled_from(list(GSM7_BASIC.replace("\x1b", "")) + list(GSM7_EXTENSION.values()))
numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
zones = st.integers(-79, 79).map(lambda q: timezone(timedelta(minutes=15 * q)))
times = st.builds(
    lambda t, z: datetime(2000, 1, 1, tzinfo=z) + timedelta(seconds=t), st.integers(0, 89 * 365 * 86_400), zones
)


@given(number=numbers, text=st.text(max_size=400), at=times, reference=st.integers(0, 255))
def test_round_trip_ucs2(number: str, text: str, at: datetime, reference: int) -> None:
    try:
        pdus = encode_deliver(number, text, at, reference=reference)
    except PayloadError:  # a lone surrogate
        return
    parts = [decode_deliver(p.hex()) for p in pdus]
    assert join(parts) == [text]
    assert all(p.number == number and p.timestamp == at and p.dcs == 0x08 for p in parts)
    assert all(p.tpdu_length == len(p.data) - 1 for p in pdus)


@given(number=numbers, text=st.text(gsm7_chars, max_size=500), at=times, reference=st.integers(0, 255))
def test_round_trip_gsm7(number: str, text: str, at: datetime, reference: int) -> None:
    pdus = encode_deliver(number, text, at, gsm7=True, reference=reference)
    parts = [decode_deliver(p.data) for p in pdus]
    assert join(parts) == [text]
    assert all(p.dcs == 0x00 and (p.concat is None) == (len(pdus) == 1) for p in parts)


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_fuzz_bytes(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode_deliver(data)


@settings(max_examples=300)
@given(base=st.sampled_from([c["pdu"] for c in CASES] + GOLDEN["concatenated"]["pdus"]), data=st.data())
def test_fuzz_mutated_real_pdus(base: str, data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(base))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(PayloadError):
            decode_deliver(candidate)
