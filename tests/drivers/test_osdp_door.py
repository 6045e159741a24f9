"""OSDP door logic: libosdp event dicts, the access directory, one door's state machine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import wiegand
from drivers.osdp_door import (
    CardRead,
    Decision,
    Directory,
    Door,
    DoorMachine,
    Holder,
    Inputs,
    KeyPress,
    Local,
    PdStatus,
    Signal,
    parse_event,
)
from gateway.clock import VirtualClock
from gateway.errors import PayloadError
from gateway.models import Kind, Observation

# As libosdp 3.2.9 delivered them to a ControlPanel event handler (recorded CP↔PD over a pty).
RECORDED = [
    (
        {"event": 1, "reader_no": 0, "format": 1, "direction": 0, "length": 26, "data": b"\xbd\x88\xeb\x80"},
        CardRead(0, "card:123-4567", 26),
    ),
    ({"event": 4, "type": 0, "report": b"\x01\x00"}, Inputs((True, False))),
    ({"event": 4, "type": 2, "report": b"\x01\x00"}, Local(tamper=True, power_failure=False)),
    ({"event": 5, "type": 2, "arg0": 1, "arg1": -1000000}, PdStatus(True)),
    ({"event": 5, "type": 2, "arg0": 0, "arg1": 0}, PdStatus(False)),
    ({"event": 5, "type": 0, "arg0": 2, "arg1": 1}, None),  # a command completed
    ({"event": 5, "type": 1, "arg0": 0, "arg1": 0}, None),  # secure channel state
    ({"event": 2, "reader_no": 0, "data": b"1234#"}, KeyPress(0, "1234#")),
    ({"event": 4, "type": 1, "report": b"\x00"}, None),  # output status
]
REASONS = {"wrong_type", "unknown_event", "unknown_format", "bad_length", "bad_parity", "bad_value"}


@pytest.mark.parametrize(("event", "reading"), RECORDED)
def test_recorded_events(event: dict[str, object], reading: object) -> None:
    assert parse_event(event) == reading


def test_card_formats() -> None:
    w34 = {
        "event": 1,
        "reader_no": 1,
        "format": 1,
        "direction": 0,
        "length": 34,
        "data": wiegand.encode(1000, 20001, 34),
    }
    assert parse_event(w34) == CardRead(1, "card:1000-20001", 34)
    raw = {"event": 1, "reader_no": 0, "format": 0, "direction": 0, "length": 37, "data": bytes.fromhex("0a1b2c3d48")}
    assert parse_event(raw) == CardRead(0, "card:raw37-0a1b2c3d48", 37)
    ascii_ = {"event": 1, "reader_no": 0, "format": 2, "direction": 0, "data": b"E2004712"}
    assert parse_event(ascii_) == CardRead(0, "card:E2004712", 64)
    misread = {"event": 1, "reader_no": 0, "format": 1, "direction": 0, "length": 26, "data": b"\xbd\x88\xeb\x00"}
    with pytest.raises(PayloadError) as info:
        parse_event(misread)
    assert info.value.reason == "bad_parity"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([1, 2], "wrong_type"),
        ({}, "wrong_type"),
        ({"event": 9}, "unknown_event"),
        ({"event": True}, "wrong_type"),
        ({"event": 1, "reader_no": 0, "format": 7, "data": b""}, "unknown_format"),
        ({"event": 1, "reader_no": 0, "format": 1, "length": 26, "data": "bd88eb80"}, "wrong_type"),
        ({"event": 4, "type": 2, "report": b"\x01"}, "bad_length"),
        ({"event": 1, "reader_no": 0, "format": 2, "data": b"a b"}, "bad_value"),
    ],
)
def test_malformed_events(event: object, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_event(event)
    assert info.value.reason == reason


_VALUES = st.one_of(st.integers(-3, 300), st.binary(max_size=80), st.text(max_size=5), st.none(), st.booleans())


@given(
    st.dictionaries(
        st.sampled_from(["event", "type", "reader_no", "format", "length", "data", "report", "arg0"]), _VALUES
    )
)
def test_fuzz_only_payload_errors(event: dict[str, object]) -> None:
    try:
        parse_event(event)
    except PayloadError as exc:
        assert exc.reason in REASONS


# ------------------------------------------------------------------ the directory

DIRECTORY = Directory.of(
    [
        ("card:123-4567", Holder("r1", "resident", frozenset({"3"}), frozenset({"3-2-502"}))),
        ("card:200-1001", Holder("s1", "staff", frozenset({"3"}))),
        ("card:200-1002", Holder("s2", "staff", None)),
        ("card:200-2002", Holder("v1", "visitor", frozenset({"3"}), frozenset({"3-2-502"}))),
    ]
)
LOBBY_3, LOBBY_4, FLAT_502, FLAT_501 = Door("3"), Door("4"), Door("3", "3-2-502"), Door("3", "3-2-501")


@pytest.mark.parametrize(
    ("credential", "door", "granted", "reason"),
    [
        ("card:123-4567", LOBBY_3, True, ""),
        ("card:123-4567", FLAT_502, True, ""),
        ("card:123-4567", LOBBY_4, False, "wrong_building"),
        ("card:123-4567", FLAT_501, False, "wrong_household"),
        ("card:200-1001", LOBBY_3, True, ""),
        ("card:200-1001", LOBBY_4, False, "wrong_building"),
        ("card:200-1002", LOBBY_4, True, ""),  # no buildings listed: the whole block
        ("card:200-1002", FLAT_502, False, "wrong_household"),  # staff: not a household's own door
        ("card:200-2002", LOBBY_3, True, ""),
        ("card:200-2002", FLAT_502, True, ""),
        ("card:200-2002", LOBBY_4, False, "wrong_building"),
        ("card:9-9", LOBBY_3, False, "unknown_credential"),
    ],
)
def test_decide(credential: str, door: Door, granted: bool, reason: str) -> None:
    d = DIRECTORY.decide(credential, door)
    assert (d.granted, d.reason) == (granted, reason)
    assert d.person == ("" if reason == "unknown_credential" else DIRECTORY.holders[credential].person)


# ------------------------------------------------------------------ one door

CLOSED, OPEN = Inputs((False, False)), Inputs((True, False))
EXIT = Inputs((False, True))


def door(clock: VirtualClock) -> tuple[DoorMachine, list[Observation]]:
    machine = DoorMachine(LOBBY_3, held_open_after=30, unlock_window=5)
    out, _ = machine.inputs(CLOSED, clock.monotonic())  # the state the reader reports on connect
    return machine, out


async def test_grant_then_open_is_not_forced_and_a_long_opening_is_held_open() -> None:
    clock = VirtualClock()
    m, first = door(clock)
    assert first == []  # a door found closed is not news
    obs, signals = m.card(DIRECTORY.decide("card:123-4567", LOBBY_3), clock.monotonic())
    assert obs == [
        Observation(
            Kind.ACCESS_GRANTED,
            {"credential": "card:123-4567", "method": "card", "reader": 0, "person": "r1", "person_kind": "resident"},
        )
    ]
    assert signals == [Signal("grant")]
    await clock.advance(2)
    assert m.inputs(OPEN, clock.monotonic())[0] == [Observation(Kind.DOOR_OPENED, {"secured": False})]
    assert m.deadline() == clock.monotonic() + 30
    await clock.advance(29)
    assert m.tick(clock.monotonic()) == []
    await clock.advance(1)
    assert m.tick(clock.monotonic()) == [Signal("held_open")]
    assert m.tick(clock.monotonic() + 100) == []  # once per opening
    await clock.advance(15)
    assert m.inputs(CLOSED, clock.monotonic())[0] == [
        Observation(Kind.DOOR_CLOSED, {"open_for": 45.0, "held_open": True})
    ]


async def test_opening_without_a_grant_is_forced_and_the_window_closes() -> None:
    clock = VirtualClock()
    m, _ = door(clock)
    m.card(DIRECTORY.decide("card:123-4567", LOBBY_3), clock.monotonic())
    await clock.advance(6)  # granted, but nobody opened within the unlock window
    assert m.inputs(OPEN, clock.monotonic())[0] == [Observation(Kind.DOOR_OPENED, {"secured": True})]
    await clock.advance(3)
    assert m.inputs(CLOSED, clock.monotonic())[0] == [
        Observation(Kind.DOOR_CLOSED, {"open_for": 3.0, "held_open": False})
    ]
    # a denied card does not unlock
    obs, signals = m.card(DIRECTORY.decide("card:9-9", LOBBY_3), clock.monotonic())
    assert obs[0].kind == Kind.ACCESS_DENIED and obs[0].values["reason"] == "unknown_credential"
    assert signals == [Signal("deny")]
    assert m.inputs(OPEN, clock.monotonic())[0] == [Observation(Kind.DOOR_OPENED, {"secured": True})]


async def test_exit_button_is_free_egress() -> None:
    clock = VirtualClock()
    m, _ = door(clock)
    assert m.inputs(EXIT, clock.monotonic()) == ([], [])
    await clock.advance(1)
    assert m.inputs(Inputs((True, False)), clock.monotonic())[0] == [Observation(Kind.DOOR_OPENED, {"secured": False})]
    m.rex_input = None  # a reader without an exit button wired
    m.inputs(CLOSED, clock.monotonic())
    m.inputs(EXIT, clock.monotonic())
    assert m.inputs(Inputs((True, True)), clock.monotonic())[0] == [Observation(Kind.DOOR_OPENED, {"secured": True})]


def test_an_opening_it_cannot_judge_is_not_called_forced() -> None:
    m = DoorMachine(LOBBY_3)
    assert m.inputs(OPEN, 0.0)[0] == [Observation(Kind.DOOR_OPENED, {"secured": False})]  # open at start-up
    m.inputs(CLOSED, 1.0)
    m.link_lost()
    m.inputs(CLOSED, 50.0)  # back online, closed
    m.link_lost()
    assert m.inputs(OPEN, 60.0)[0] == [Observation(Kind.DOOR_OPENED, {"secured": False})]  # opened while offline


def test_tamper_and_power() -> None:
    m = DoorMachine(LOBBY_3)
    assert m.local(Local(False, False)) == []
    assert m.local(Local(True, False)) == [Observation(Kind.TAMPER)]
    assert m.local(Local(True, False)) == []
    assert m.local(Local(False, True)) == [
        Observation(Kind.TAMPER_CLEAR),
        Observation(Kind.SENSOR_FAULT, {"fault": "power"}),
    ]
    assert DoorMachine(LOBBY_3).local(Local(True, False)) == [Observation(Kind.TAMPER)]  # tampered at start-up


def test_a_denial_names_the_holder_when_known() -> None:
    m = DoorMachine(LOBBY_4)
    obs, _ = m.card(Decision(False, "card:123-4567", "r1", "resident", "wrong_building"), 0.0, reader=1)
    assert obs == [
        Observation(
            Kind.ACCESS_DENIED,
            {
                "credential": "card:123-4567",
                "method": "card",
                "reader": 1,
                "person": "r1",
                "person_kind": "resident",
                "reason": "wrong_building",
            },
        )
    ]
