"""zigbee2mqtt codec: golden payloads from PROTOCOLS.md §2, malformed input, round trip, fuzz."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import zigbee2mqtt as z2m
from drivers.native import MAX_PAYLOAD
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
    kind_values,
    micro_times,
    only_payload_errors,
)

# --------------------------------------------------------------------------------------------
# Golden payloads


@pytest.mark.parametrize("case", cases("zigbee2mqtt", "state"))
def test_golden_state(case: dict[str, Any]) -> None:
    got = z2m.decode_state(case["payload"].encode(), case["model"], case.get("actions"))
    assert got == expected(case)
    # and the simulator side can say the same thing
    again = z2m.encode_state(case["model"], got, case.get("actions"))
    assert z2m.decode_state(again, case["model"], case.get("actions")) == got


@pytest.mark.parametrize("case", cases("zigbee2mqtt", "state_errors"))
def test_golden_state_errors(case: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        z2m.decode_state(case["payload"].encode(), case["model"], case.get("actions"))
    assert info.value.reason == case["error"]


@pytest.mark.parametrize("case", cases("zigbee2mqtt", "availability"))
def test_golden_availability(case: dict[str, Any]) -> None:
    assert [z2m.decode_availability(case["payload"].encode())] == expected(case)


@pytest.mark.parametrize("case", cases("zigbee2mqtt", "availability_errors"))
def test_golden_availability_errors(case: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        z2m.decode_availability(case["payload"].encode())
    assert info.value.reason == case["error"]


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("legacy", [True, False])
def test_availability_round_trip(online: bool, legacy: bool) -> None:
    payload = z2m.encode_availability(online, legacy=legacy)
    state = b"online" if online else b"offline"
    assert payload == (state if legacy else b'{"state":"' + state + b'"}')
    assert z2m.decode_availability(payload).kind == (Kind.ONLINE if online else Kind.OFFLINE)


def test_availability_tolerates_trailing_newline() -> None:
    assert z2m.decode_availability(b"offline\n").kind == Kind.OFFLINE


# --------------------------------------------------------------------------------------------
# Malformed input


def test_contact_false_is_open() -> None:
    """The one inversion everybody gets wrong once (PROTOCOLS.md §2)."""
    assert z2m.decode_state(b'{"contact":false}', "MCCGQ11LM") == [Observation(Kind.DOOR_OPENED)]
    assert z2m.decode_state(b'{"contact":true}', "MCCGQ11LM") == [Observation(Kind.DOOR_CLOSED)]


def test_megabyte_of_garbage_is_rejected_before_parsing() -> None:
    garbage = b"{" * (1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(PayloadError) as info:
        z2m.decode_state(garbage, "HS1SA")
    assert info.value.reason == "too_large"
    assert time.perf_counter() - started < 0.05


def test_payload_at_the_limit_is_parsed() -> None:
    payload = b'{"smoke":true,"pad":"' + b"x" * (MAX_PAYLOAD - 30) + b'"}'
    assert len(payload) <= MAX_PAYLOAD
    assert z2m.decode_state(payload, "HS1SA")[0].kind == Kind.SMOKE_ALARM


def test_invalid_utf8() -> None:
    with pytest.raises(PayloadError) as info:
        z2m.decode_state(b'{"smoke":true,"x":"\xff\xfe"}', "HS1SA")
    assert info.value.reason == "bad_utf8"


def test_deep_nesting_is_bad_json_not_recursion_error() -> None:
    with pytest.raises(PayloadError) as info:
        z2m.decode_state(b"[" * 60_000, "HS1SA")
    assert info.value.reason == "bad_json"


def test_not_bytes() -> None:
    with pytest.raises(PayloadError) as info:
        z2m.decode_state('{"smoke":true}', "HS1SA")  # type: ignore[arg-type]
    assert info.value.reason == "wrong_type"


def test_error_message_names_the_field_and_value() -> None:
    with pytest.raises(PayloadError, match=r"HS1SA: smoke must be a boolean, got 'yes'"):
        z2m.decode_state(b'{"smoke":"yes"}', "HS1SA")


def test_last_seen_forms() -> None:
    def seen(value: object) -> float | None:
        return z2m.decode_state(as_bytes({"contact": True, "last_seen": value}), "MCCGQ11LM")[0].device_time

    moment = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    assert seen("2026-05-01T00:00:00.000Z") == moment
    assert seen("2026-05-01T08:00:00.000+08:00") == moment
    assert seen(1_777_593_600_000) == moment
    assert seen("2026-05-01T08:00:00") is None  # naive: could be UTC or Beijing time
    assert seen(0) is None  # 1970: a device without a clock
    assert seen(True) is None
    assert seen({"at": 1}) is None


# --------------------------------------------------------------------------------------------
# Encoding


def test_encode_rejects_what_no_message_can_say() -> None:
    with pytest.raises(PayloadError) as info:
        z2m.encode_state("HS1SA", [Observation(Kind.SMOKE_ALARM), Observation(Kind.SMOKE_CLEAR)])
    assert info.value.reason == "not_encodable"
    with pytest.raises(PayloadError) as info:
        z2m.encode_state("HS1SA", [Observation(Kind.DOOR_OPENED)])
    assert info.value.reason == "unknown_kind"
    with pytest.raises(PayloadError) as info:
        z2m.encode_state("HS1SA", [Observation(Kind.SMOKE_ALARM, device_time=1.0e9), Observation(Kind.BATTERY_LOW)])
    assert info.value.reason == "not_encodable"
    with pytest.raises(PayloadError) as info:
        z2m.encode_state("HS1EB", [Observation(Kind.SOS_PRESSED, {"action": "double"})])
    assert info.value.reason == "not_encodable"


def test_encode_fills_in_what_a_simulator_leaves_out() -> None:
    payload = z2m.encode_state("HS1EB", [Observation(Kind.SOS_PRESSED), Observation(Kind.BATTERY, {"battery": 80})])
    assert z2m.decode_state(payload, "HS1EB") == [
        Observation(Kind.SOS_PRESSED, {"action": "single"}),
        Observation(Kind.BATTERY, {"battery": 80}),
    ]
    payload = z2m.encode_state("FDS315", [Observation(Kind.PRESENCE, {"present": False})])
    assert z2m.decode_state(payload, "FDS315") == [
        Observation(Kind.PRESENCE, {"present": False, "status": "unoccupied"})
    ]


# --------------------------------------------------------------------------------------------
# Round trip: decode(encode(x)) == x for every x that decode can produce


def _battery() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "battery": st.integers(0, 100) | st.floats(0, 100).map(lambda x: round(x, 1)),
            "voltage": st.integers(2000, 3300),
            "battery_low": st.booleans(),
            "linkquality": st.integers(0, 255),
            "last_seen": micro_times.map(lambda t: datetime.fromtimestamp(t, UTC).isoformat())
            | st.integers(946_684_800_000, 4_102_444_799_999),
        },
    )


# The documented field domains (PROTOCOLS.md §2), written out independently of the codec.
_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "HS1SA": {"smoke": st.booleans(), "enrolled": st.booleans(), "test": st.booleans()},
    "TS0205": {"smoke": st.booleans(), "tamper": st.booleans(), "test": st.booleans()},
    "MCCGQ11LM": {"contact": st.booleans(), "temperature": st.integers(-20, 60)},
    "TS0215A_sos": {"action": st.sampled_from(["emergency", ""])},
    "HS1EB": {"action": st.sampled_from(["off", "single", "double", "hold", ""])},
    "MIR-HE200-TY_fall": {
        "fall_down_status": st.sampled_from(["none", "maybe_fall", "fall"]),
        "presence": st.booleans(),
        "occupancy": st.booleans(),
        "motion_speed": st.integers(0, 10),
    },
    "HS2FD-EF1-3.0": {
        "fall_status": st.sampled_from(["normal", "fall_warning", "fall_alarm", "unknown"]),
        "occupancy": st.booleans(),
        "sensor_status": st.sampled_from(["none", "activity", "unknown"]),
    },
    "FDS315": {
        "status": st.sampled_from(["unoccupied", "occupied", "sitting", "on_the_bed", "low_posture", "falling"]),
        "breathing_rate": st.integers(0, 40),
    },
}


def test_round_trip_covers_every_model() -> None:
    assert set(_FIELDS) == set(z2m.MODELS)


@st.composite
def _messages(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, str] | None]:
    model = draw(st.sampled_from(sorted(_FIELDS)))
    msg = draw(st.fixed_dictionaries({}, optional=_FIELDS[model])) | draw(_battery())
    actions = None
    if model == "HS1EB" and draw(st.booleans()):
        actions = draw(st.dictionaries(st.sampled_from(["off", "single", "double", "hold"]), kind_values))
    return model, msg, actions


@settings(max_examples=400, deadline=None)
@given(_messages())
def test_round_trip(message: tuple[str, dict[str, Any], dict[str, str] | None]) -> None:
    model, msg, actions = message
    observations = z2m.decode_state(as_bytes(msg), model, actions)
    assert z2m.decode_state(z2m.encode_state(model, observations, actions), model, actions) == observations
    if actions is None:  # a device table may map an action to any kind
        assert {obs.kind for obs in observations} <= z2m.MODELS[model].emits


# --------------------------------------------------------------------------------------------
# Fuzz: whatever arrives, nothing but PayloadError


_NAMES = sorted({name for fields in _FIELDS.values() for name in fields} | {"battery", "voltage", "battery_low"})
_NAMES += ["linkquality", "last_seen", "action", "tamper"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(sorted(z2m.MODELS)))
def test_fuzz_bytes(payload: bytes, model: str) -> None:
    only_payload_errors(lambda: z2m.decode_state(payload, model))
    only_payload_errors(lambda: z2m.decode_availability(payload))


@settings(max_examples=300, deadline=None)
@given(json_values | json_objects | fields_with(_NAMES), st.sampled_from(sorted(z2m.MODELS)))
def test_fuzz_json(value: Any, model: str) -> None:
    payload = as_bytes(value)
    only_payload_errors(lambda: z2m.decode_state(payload, model))
    only_payload_errors(lambda: z2m.decode_availability(payload))
    only_payload_errors(lambda: z2m.decode_availability(as_bytes({"state": value})))


@settings(max_examples=200, deadline=None)
@given(fields_with(_NAMES), json_values, st.text(max_size=12))
def test_fuzz_tables_and_models(msg: dict[str, Any], actions: Any, model: str) -> None:
    only_payload_errors(lambda: z2m.decode_state(as_bytes(msg), "HS1EB", actions))
    only_payload_errors(lambda: z2m.decode_state(as_bytes(msg), model))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(z2m.MODELS)),
    st.lists(
        st.builds(
            Observation,
            st.sampled_from(list(Kind)),
            st.dictionaries(st.sampled_from(["action", "battery", "linkquality", "present", "x"]), json_scalars),
            st.none() | micro_times,
        ),
        max_size=5,
    ),
)
def test_fuzz_encode(model: str, observations: list[Observation]) -> None:
    only_payload_errors(lambda: z2m.encode_state(model, observations))
