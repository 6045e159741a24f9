"""Fall states, wire to meaning: which readings of each fall radar end a fall (issue 10).

Only positive evidence that the person is up ends a fall: movement, or the radar's own explicit
"no fall" after a fall. A posture (low_posture, sitting, on the bed), presence, stationary
residence or an empty room does not. "Ends a fall" is judged by the elderly_care pack's own
``fall_recovered`` conditions, so the codecs and the rules answer to one definition.
drivers/README.md, "Fall states", has the table with the reasons and the public sources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import drivers
from drivers import mr60fda1, mr60fda2, native, rtl433
from drivers import zigbee2mqtt as z2m
from edge_rules import DeviceInfo, load_rules
from edge_rules.rules import SequenceRule, any_match
from gateway.errors import PayloadError
from gateway.models import Event, Family, Kind, Observation

_RULE = load_rules("elderly_care").get("fall_recovered")
assert isinstance(_RULE, SequenceRule)
_RECOVERY = _RULE.then
_RADAR = DeviceInfo("radar", Family.FALL, household="h")


def counts_as_recovery(obs: Observation) -> bool:
    """Whether the pack takes this observation, from a fall radar, as the end of a fall."""
    ev = Event("radar", Family.FALL, obs.kind, 0.0, 0.0, values=obs.values)
    return any_match(_RECOVERY, ev, _RADAR, 0.0, "Asia/Shanghai")


def recovers(observations: Sequence[Observation]) -> bool:
    return any(counts_as_recovery(obs) for obs in observations)


def _z2m(model: str, msg: dict[str, Any]) -> Callable[[], list[Observation]]:
    return lambda: z2m.decode_state(json.dumps(msg).encode(), model)


def _frame(codec: Any, hex_bytes: str) -> Callable[[], list[Observation]]:
    return lambda: list(codec.decode(bytes.fromhex(hex_bytes)))


def _native(msg: dict[str, Any]) -> Callable[[], list[Observation]]:
    return lambda: list(native.decode(json.dumps(msg).encode()).observations)


# A fall pendant behind rtl_433: the Honeywell "alarm" flag mapped to a fall by the device table.
_PENDANT = {"alarm": "fall_detected", "contact_open": "", "reed_open": ""}


def _honeywell(alarm: int) -> Callable[[], list[Observation]]:
    msg = {"model": "Honeywell-Security", "id": 1, "channel": 8, "alarm": alarm, "tamper": 0, "battery_ok": 1}
    return lambda: rtl433.decode(msg, _PENDANT)


def _mr60fda1(ctrl: int, cmd: int, value: int) -> Callable[[], list[Observation]]:
    return lambda: mr60fda1.decode(mr60fda1.frame(ctrl, cmd, bytes((value,))))


# Every documented state of every fall model the project reads: (id, payload, ends a fall?).
# Z2M messages repeat the whole cached state, so a reading taken after a fall still carries the
# fall field as it was ("fall", "fall_alarm") unless the radar itself changed it.
Z2M_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    # OWON FDS315 `status` (Z2M docs/devices/FDS315.md): no state says the person is up.
    ("low_posture", "FDS315", {"status": "low_posture"}, False),
    ("sitting", "FDS315", {"status": "sitting", "breathing_rate": 16}, False),
    ("on_the_bed", "FDS315", {"status": "on_the_bed", "breathing_rate": 14}, False),
    ("occupied", "FDS315", {"status": "occupied", "location_x": 40, "location_y": 90}, False),
    ("unoccupied", "FDS315", {"status": "unoccupied"}, False),
    ("falling", "FDS315", {"status": "falling"}, False),
    # TuYa MIR-HE200-TY_fall: `none` is the radar's own fall field back at rest
    ("none", "MIR-HE200-TY_fall", {"presence": True, "fall_down_status": "none"}, True),
    ("none, room empty", "MIR-HE200-TY_fall", {"presence": False, "fall_down_status": "none"}, True),
    (
        "fall, person lost",
        "MIR-HE200-TY_fall",
        {"presence": False, "occupancy": False, "fall_down_status": "fall"},
        False,
    ),
    ("fall, present", "MIR-HE200-TY_fall", {"presence": True, "fall_down_status": "fall"}, False),
    ("maybe_fall", "MIR-HE200-TY_fall", {"presence": True, "fall_down_status": "maybe_fall"}, False),
    ("presence only", "MIR-HE200-TY_fall", {"presence": True, "occupancy": True}, False),
    # HEIMAN HS2FD-EF1-3.0: occupancy, sensor_status and fall_status come from one bitmap
    ("normal", "HS2FD-EF1-3.0", {"occupancy": True, "fall_status": "normal"}, True),
    (
        "fall_alarm, activity",
        "HS2FD-EF1-3.0",
        {"occupancy": True, "sensor_status": "activity", "fall_status": "fall_alarm"},
        False,
    ),
    (
        "fall_alarm, nobody",
        "HS2FD-EF1-3.0",
        {"occupancy": False, "sensor_status": "none", "fall_status": "fall_alarm"},
        False,
    ),
    ("fall_warning", "HS2FD-EF1-3.0", {"occupancy": True, "fall_status": "fall_warning"}, False),
    ("unknown", "HS2FD-EF1-3.0", {"occupancy": True, "sensor_status": "unknown", "fall_status": "unknown"}, False),
]

CASES: list[tuple[str, Callable[[], list[Observation]], bool]] = [
    *((f"{model} {name}", _z2m(model, msg), ends) for name, model, msg, ends in Z2M_CASES),
    # Seeed MR60FDA1 frames (Seeed wiki, Radar_MR60FDA1)
    ("MR60FDA1 83 01 00 no fall", _frame(mr60fda1, "53 59 83 01 00 01 00 31 54 43"), True),
    ("MR60FDA1 80 02 02 moving", _frame(mr60fda1, "53 59 80 02 00 01 02 31 54 43"), True),
    ("MR60FDA1 80 03 body movement 40", _mr60fda1(0x80, 0x03, 40), True),
    ("MR60FDA1 80 03 body movement 3", _mr60fda1(0x80, 0x03, 3), False),
    ("MR60FDA1 80 02 01 stationary", _mr60fda1(0x80, 0x02, 1), False),
    ("MR60FDA1 80 02 00 none", _mr60fda1(0x80, 0x02, 0), False),
    ("MR60FDA1 80 01 01 someone", _frame(mr60fda1, "53 59 80 01 00 01 01 2F 54 43"), False),
    ("MR60FDA1 80 01 00 nobody", _mr60fda1(0x80, 0x01, 0), False),
    ("MR60FDA1 83 05 01 residence", _frame(mr60fda1, "53 59 83 05 00 01 01 36 54 43"), False),
    ("MR60FDA1 83 05 00 no residence", _mr60fda1(0x83, 0x05, 0), False),
    ("MR60FDA1 83 01 01 fall", _frame(mr60fda1, "53 59 83 01 00 01 01 32 54 43"), False),
    # Seeed MR60FDA2 / Hi-Link LD6002C TinyFrame
    ("MR60FDA2 0E02 00 normal", _frame(mr60fda2, "01 00 00 00 01 0E 02 F3 00 FF"), True),
    ("MR60FDA2 0E02 01 fall", _frame(mr60fda2, "01 00 00 00 01 0E 02 F3 01 FE"), False),
    ("MR60FDA2 0F09 01 present", _frame(mr60fda2, "01 00 00 00 01 0F 09 F9 01 FE"), False),
    ("MR60FDA2 0F09 00 nobody", lambda: mr60fda2.decode(mr60fda2.frame(mr60fda2.PRESENCE, b"\x00")), False),
    # SenseGate native JSON: a device says what it means; fall_cleared is its explicit clear
    ("native fall_cleared", _native({"kind": "fall_cleared"}), True),
    ("native motion moving", _native({"kind": "motion", "values": {"moving": True}}), True),
    ("native presence", _native({"kind": "presence", "values": {"present": True}}), False),
    ("native residence", _native({"kind": "residence", "values": {"present": True}}), False),
    ("native motion still", _native({"kind": "motion", "values": {"moving": False, "level": 2}}), False),
    # rtl_433: a flag at rest in a supervision transmission is not a fall cleared
    ("rtl_433 fall flag at rest", _honeywell(0), False),
    ("rtl_433 fall flag active", _honeywell(1), False),
]


@pytest.mark.parametrize(("decode", "ends_a_fall"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_only_positive_evidence_ends_a_fall(decode: Callable[[], list[Observation]], ends_a_fall: bool) -> None:
    observations = decode()
    assert recovers(observations) is ends_a_fall, observations
    if not ends_a_fall:
        assert Kind.FALL_CLEARED not in {obs.kind for obs in observations}


def test_the_issue_sequence_falling_then_low_posture() -> None:
    # zigbee2mqtt publishes these two messages 8 s apart for someone who fell and lies there.
    first = z2m.decode_state(b'{"status":"falling"}', "FDS315")
    then = z2m.decode_state(b'{"status":"low_posture"}', "FDS315")
    assert [obs.kind for obs in first] == [Kind.FALL_DETECTED, Kind.PRESENCE]
    assert then == [Observation(Kind.PRESENCE, {"present": True, "status": "low_posture"})]
    assert not recovers(then)


def test_no_fds315_state_ends_a_fall() -> None:
    assert Kind.FALL_CLEARED not in z2m.MODELS["FDS315"].emits
    for state in ("unoccupied", "occupied", "sitting", "on_the_bed", "low_posture", "falling"):
        assert not recovers(z2m.decode_state(json.dumps({"status": state}).encode(), "FDS315")), state


def _documented_states() -> set[tuple[str, str, str]]:
    """(model, field, state) for every enum state of every fall model's fall field."""
    out = set()
    for model, spec in z2m.MODELS.items():
        if spec.family != Family.FALL:
            continue
        for extend in spec.extends:
            if isinstance(extend, z2m.Choice | z2m.PostureStatus):
                out |= {(model, extend.name, state) for state in extend.states}
    return out


def test_every_documented_fall_state_has_a_decision_above() -> None:
    # A new fall model, or a new state, must come with its rows in Z2M_CASES (and the README).
    decided = {(model, field, msg[field]) for _, model, msg, _ in Z2M_CASES for field in msg}
    missing = _documented_states() - decided
    assert not missing, sorted(missing)


def test_the_readme_table_names_every_documented_state() -> None:
    readme = (Path(drivers.__file__).parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Fall states", 1)[1].split("\n## ", 1)[0]
    for model, _, state in sorted(_documented_states()):
        assert f"`{state}`" in section and f"`{model}`" in section, (model, state)


@pytest.mark.parametrize(
    "observations",
    [
        [Observation(Kind.PRESENCE, {"present": True, "status": "falling"})],  # a fall is not a posture
        [Observation(Kind.FALL_DETECTED), Observation(Kind.PRESENCE, {"present": True, "status": "sitting"})],
        [Observation(Kind.PRESENCE, {"present": False, "status": "low_posture"})],
        [Observation(Kind.PRESENCE, {"present": True, "status": "standing"})],
        [Observation(Kind.FALL_CLEARED)],  # the FDS315 has no way to say it
    ],
)
def test_fds315_encode_refuses_what_the_radar_cannot_say(observations: list[Observation]) -> None:
    with pytest.raises(PayloadError) as info:
        z2m.encode_state("FDS315", observations)
    assert info.value.reason in ("not_encodable", "unknown_kind")


def test_fds315_encode_postures() -> None:
    for state, present in (("low_posture", True), ("sitting", True), ("unoccupied", False)):
        obs = [Observation(Kind.PRESENCE, {"present": present, "status": state})]
        assert z2m.decode_state(z2m.encode_state("FDS315", obs), "FDS315") == obs
    falling = z2m.encode_state("FDS315", [Observation(Kind.FALL_DETECTED)])
    assert json.loads(falling) == {"status": "falling"}
