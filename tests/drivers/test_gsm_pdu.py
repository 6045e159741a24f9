"""The SMS-SUBMIT codec: golden PDUs, splitting, round trips, and the decoder fed garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import gsm_pdu
from drivers.gsm_pdu import Concat, decode_all, decode_submit, encode_submit, fit, join, split_text, units
from gateway.errors import PayloadError

# Made with python-gsmmodem-new 0.13.0 (PyPI; status report requested): an independent encoder.
PROTOCOLS_TEXT = "【紧急】3号楼502室独居老人跌倒报警"
PROTOCOLS_PDU = (
    "0021000D91683108108300F000082630107D2760253011003353F7697C0035003000325BA472EC5C4580014EBA8DCC501262A58B66"
)

# A two-part message made by python-gsmmodem-new 0.13.0's encodeSmsSubmitPdu(number, text,
# reference=0x2A, requestStatusReport=False): an independent encoder, byte for byte.
ALERT = (
    "【紧急报警】1号楼1单元101室 卧室 独居老人刘素芬 疑似跌倒，已超过5分钟未起身，请立即上门查看。"
    "告警编号 7c97d1cc6c03，确认请回复：sensegate alerts ack 7c97d1cc6c03"
)
ALERT_PDUS = [
    (
        154,
        "00412A0D91683108108300F000088C0500032A020130107D27602562A58B663011003153F7697C0031535551430031003000315BA4"
        "002053675BA4002072EC5C4580014EBA52187D2082AC002075914F3C8DCC5012FF0C5DF28D858FC700355206949F672A8D778EAB"
        "FF0C8BF77ACB53734E0A95E867E5770B3002544A8B667F1653F7002000370063003900370064003100630063003600630030",
    ),
    (
        102,
        "00412A0D91683108108300F00008580500032A02020033FF0C786E8BA48BF756DE590DFF1A00730065006E0073006500670061007400"
        "6500200061006C0065007200740073002000610063006B0020003700630039003700640031006300630036006300300033",
    ),
]
# The same text to a national number, as that library writes it (type of number 0xA1, national).
ALERT_NATIONAL_PART1 = (
    "00412A0BA13108108300F000088C0500032A020130107D27602562A58B663011003153F7697C0031535551430031003000315BA4"
    "002053675BA4002072EC5C4580014EBA52187D2082AC002075914F3C8DCC5012FF0C5DF28D858FC700355206949F672A8D778EAB"
    "FF0C8BF77ACB53734E0A95E867E5770B3002544A8B667F1653F7002000370063003900370064003100630063003600630030"
)


# ------------------------------------------------------------------ golden


def test_protocols_example_byte_for_byte() -> None:
    (pdu,) = encode_submit("+8613800138000", PROTOCOLS_TEXT, status_report=True)
    assert pdu.hex() == PROTOCOLS_PDU
    assert pdu.tpdu_length == 52  # AT+CMGS=52
    got = decode_submit(PROTOCOLS_PDU)
    assert got.number == "+8613800138000"
    assert got.text == PROTOCOLS_TEXT
    assert got.status_report and got.concat is None and got.smsc == "" and got.dcs == 0x08


def test_two_parts_match_an_independent_encoder() -> None:
    pdus = encode_submit("+8613800138000", ALERT, reference=0x2A, mr=0x2A)
    assert [(p.tpdu_length, p.hex()) for p in pdus] == ALERT_PDUS
    parts = [decode_submit(hex_) for _, hex_ in ALERT_PDUS]
    assert [p.concat for p in parts] == [Concat(0x2A, 2, 1), Concat(0x2A, 2, 2)]
    assert units(parts[0].text) == 67
    assert join(parts) == [ALERT]


def test_a_national_number_from_another_encoder_decodes() -> None:
    part = decode_submit(ALERT_NATIONAL_PART1)
    assert part.number == "13800138000"
    assert part.text == ALERT[:67]


def test_numbers() -> None:
    assert gsm_pdu.encode_number("+8613800138000").hex().upper() == "0D91683108108300F0"
    assert gsm_pdu.encode_number("13800138000").hex().upper() == "0B813108108300F0"
    assert gsm_pdu.encode_number("10086").hex().upper() == "05810180F6"
    for bad in ("", "+", "138 0013 8000", "+86-138", "abc", "1" * 21):
        with pytest.raises(PayloadError) as err:
            gsm_pdu.encode_number(bad)
        assert err.value.reason == "not_encodable"
    pdu = encode_submit("10086", "查询")[0]
    assert decode_submit(pdu.data).number == "10086"


def test_an_smsc_field_and_a_validity_period_are_read() -> None:
    # SMSC +8613800100500, relative validity period (VPF 10) of one day (0xA7).
    tpdu = "11000B813108108300F00008A7046D4B8BD5"
    pdu = "0891683108100005F0" + tpdu
    got = decode_submit(pdu)
    assert got.smsc == "+8613800100500"
    assert got.number == "13800138000" and got.text == "测试"


# ------------------------------------------------------------------ splitting


def test_sizes() -> None:
    assert len(split_text("字" * 70)) == 1
    assert [units(p) for p in split_text("字" * 71)] == [67, 4]
    assert [units(p) for p in split_text("字" * 200)] == [67, 67, 66]
    assert [units(p) for p in split_text("字" * 200, wide_ref=True)] == [66, 66, 66, 2]
    for pdu in encode_submit("+8613800138000", "字" * 2000):
        assert len(pdu.data) - 1 == pdu.tpdu_length
        user_data_length = pdu.data[1 + 2 + 9 + 2]
        assert user_data_length <= 140


def test_a_surrogate_pair_is_never_split() -> None:
    text = "字" * 66 + "😀" + "字" * 10  # the emoji straddles unit 67
    parts = split_text(text)
    assert parts[0] == "字" * 66 and parts[1].startswith("😀")
    assert "".join(parts) == text


def test_a_16_bit_reference() -> None:
    pdus = encode_submit("+8613912345678", "跌" * 140, reference=0x1234)
    assert len(pdus) == 3
    parts = [decode_submit(p.hex()) for p in pdus]
    assert all(p.concat is not None and p.concat.wide and p.concat.ref == 0x1234 for p in parts)
    assert all(p.data[1 + 2 + 9 + 2] <= 140 for p in pdus)
    assert join(parts) == ["跌" * 140]


def test_fit_cuts_with_an_ellipsis() -> None:
    assert fit("短信", 1) == ("短信", False)
    text, cut = fit("字" * 500, 2)
    assert cut and text.endswith("…") and len(split_text(text)) == 2 and units(text) == 134
    text, cut = fit("字" * 500, 1)
    assert cut and units(text) == 70
    text, cut = fit("😀" * 300, 3)
    assert cut and len(split_text(text)) <= 3 and text.endswith("…")
    text.encode("utf-16-be")  # no lone surrogate


def test_too_many_parts_and_bad_input() -> None:
    with pytest.raises(PayloadError) as err:
        encode_submit("+8613800138000", "字" * (67 * 256))
    assert err.value.reason == "too_large"
    with pytest.raises(PayloadError) as err:
        encode_submit("+8613800138000", "a\ud800b")
    assert err.value.reason == "not_encodable"
    with pytest.raises(PayloadError):
        encode_submit("+8613800138000", "x", reference=70000)


def test_join_keeps_order_and_finds_missing_parts() -> None:
    a = [decode_submit(p.data) for p in encode_submit("+8613800138001", "甲" * 100, reference=1)]
    b = [decode_submit(p.data) for p in encode_submit("+8613800138002", "乙" * 100, reference=1)]
    c = decode_submit(encode_submit("+8613800138001", "")[0].data)
    assert join([a[1], b[0], c, a[0], b[1]]) == ["甲" * 100, "乙" * 100, ""]
    with pytest.raises(PayloadError) as err:
        join(a[:1])
    assert err.value.reason == "missing_field"
    assert decode_all([p.hex() for p in encode_submit("+8613800138000", ALERT)]) == [ALERT]


# ------------------------------------------------------------------ properties

numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
# Any code points but lone surrogates, and texts dense in surrogate pairs so that part boundaries
# land inside them often.
texts = st.text(max_size=600) | st.text(st.sampled_from(["字", "😀", "𠀀", "a", "\u200d", "【"]), max_size=400)


@settings(max_examples=300, deadline=None)
@given(number=numbers, text=texts, reference=st.integers(0, 0xFFFF), report=st.booleans())
def test_round_trip(number: str, text: str, reference: int, report: bool) -> None:
    pdus = encode_submit(number, text, reference=reference, status_report=report)
    parts = [decode_submit(p.hex()) for p in pdus]
    assert join(parts) == [text]
    for pdu, part in zip(pdus, parts, strict=True):
        assert part.number == number and part.status_report == report
        assert len(pdu.data) - 1 == pdu.tpdu_length <= 164
        assert (part.concat is None) == (len(pdus) == 1)
        part.text.encode("utf-16-be")  # every part is valid UTF-16 on its own


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=1, max_size=1500), max_parts=st.integers(1, 10))
def test_fit_property(text: str, max_parts: int) -> None:
    fitted, cut = fit(text, max_parts)
    assert len(split_text(fitted)) <= max_parts
    assert cut == (fitted != text)
    if cut:
        assert fitted.endswith("…") and text.startswith(fitted[:-1])


def _only_payload_errors(data: bytes | str) -> None:
    try:
        decode_submit(data)
    except PayloadError as exc:
        assert exc.reason in {"bad_value", "bad_utf8", "empty", "too_large", "wrong_type"}, exc.reason
        assert str(exc)


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_bytes(data: bytes) -> None:
    _only_payload_errors(data)


@settings(max_examples=300, deadline=None)
@given(data=st.text(max_size=120))
def test_fuzz_hex_strings(data: str) -> None:
    _only_payload_errors(data)


@settings(max_examples=500, deadline=None)
@given(base=st.sampled_from([PROTOCOLS_PDU, ALERT_PDUS[0][1], ALERT_PDUS[1][1]]), data=st.data())
def test_fuzz_mutated_real_pdus(base: str, data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(base))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _only_payload_errors(bytes(raw[:cut]))
    _only_payload_errors(bytes(raw))


def test_decoder_rejects_what_it_cannot_read() -> None:
    for bad, reason in [
        ("", "empty"),
        ("zz", "bad_value"),
        (PROTOCOLS_PDU[:-4], "bad_value"),  # shorter than its UDL
        (PROTOCOLS_PDU + "00", "bad_value"),  # longer
        (PROTOCOLS_PDU[:2] + "04" + PROTOCOLS_PDU[4:], "bad_value"),  # an SMS-DELIVER first octet
        (PROTOCOLS_PDU.replace("00082630", "00002630"), "bad_value"),  # GSM 7-bit: not supported
        ("0001000D91683108108300F0000804D83DD83D", "bad_utf8"),  # two high surrogates
    ]:
        with pytest.raises(PayloadError) as err:
            decode_submit(bad)
        assert err.value.reason == reason, bad
    with pytest.raises(PayloadError) as err:
        decode_submit(123)  # type: ignore[arg-type]
    assert err.value.reason == "wrong_type"
