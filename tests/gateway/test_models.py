"""Event's written-out __init__ is the one @dataclass would make: same parameters, same fields."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from gateway.models import Event, Family, Kind, Location


def test_init_takes_the_fields_in_their_order_with_their_defaults() -> None:
    params = list(inspect.signature(Event).parameters.values())
    fields = dataclasses.fields(Event)
    assert [p.name for p in params] == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty, f.name


def test_each_argument_lands_in_its_own_field() -> None:
    args = (
        "d-1",
        Family.SMOKE,
        Kind.SMOKE_ALARM,
        1.5,
        2.5,
        "HS1SA",
        Location("3", "2", "502", "厨房"),
        {"linkquality": 92},
        "device",
        "zigbee2mqtt",
        "{}",
        7,
    )
    names = [f.name for f in dataclasses.fields(Event)]
    for ev in (Event(*args), Event(**dict(zip(names, args, strict=True)))):
        assert [getattr(ev, name) for name in names] == list(args)


def test_defaults_are_fresh_and_the_event_stays_frozen() -> None:
    a, b = Event("d", Family.DOOR, Kind.DOOR_OPENED, 1.0, 1.0), Event("d", Family.DOOR, Kind.DOOR_OPENED, 1.0, 1.0)
    assert a == b
    defaults = ("", Location(), {}, "gateway", "", "", 0)
    assert (a.model, a.location, a.values, a.time_source, a.source, a.raw, a.seq) == defaults
    assert a.values is not b.values
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seq = 1  # type: ignore[misc]
    assert dataclasses.replace(a, seq=9) == Event("d", Family.DOOR, Kind.DOOR_OPENED, 1.0, 1.0, seq=9)
    assert pickle.loads(pickle.dumps(b)) == b
    assert Event.from_dict(b.to_dict()) == b
