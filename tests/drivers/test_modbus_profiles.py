"""Modbus detector profiles: validation, pure decode on register values, encode round trip, fuzz."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus_profiles import (
    DetectorState,
    Profile,
    builtin_profiles,
    decode,
    encode,
    load_profile,
    load_profile_file,
    read,
)
from gateway.errors import ConfigError, PayloadError
from gateway.models import Kind, Observation

PROFILES = builtin_profiles()
GAS = PROFILES["GENERIC-GAS"]
SMOKE = PROFILES["GENERIC-SMOKE"]

# A map with the features the shipped examples do not use: FC04, two reads, a decimal-point
# register, a signed value, no valid bit.
DECIMALS: dict[str, Any] = {
    "model": "TEST-DEC",
    "family": "gas",
    "reads": [{"function": 4, "address": 0, "count": 3}, {"function": 3, "address": 100, "count": 1}],
    "alarm": {"function": 4, "address": 0, "levels": {"low": 0, "high": 1}, "faults": {"lost": 2}},
    "concentration": {"function": 4, "address": 1, "unit": "ppm", "signed": True, "decimals_address": 2},
    "status": {"address": 100, "ok": [0], "warmup": [1]},
}


def test_builtin_profiles_are_marked_examples() -> None:
    assert set(PROFILES) == {"GENERIC-GAS", "GENERIC-SMOKE"}
    for p in PROFILES.values():
        assert p.example
    assert GAS.family == "gas" and GAS.concentration is not None and GAS.concentration.unit == "%LEL"
    assert SMOKE.family == "smoke" and SMOKE.concentration is None and SMOKE.status is None
    assert Kind.GAS_ALARM in GAS.emits and Kind.SMOKE_ALARM in SMOKE.emits


# ------------------------------------------------------------------ validation


def _with(**changes: Any) -> dict[str, Any]:
    data = dict(DECIMALS)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (_with(reads=[{"function": 6, "address": 0, "count": 2}]), "reads[0].function"),
        (_with(reads=[{"function": 4, "address": 0, "count": 200}]), "reads[0].count"),
        (_with(alarm={"address": 0, "levels": {"low": 16}}), "alarm.levels"),
        (_with(alarm={"address": 0, "levels": {"low": 0}, "colour": "red"}), "alarm.colour"),
        (_with(concentration={"address": 1, "unit": "furlongs"}), "concentration.unit"),
        (_with(family="water"), "family"),
        (_with(surprise=1), "surprise"),
    ],
)
def test_bad_profile_names_the_field(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile(data, "site.toml", prefix="modbus.profiles.TEST")
    paths = [p.path for p in err.value.problems]
    assert f"modbus.profiles.TEST.{path}" in paths, paths
    assert all(p.file == "site.toml" for p in err.value.problems)


def test_register_outside_reads_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"status: FC03 register 0x0065 is not inside any of `reads`"):
        load_profile(_with(status={"address": 101, "ok": [0]}))


def test_bit_used_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="a bit is used twice"):
        load_profile(_with(alarm={"function": 4, "address": 0, "levels": {"low": 0}, "faults": {"lost": 0}}))


def test_bad_toml_file(tmp_path: Any) -> None:
    f = tmp_path / "p.toml"
    f.write_text("model = ")
    with pytest.raises(ConfigError, match="a readable TOML file"):
        load_profile_file(f)


# ------------------------------------------------------------------ decode


def test_gas_alarm_bitfield_with_valid_bit() -> None:
    # 0x8003: valid, low + high; 42 %LEL; status 1 = ok
    assert decode(GAS, [[0x8003, 42, 0, 0, 0, 0, 1]]) == [
        Observation(Kind.GAS_ALARM, {"level": "high"}),
        Observation(Kind.HEARTBEAT, {"concentration": 42.0, "unit": "%LEL", "status": "ok", "fault": ""}),
    ]
    assert decode(GAS, [[0x8001, 12, 0, 0, 0, 0, 1]])[0] == Observation(Kind.GAS_ALARM, {"level": "low"})
    assert decode(GAS, [[0x8000, 0, 0, 0, 0, 0, 1]])[0] == Observation(Kind.GAS_CLEAR)


def test_gas_alarm_bits_ignored_without_the_valid_bit() -> None:
    # bit 15 clear: the alarm bits mean nothing; no alarm state, telemetry only
    out = decode(GAS, [[0x0003, 42, 0, 0, 0, 0, 1]])
    assert [o.kind for o in out] == [Kind.HEARTBEAT]
    # ... and undeclared bits are not an error then either
    assert [o.kind for o in decode(GAS, [[0x7FFF, 0, 0, 0, 0, 0, 1]])] == [Kind.HEARTBEAT]


def test_smoke_single_register_without_valid_bit() -> None:
    assert decode(SMOKE, [[1]]) == [
        Observation(Kind.SMOKE_ALARM, {"level": "alarm"}),
        Observation(Kind.HEARTBEAT, {"fault": ""}),
    ]
    assert decode(SMOKE, [[0]])[0] == Observation(Kind.SMOKE_CLEAR)


def test_unknown_alarm_bit_is_loud() -> None:
    with pytest.raises(PayloadError) as err:
        decode(SMOKE, [[2]])
    assert err.value.reason == "unknown_code"
    assert "bits [1]" in str(err.value)


def test_ignored_bits_are_ignored() -> None:
    assert decode(GAS, [[0x800C, 0, 0, 0, 0, 0, 1]])[0] == Observation(Kind.GAS_CLEAR)  # STEL, TWA


def test_fault_bit_and_fault_status() -> None:
    out = decode(GAS, [[0x8020, 0, 0, 0, 0, 0, 2]])
    assert out[:2] == [Observation(Kind.GAS_CLEAR), Observation(Kind.SENSOR_FAULT, {"fault": "sensor_lost,status"})]
    assert out[2].values["status"] == "fault" and out[2].values["fault"] == "sensor_lost,status"


def test_warmup_hides_the_alarm_state() -> None:
    out = decode(GAS, [[0x8003, 99, 0, 0, 0, 0, 0]])
    assert [o.kind for o in out] == [Kind.HEARTBEAT]
    assert out[0].values["status"] == "warmup"


def test_unknown_status_value_is_reported_not_raised() -> None:
    assert decode(GAS, [[0x8000, 0, 0, 0, 0, 0, 7]])[-1].values["status"] == "unknown:7"


def test_scaling_decimals_and_sign() -> None:
    p = load_profile(DECIMALS)
    # decimal-point register 2 → /100; 0xFF38 = -200 signed → -2.0 ppm
    assert read(p, [[0, 0xFF38, 2], [0]]).concentration == -2.0
    assert read(p, [[0, 1234, 3], [0]]).concentration == 1.234
    assert decode(p, [[0, 5, 0], [0]])[-1].values == {"concentration": 5.0, "unit": "ppm", "status": "ok", "fault": ""}
    fixed = load_profile(_with(concentration={"function": 4, "address": 1, "unit": "ppm", "scale": 0.1}))
    assert read(fixed, [[0, 425, 0], [0]]).concentration == 42.5


def test_decimal_point_out_of_range() -> None:
    p = load_profile(DECIMALS)
    with pytest.raises(PayloadError) as err:
        decode(p, [[0, 1, 5], [0]])
    assert err.value.reason == "bad_value"


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        ([], "bad_length"),
        ([[0x8000]], "bad_length"),
        ([[0x8000, 0, 0, 0, 0, 0, 70000]], "bad_value"),
        ([[-1] * 7], "bad_value"),
    ],
)
def test_malformed_blocks(blocks: list[list[int]], reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode(GAS, blocks)
    assert err.value.reason == reason


# ------------------------------------------------------------------ encode, round trip, fuzz


def test_encode_refuses_what_the_profile_cannot_say() -> None:
    for state in (DetectorState(levels=("nope",)), DetectorState(faults=("x",)), DetectorState(concentration=1e9)):
        with pytest.raises(PayloadError) as err:
            encode(GAS, state)
        assert err.value.reason == "not_encodable"
    with pytest.raises(PayloadError):
        encode(SMOKE, DetectorState(status="warmup"))


@st.composite
def states(draw: st.DrawFn, profile: Profile) -> DetectorState:
    a = profile.alarm
    status = draw(st.sampled_from(["ok", "warmup", "fault"] if profile.status is not None else ["ok"]))
    if profile.status is not None and status == "warmup" and not profile.status.warmup:
        status = "ok"
    conc = 0.0
    decimals = 0
    if profile.concentration is not None:
        decimals = draw(st.integers(0, 4)) if profile.concentration.decimals_address is not None else 0
        conc = draw(st.integers(0, 30000)) / 10**decimals * profile.concentration.scale
    return DetectorState(
        levels=tuple(draw(st.lists(st.sampled_from(sorted(a.levels)), unique=True))),
        faults=tuple(draw(st.lists(st.sampled_from(sorted(a.faults)), unique=True))) if a.faults else (),
        status=status,  # type: ignore[arg-type]
        valid=draw(st.booleans()) if a.valid_bit is not None else True,
        concentration=conc,
    )


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_round_trip(data: st.DataObject) -> None:
    profile = GAS if data.draw(st.booleans()) else SMOKE
    state = data.draw(states(profile))
    r = read(profile, encode(profile, state))
    assert r.valid == state.valid
    if state.valid:
        assert set(r.levels) == set(state.levels)
        assert set(r.faults) - {"status"} == set(state.faults)
    if profile.concentration is not None:
        assert r.concentration == pytest.approx(state.concentration)
    out = decode(profile, encode(profile, state))
    alarm = [o for o in out if o.kind in (Kind.GAS_ALARM, Kind.SMOKE_ALARM)]
    assert bool(alarm) == (state.valid and state.status != "warmup" and bool(state.levels))


@given(
    st.sampled_from([GAS, SMOKE, load_profile(DECIMALS)]),
    st.lists(st.lists(st.integers(-5, 0x10005), max_size=9), max_size=3),
)
@settings(max_examples=500, deadline=None)
def test_fuzz_decode_raises_only_payload_error(profile: Profile, blocks: list[list[int]]) -> None:
    try:
        out = decode(profile, blocks)
    except PayloadError as exc:
        assert exc.reason in {"bad_length", "bad_value", "unknown_code"}
        return
    assert out and out[-1].kind == Kind.HEARTBEAT


@given(st.sampled_from([GAS, SMOKE, load_profile(DECIMALS)]), st.data())
@settings(max_examples=300, deadline=None)
def test_fuzz_decode_well_shaped_blocks(profile: Profile, data: st.DataObject) -> None:
    blocks = [data.draw(st.lists(st.integers(0, 0xFFFF), min_size=r.count, max_size=r.count)) for r in profile.reads]
    try:
        out = decode(profile, blocks)
    except PayloadError as exc:
        assert exc.reason in {"bad_value", "unknown_code"}
        return
    assert all(o.kind in profile.emits for o in out)
