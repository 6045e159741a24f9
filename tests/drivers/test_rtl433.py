"""rtl_433 codec: golden messages from PROTOCOLS.md §3, malformed input, round trip, fuzz."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import rtl433
from gateway.errors import PayloadError
from gateway.models import Kind, Observation
from tests.drivers.helpers import (
    as_bytes,
    cases,
    expected,
    fields_with,
    json_objects,
    json_scalars,
    json_values,
    micro_times,
    only_payload_errors,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")

# --------------------------------------------------------------------------------------------
# Golden messages


@pytest.mark.parametrize("case", cases("rtl433", "decode"))
def test_golden_decode(case: dict[str, Any]) -> None:
    msg = rtl433.parse(case["payload"].encode())
    assert list(rtl433.device_key(msg)) == case["key"]
    got = rtl433.decode(msg, case.get("codes"))
    assert got == expected(case)
    # the simulator can say the same thing, from the same device
    model, device_id, channel = rtl433.device_key(msg)
    again = rtl433.parse(rtl433.encode(model, device_id, got, channel, case.get("codes")))
    assert rtl433.device_key(again) == (model, device_id, channel)
    assert rtl433.decode(again, case.get("codes")) == got


@pytest.mark.parametrize("case", cases("rtl433", "errors"))
def test_golden_errors(case: dict[str, Any]) -> None:
    msg = rtl433.parse(case["payload"].encode())
    with pytest.raises(PayloadError) as info:
        rtl433.decode(msg, case.get("codes"))
    assert info.value.reason == case["error"]


@pytest.mark.parametrize("case", cases("rtl433", "parse_errors"))
def test_golden_parse_errors(case: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        rtl433.parse(case["payload"].encode())
    assert info.value.reason == case["error"]


# --------------------------------------------------------------------------------------------
# Identity, tables, time


def test_device_key() -> None:
    assert rtl433.device_key({"model": "Kerui-Security", "id": 0x1E240}) == ("Kerui-Security", "123456", "")
    assert rtl433.device_key({"model": "Acurite-Tower", "id": 3064, "channel": "A"}) == ("Acurite-Tower", "3064", "A")
    with pytest.raises(PayloadError) as info:
        rtl433.device_key({"model": "Kerui-Security", "id": 1.5})
    assert info.value.reason == "wrong_type"
    with pytest.raises(PayloadError) as info:
        rtl433.device_key({"model": "Kerui-Security", "id": True})
    assert info.value.reason == "wrong_type"


def test_code_table_keys_are_normalised() -> None:
    table = {"0x0e": "door_opened", "0X07": "door_closed", "010": "sos_pressed", " 11 ": "tamper"}
    assert rtl433.normalise_codes("Generic-Remote", table) == {
        "14": "door_opened",
        "7": "door_closed",
        "10": "sos_pressed",
        "11": "tamper",
    }
    assert rtl433.normalise_codes("Honeywell-Security", {"alarm": "smoke_alarm"}) == {"alarm": "smoke_alarm"}
    for bad, reason in (({"0xZZ": "door_opened"}, "bad_value"), ({"14": "opened"}, "unknown_kind")):
        with pytest.raises(PayloadError) as info:
            rtl433.normalise_codes("Generic-Remote", bad)
        assert info.value.reason == reason


def test_code_in_the_message_may_be_hex_text() -> None:
    """A flex decoder (conf/EV1527-*.conf) may print the code as text."""
    msg = {"model": "Generic-Remote", "id": 1, "cmd": "0x0a"}
    assert rtl433.decode(msg, {"10": "sos_pressed"}) == [Observation(Kind.SOS_PRESSED, {"cmd": 10})]


def test_table_can_silence_a_floating_switch() -> None:
    """Interlogix F3 floats when the external contacts are used (interlogix.c)."""
    msg = {"model": "Interlogix-Security", "subtype": "contact", "id": "a1", "switch1": "closed", "switch3": "open"}
    assert rtl433.decode(msg) == [Observation(Kind.DOOR_CLOSED), Observation(Kind.TAMPER)]
    assert rtl433.decode(msg, {"switch3": ""}) == [Observation(Kind.DOOR_CLOSED)]


def test_naive_time_is_local_time_of_the_receiver() -> None:
    msg = {"time": "2026-05-01 08:00:00", "model": "Kerui-Security", "id": 1, "cmd": 14}
    beijing = datetime(2026, 5, 1, 8, tzinfo=timezone(timedelta(hours=8))).timestamp()
    assert rtl433.decode(msg)[0].device_time == beijing
    assert rtl433.decode(msg, tz=UTC)[0].device_time == beijing + 8 * 3600
    assert rtl433.decode(msg, tz=ZoneInfo("Europe/Berlin"))[0].device_time == beijing + 6 * 3600


def test_default_timezone_is_china() -> None:
    moment = datetime(2026, 5, 1, tzinfo=UTC)
    assert rtl433.DEFAULT_TZ.utcoffset(moment) == timedelta(hours=8)


def test_encode_time_text_and_local_format() -> None:
    obs = [Observation(Kind.DOOR_OPENED, {"cmd": 14}, 1_777_593_600.25)]
    payload = rtl433.encode("Kerui-Security", "123456", obs)
    assert payload.startswith(b'{"time":"2026-05-01 08:00:00.250000","model":"Kerui-Security","id":123456,')
    verbatim = rtl433.encode("Kerui-Security", "123456", obs, time_text="2026-05-01 09:00:00")
    assert rtl433.parse(verbatim)["time"] == "2026-05-01 09:00:00"


def test_encode_repeated_hour_uses_an_offset() -> None:
    """At a DST fall-back the local text is ambiguous; encode must not lose the hour."""
    berlin = ZoneInfo("Europe/Berlin")
    second_pass = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).timestamp()  # 02:30 CET, after 02:30 CEST
    obs = [Observation(Kind.DOOR_OPENED, {"cmd": 14}, second_pass)]
    msg = rtl433.parse(rtl433.encode("Kerui-Security", "1", obs, tz=berlin))
    assert msg["time"] == "2026-10-25T02:30:00+01:00"
    assert rtl433.decode(msg, tz=berlin) == obs


def test_encode_fills_in_the_code() -> None:
    msg = rtl433.parse(rtl433.encode("Kerui-Security", "123456", [Observation(Kind.DOOR_CLOSED)]))
    assert msg == {"model": "Kerui-Security", "id": 123456, "cmd": 7, "opened": 0, "state": "close"}
    msg = rtl433.parse(rtl433.encode("Chuango-Security", "9", [Observation(Kind.SOS_PRESSED)]))
    assert msg == {"model": "Chuango-Security", "id": 9, "cmd_id": 2, "cmd": "Alarm"}


def test_encode_rejects_what_no_transmission_can_say() -> None:
    for model, obs, codes in (
        ("Kerui-Security", [Observation(Kind.SMOKE_ALARM)], None),
        ("Kerui-Security", [Observation(Kind.DOOR_OPENED), Observation(Kind.DOOR_CLOSED)], None),
        ("Generic-Remote", [Observation(Kind.SOS_PRESSED)], None),
        ("Honeywell-Security", [Observation(Kind.DOOR_OPENED), Observation(Kind.DOOR_CLOSED)], None),
        ("Smoke-GS558", [Observation(Kind.DOOR_OPENED)], None),
    ):
        with pytest.raises(PayloadError) as info:
            rtl433.encode(model, "1", obs, codes=codes)
        assert info.value.reason == "not_encodable"
    with pytest.raises(PayloadError) as info:
        rtl433.encode("Kerui-Security", "abc", [Observation(Kind.DOOR_OPENED)])
    assert info.value.reason == "not_encodable"


def test_megabyte_of_garbage_is_rejected_before_parsing() -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadError) as info:
        rtl433.parse(b'{"model":"' + b"A" * (1024 * 1024) + b'"}')
    assert info.value.reason == "too_large"
    assert time.perf_counter() - started < 0.05


def test_invalid_utf8() -> None:
    with pytest.raises(PayloadError) as info:
        rtl433.parse(b'{"model":"Kerui-Security\xc3"}')
    assert info.value.reason == "bad_utf8"


# --------------------------------------------------------------------------------------------
# Round trip: decode(encode(x)) == x for every x that decode can produce

_TIMES = (
    st.none()
    | micro_times.map(lambda t: datetime.fromtimestamp(t, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S.%f"))
    | micro_times.map(lambda t: datetime.fromtimestamp(round(t), SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"))
    | micro_times
)
_ONE_OR_ZERO = st.sampled_from([0, 1])
_OPEN_CLOSED = st.sampled_from(["open", "closed"])
_MEANINGS = st.sampled_from(["", "door_opened", "smoke_alarm", "sos_pressed", "motion", "presence", "tamper"])
_MEANINGS |= st.sampled_from([str(kind) for kind in Kind])


def _flag_table(names: list[str]) -> st.SearchStrategy[dict[str, str] | None]:
    return st.none() | st.dictionaries(st.sampled_from(names), _MEANINGS, max_size=3)


@st.composite
def _messages(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A message as the rtl_433 decoders print them (PROTOCOLS.md §3), with a device table."""
    model = draw(st.sampled_from(sorted(rtl433.MODELS)))
    msg: dict[str, Any] = {"model": model}
    codes: dict[str, str] | None = None
    if model in ("Kerui-Security", "Chuango-Security", "Generic-Remote"):
        builtin = {"Kerui-Security": [5, 7, 10, 11, 14, 15], "Chuango-Security": [0, 2, 3, 6, 7, 13]}.get(model, [])
        extra = draw(st.dictionaries(st.integers(0, 255), _MEANINGS, min_size=0 if builtin else 1, max_size=4))
        codes = {(hex(code) if draw(st.booleans()) else str(code)): kind for code, kind in extra.items()} or None
        field = "cmd_id" if model == "Chuango-Security" else "cmd"
        msg |= {"id": draw(st.integers(0, 2**20 - 1)), field: draw(st.sampled_from(builtin + sorted(extra)))}
    elif model == "Honeywell-Security":
        codes = draw(_flag_table(["contact_open", "reed_open", "alarm", "tamper", "battery_ok", "heartbeat"]))
        alarm = draw(_ONE_OR_ZERO) if codes and "alarm" in codes else 0
        flags = ["contact_open", "reed_open", "tamper", "battery_ok", "heartbeat"]
        msg |= {"id": draw(st.integers(0, 2**20 - 1)), "channel": draw(st.integers(0, 15)), "alarm": alarm}
        msg |= {name: draw(_ONE_OR_ZERO) for name in flags}
    elif model == "Interlogix-Security":
        switches = [f"switch{n}" for n in range(1, 6)]
        codes = draw(_flag_table([*switches, "battery_ok"]))
        subtype = draw(st.sampled_from(["contact", "motion", "smoke", "heat", "panic", "keyfob", "glass", "freeze"]))
        msg |= {"subtype": subtype, "id": draw(st.text("0123456789abcdef", min_size=6, max_size=6))}
        msg |= {"battery_ok": draw(_ONE_OR_ZERO)} | {name: draw(_OPEN_CLOSED) for name in switches}
    elif model == "DSC-Security":
        codes = draw(_flag_table(["closed", "tamper", "battery_ok"]))
        msg |= {"id": draw(st.integers(0, 2**24 - 1)), "closed": draw(_ONE_OR_ZERO), "event": 1}
        msg |= {"tamper": draw(_ONE_OR_ZERO), "battery_ok": draw(_ONE_OR_ZERO)}
    elif model == "Visonic-Powercode":
        codes = draw(_flag_table(["alarm", "tamper", "battery_ok", "supervised", "restore"]))
        msg |= {"id": draw(st.text("0123456789abcdef", min_size=6, max_size=6))}
        msg |= {name: draw(_ONE_OR_ZERO) for name in ("tamper", "alarm", "battery_ok", "supervised", "restore")}
    else:
        assert model == "Smoke-GS558", f"add {model} to this strategy"
        msg |= {"id": draw(st.integers(1, 0x7FFE)), "unit": draw(st.integers(0, 30)), "learn": draw(_ONE_OR_ZERO)}
    when = draw(_TIMES)
    if when is not None:
        msg["time"] = when
    return msg, codes


@settings(max_examples=500, deadline=None)
@given(_messages())
def test_round_trip(message: tuple[dict[str, Any], dict[str, str] | None]) -> None:
    msg, codes = message
    observations = rtl433.decode(msg, codes)
    model, device_id, channel = rtl433.device_key(msg)
    again = rtl433.parse(rtl433.encode(model, device_id, observations, channel, codes))
    assert rtl433.device_key(again) == (model, device_id, channel)
    assert rtl433.decode(again, codes) == observations
    if codes is None:
        assert {obs.kind for obs in observations} <= rtl433.MODELS[model].emits


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(rtl433.MODELS)), st.lists(st.sampled_from(list(Kind)), max_size=4), micro_times)
def test_encode_either_round_trips_or_refuses(model: str, kinds: list[Kind], when: float) -> None:
    """Straight from observations, as a simulator writes them: no silent drift."""
    observations = [Observation(kind, device_time=when) for kind in kinds]
    try:
        payload = rtl433.encode(model, "123", observations, "1")
    except PayloadError as exc:
        assert exc.reason in ("not_encodable", "unknown_code")
        return
    decoded = rtl433.decode(rtl433.parse(payload))
    assert Counter(obs.kind for obs in decoded) == Counter(kinds)
    assert all(obs.device_time == when for obs in decoded)


# --------------------------------------------------------------------------------------------
# Fuzz: whatever arrives, nothing but PayloadError

_NAMES = [
    "time", "id", "channel", "subtype", "cmd", "cmd_id", "contact_open", "reed_open", "alarm", "tamper",
    "battery_ok", "battery", "heartbeat", "switch1", "switch2", "switch3", "closed", "learn", "unit",
]  # fmt: skip
_ZONES = st.sampled_from([None, UTC, SHANGHAI, ZoneInfo("America/New_York")])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(payload: bytes) -> None:
    only_payload_errors(lambda: rtl433.decode(rtl433.parse(payload)))


@settings(max_examples=300, deadline=None)
@given(json_values | json_objects)
def test_fuzz_json(value: Any) -> None:
    only_payload_errors(lambda: rtl433.decode(rtl433.parse(as_bytes(value))))
    only_payload_errors(lambda: rtl433.device_key(value))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(rtl433.MODELS)),
    fields_with(_NAMES),
    st.none() | st.dictionaries(st.sampled_from([*_NAMES, "14", "0x0e"]), json_scalars, max_size=3) | json_values,
    _ZONES,
)
def test_fuzz_fields(model: str, fields: dict[str, Any], codes: Any, tz: Any) -> None:
    msg = {**fields, "model": model}
    only_payload_errors(lambda: rtl433.device_key(msg))
    only_payload_errors(lambda: rtl433.decode(msg, codes, tz))
