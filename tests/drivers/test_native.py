"""Native codec: the documented schema (docs/payloads-native.md), errors, round trip, fuzz."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import native
from gateway.errors import PayloadError
from gateway.models import Kind, Observation, Scalar
from tests.drivers.helpers import (
    MAX_T,
    MIN_T,
    as_bytes,
    cases,
    expected,
    fields_with,
    golden,
    json_objects,
    json_values,
    only_payload_errors,
)

DOC = Path(__file__).parents[2] / "docs" / "payloads-native.md"


@pytest.mark.parametrize("case", cases("native", "decode"))
def test_golden_decode(case: dict[str, Any]) -> None:
    message = native.decode(case["payload"].encode())
    assert message == native.NativeMessage(case["device"], tuple(expected(case)))
    assert native.decode(native.encode(message.observations, message.device)) == message


@pytest.mark.parametrize("case", cases("native", "errors"))
def test_golden_errors(case: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        native.decode(case["payload"].encode())
    assert info.value.reason == case["error"]


def test_every_example_in_the_documentation_decodes() -> None:
    """The schema document is for device makers: its examples must be right."""
    examples = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(examples) >= 4
    for example in examples:
        native.decode(example.encode())


def test_every_error_reason_in_the_documentation_is_tested() -> None:
    errors = DOC.read_text(encoding="utf-8").split("## Errors", 1)[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", errors, flags=re.MULTILINE))
    tested = {case["error"] for case in golden("native")["errors"]} | {"too_large", "bad_utf8", "bad_value"}
    assert documented and documented <= tested


def test_batch_limit() -> None:
    item = {"kind": "heartbeat"}
    assert len(native.decode(as_bytes([item] * native.MAX_BATCH)).observations) == native.MAX_BATCH
    with pytest.raises(PayloadError) as info:
        native.decode(as_bytes([item] * (native.MAX_BATCH + 1)))
    assert info.value.reason == "too_large"


def test_megabyte_of_garbage_is_rejected_before_parsing() -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadError) as info:
        native.decode(b"\x00" * (1024 * 1024))
    assert info.value.reason == "too_large"
    assert time.perf_counter() - started < 0.05


def test_invalid_utf8_and_lone_surrogates() -> None:
    with pytest.raises(PayloadError) as info:
        native.decode(b'{"kind":"door_opened","values":{"who":"\xe5\xbc"}}')
    assert info.value.reason == "bad_utf8"
    with pytest.raises(PayloadError) as info:
        native.decode(b'{"kind":"door_opened","values":{"who":"\\ud800"}}')
    assert info.value.reason == "bad_value"


def test_values_limits() -> None:
    too_long = {"kind": "door_opened", "values": {"note": "x" * (native.MAX_TEXT_LEN + 1)}}
    too_big = {"kind": "door_opened", "values": {"count": 2**63}}
    long_key = {"kind": "door_opened", "values": {"k" * (native.MAX_KEY_LEN + 1): 1}}
    for payload in (too_long, too_big, long_key):
        with pytest.raises(PayloadError) as info:
            native.decode(as_bytes(payload))
        assert info.value.reason == "bad_value"


def test_time_is_exact() -> None:
    message = native.decode(b'{"kind":"door_opened","time":"2026-11-22T08:00:00.123456+08:00"}')
    assert message.observations[0].device_time == 1_795_305_600.123456


def test_encode_refuses_what_decode_would_reject() -> None:
    for observations, reason in (
        ([], "empty"),
        ([Observation(Kind.ACCESS_GRANTED, {"person": "张三"})], "missing_field"),
        ([Observation(Kind.DOOR_OPENED, {"nested": {"a": 1}})], "wrong_type"),  # type: ignore[dict-item]
        ([Observation(Kind.DOOR_OPENED, device_time=0.0)], "bad_time"),
        ([Observation(Kind.DOOR_OPENED, {"x": float("nan")})], "bad_value"),
        ([Observation(Kind.HEARTBEAT)] * (native.MAX_BATCH + 1), "too_large"),
    ):
        with pytest.raises(PayloadError) as info:
            native.encode(observations)
        assert info.value.reason == reason


def test_encode_is_readable_json() -> None:
    payload = native.encode([Observation(Kind.ACCESS_GRANTED, {"credential": "card:1", "person": "张三"})], "gate-1")
    assert json.loads(payload) == {
        "v": 1,
        "kind": "access_granted",
        "device": "gate-1",
        "values": {"credential": "card:1", "person": "张三"},
    }
    assert "张三".encode() in payload


# --------------------------------------------------------------------------------------------
# Round trip over generated observations

_text = st.text(max_size=20)
_scalars: st.SearchStrategy[Scalar] = (
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | _text
)
_keys = st.text(min_size=1, max_size=12)
_times = st.none() | st.floats(MIN_T, MAX_T, exclude_max=True) | st.integers(MIN_T, MAX_T - 1).map(float)


@st.composite
def _observation(draw: st.DrawFn) -> Observation:
    kind = draw(st.sampled_from(list(Kind)))
    values = draw(st.dictionaries(_keys, _scalars, max_size=4))
    if kind in native.ACCESS_KINDS:
        values["credential"] = draw(st.text(min_size=1, max_size=20))
        extras = {
            "person": _text,
            "direction": st.sampled_from(sorted(native.DIRECTIONS)),
            "method": st.sampled_from(sorted(native.METHODS)),
        }
        values |= draw(st.fixed_dictionaries({}, optional=extras))
    return Observation(kind, values, draw(_times))


@settings(max_examples=400, deadline=None)
@given(st.lists(_observation(), min_size=1, max_size=5), st.none() | st.text(min_size=1, max_size=16))
def test_round_trip(observations: list[Observation], device: str | None) -> None:
    message = native.decode(native.encode(observations, device))
    assert message == native.NativeMessage(device, tuple(observations))


# --------------------------------------------------------------------------------------------
# Fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(payload: bytes) -> None:
    only_payload_errors(lambda: native.decode(payload))


_FIELDS = ["v", "kind", "time", "values", "device"]


@settings(max_examples=400, deadline=None)
@given(json_values | json_objects | fields_with(_FIELDS) | st.lists(fields_with(_FIELDS), max_size=3))
def test_fuzz_json(value: Any) -> None:
    only_payload_errors(lambda: native.decode(as_bytes(value)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Kind)), json_values, json_values)
def test_fuzz_known_kind(kind: Kind, values: Any, when: Any) -> None:
    only_payload_errors(lambda: native.decode(as_bytes({"kind": str(kind), "values": values, "time": when})))


# --------------------------------------------------------------------------------------------
# load_json: msgspec first, json where msgspec refuses or might differ; both read alike


def _loaded(payload: bytes) -> str:
    """What load_json makes of ``payload``, as text that tells 1 from 1.0 and -0.0 from 0.0."""
    try:
        return "value " + repr(native.load_json(payload, "test"))
    except PayloadError as exc:
        return f"error {exc.reason}: {exc}"


def _by_json(payload: bytes) -> str:
    """The same with the fast path shut: json's reading alone, as load_json did before it."""
    fast = native._FAST_MAX
    native._FAST_MAX = -1
    try:
        return _loaded(payload)
    finally:
        native._FAST_MAX = fast


def _number_text() -> st.SearchStrategy[str]:
    digits = st.text("0123456789", min_size=1, max_size=30)
    exponent = st.none() | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.integers(0, 400))
    return st.builds(
        lambda sign, whole, fraction, exp: (
            sign
            + whole
            + ("" if fraction is None else "." + fraction)
            + ("" if exp is None else f"{exp[0]}{exp[1]}{exp[2]}")
        ),
        st.sampled_from(["", "-"]),
        digits,
        st.none() | digits,
        exponent,
    )


@pytest.mark.parametrize(
    "text",
    [
        b"18446744073709551616",  # beyond 64 bits: an int, as json reads it (orjson made it a float)
        b"-9223372036854775809",
        b"9" * 4300,  # Python's digit limit, and one past it
        b"9" * 4301,
        b"1e400",
        b"-1e400",
        b"1e-400",
        b"-0.0",
        b"-0",
        b"2.2250738585072011e-308",
        b"123456789.123456789",
        b'{"a":1,"b":2,"a":3}',  # duplicate keys: the last value, in the first key's place
        b'"\\ud800"',  # a lone surrogate: json keeps it, msgspec refuses it
        b'"a\x01b"',
        b'"\\u0000"',
        b"NaN",
        b"[1,]",
        b"01",
        b"\xef\xbb\xbf\xef\xbb\xbf{}",  # a second BOM: json's own words
        b" \xc2\xa0{} ",
        b"[" * 499 + b"]" * 499,
        b"[" * 501 + b"]" * 501,  # past the fast path's length
        b"[" * 2000 + b"]" * 2000,
        b'{"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
    ],
)
def test_load_json_reads_as_json_reads(text: bytes) -> None:
    assert _loaded(text) == _by_json(text)


@settings(max_examples=500, deadline=None)
@given(json_values | json_objects)
def test_load_json_reads_any_json_as_json_reads(value: Any) -> None:
    payload = as_bytes(value)
    assert _loaded(payload) == _by_json(payload)


@settings(max_examples=1000, deadline=None)
@given(_number_text())
def test_load_json_reads_numbers_as_json_reads(text: str) -> None:
    for payload in (text.encode(), f'{{"battery":{text}}}'.encode(), f"[{text},{text}]".encode()):
        assert _loaded(payload) == _by_json(payload)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('{}[]:,"\\ 0123456789.eE+-truefalsnul\x00\x1f\u00e9\ud800'), max_size=40))
def test_load_json_refuses_as_json_refuses(text: str) -> None:
    payload = text.encode("utf-8", "surrogatepass")
    assert _loaded(payload) == _by_json(payload)
