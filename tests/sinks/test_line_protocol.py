"""The line-protocol encoder (gateway/outputs/sinks/line_protocol.py): pure, no server. What a
real InfluxDB makes of it is tests/sinks/test_line_protocol_influx.py."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Event, Family, Kind, Location, Scalar
from gateway.outputs.sinks import schema
from gateway.outputs.sinks.line_protocol import field_value, line, name, storable, storable_string
from gateway.outputs.sinks.schema import (
    event_fields,
    event_tags,
    events_to_line_protocol,
    events_to_line_protocol_in_pieces,
    point_time_ns,
)
from gateway.site.config import parse_config
from gateway.site.registry import Registry
from simulators.activity import BlockActivity
from simulators.block import demo_site
from tests.sinks.sample_events import T0, event

SPECIAL = st.sampled_from([",", "=", " ", '"', "\\", "\n", "\r", "\t", "#", "\x00"])
TEXT = st.text(st.one_of(SPECIAL, st.characters(), st.characters(categories=["Cs"])), max_size=20)


def test_a_key_ending_in_a_backslash_gets_a_stand_in_instead_of_an_unparsable_line() -> None:
    # Issue 13: "path\\=1" is read by InfluxDB as the key "path=1" with no value: refused.
    assert storable("path\\") == "path＼"
    assert name("path\\") == "path＼"
    assert line("door", {"device": "d\\"}, {"path\\": 1.0}, 5) == "door,device=d＼ path＼=1 5"


def test_escapes_of_names_tag_values_and_strings() -> None:
    assert name("卫生间, 北 =侧") == "卫生间\\,\\ 北\\ \\=侧"
    assert name('a\\b"c\td') == 'a\\b"c\td'  # a backslash before an ordinary character is literal
    assert name('a\\"b') == 'a＼"b'  # … but before a quote InfluxDB would drop it
    assert name("a\\,b") == "a＼\\,b"
    assert name("line\nnext") == "line\ufffdnext"
    assert name("\t\x00a\tb") == "\ufffd\ufffda\tb"  # InfluxDB would skip them as white space
    assert field_value('say "hi" \\ 你好\n') == '"say \\"hi\\" \\\\ 你好\n"'
    assert field_value("\ud800") == '"\ufffd"'
    assert (field_value(True), field_value(7), field_value(100.0), field_value(96.5)) == ("true", "7i", "100", "96.5")
    assert field_value(1e16) == "1e+16" and field_value(float("nan")) is None


def test_a_point_without_a_writable_field_is_no_line() -> None:
    assert line("door", {"device": "d"}, {"x": float("inf")}, 1) == ""
    assert line("door", {"device": "d", "room": ""}, {"x": 1.0}, 1) == "door,device=d x=1 1"


def test_empty_and_reserved_value_keys_are_renamed_and_the_schemas_fields_win() -> None:
    fields = event_fields(event(seq=3, values={"": 1, "time": 2, "seq\\": 4}))
    assert fields["value_"] == 1.0 and fields["value_time"] == 2.0 and fields["seq＼"] == 4.0
    assert fields["seq"] == 3


@given(TEXT)
def test_storable_is_idempotent_and_changes_only_what_line_protocol_cannot_carry(text: str) -> None:
    stored = storable(text)
    assert storable(stored) == stored
    stored.encode("utf-8")  # never a lone surrogate
    unwritable = re.search(r'\\(?=[,= "]|\Z)|\n|[\ud800-\udfff]|^[\t\x00]', text)
    assert (stored == text) == (unwritable is None)
    assert len(stored) == len(text)


@given(TEXT)
def test_a_string_field_value_keeps_everything_but_lone_surrogates(text: str) -> None:
    stored = storable_string(text)
    assert (stored == text) == (re.search("[\ud800-\udfff]", text) is None)


@given(st.dictionaries(TEXT, st.one_of(st.booleans(), st.floats(), st.integers(), TEXT), max_size=6), TEXT)
def test_every_event_encodes_to_one_line_of_valid_utf8(
    values: dict[str, bool | float | int | str], device: str
) -> None:
    e = event(values=values, device_id=device or "d")
    body = events_to_line_protocol([e], "gw", "site")
    # A newline only ever inside a string value: the point stays one line.
    in_strings = sum(v.count("\n") for v in event_fields(e).values() if isinstance(v, str))
    assert body.decode("utf-8").count("\n") == in_strings


# ---------------------------------------------------------------------- the batch encoder


def reference_body(events: list[Event], gateway_id: str, site: str) -> bytes:
    """What ``events_to_line_protocol`` must write: the documented functions, composed plainly."""
    lines = (line(e.family.value, event_tags(e, gateway_id, site), event_fields(e), point_time_ns(e)) for e in events)
    return "\n".join(text for text in lines if text).encode("utf-8")


def test_the_batch_encoder_writes_what_the_schema_says_for_the_simulated_blocks_traffic() -> None:
    config = parse_config(demo_site(2, 10, data_dir="unused"))
    registry = Registry(config)
    activity = BlockActivity(config, random.Random(14), start_time=T0, speed=1.0)
    events: list[Event] = []
    for emission in activity.emissions(until=86_400):
        for ev in registry.decode(emission.topic, emission.payload, T0 + emission.when):
            events.append(replace(ev, seq=len(events) + 1))
        if len(events) >= 3000:
            break
    assert {e.family for e in events} >= {Family.DOOR, Family.FALL, Family.SOS}
    for gateway_id, site in (("gw-01", "幸福里 小区"), ("", "")):
        assert events_to_line_protocol(events, gateway_id, site) == reference_body(events, gateway_id, site)


def test_a_batch_written_in_pieces_is_one_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The InfluxDB sinks build a batch's body a piece at a time (yielding the interpreter
    between): the body is the batch encoder's, byte for byte, wherever the pieces end."""
    config = parse_config(demo_site(2, 10, data_dir="unused"))
    registry = Registry(config)
    activity = BlockActivity(config, random.Random(14), start_time=T0, speed=1.0)
    events: list[Event] = []
    for emission in activity.emissions(until=86_400):
        events += registry.decode(emission.topic, emission.payload, T0 + emission.when)
        if len(events) >= 1000:
            break
    whole = events_to_line_protocol(events, "gw-01", "幸福里 小区")
    assert whole.count(b"\n") == len(events) - 1
    for piece in (schema.LINES_A_PIECE, 7, 1):
        monkeypatch.setattr(schema, "LINES_A_PIECE", piece)
        assert events_to_line_protocol_in_pieces(events, "gw-01", "幸福里 小区") == whole, piece


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Family)),
            st.sampled_from(list(Kind)),
            st.lists(TEXT, min_size=7, max_size=7),
            st.dictionaries(TEXT, st.one_of(st.booleans(), st.floats(), st.integers(), TEXT), max_size=5),
            st.integers(0, 2**40),
        ),
        max_size=4,
    ),
    TEXT,
    TEXT,
)
def test_the_batch_encoder_writes_what_the_schema_says_whatever_the_names(
    rows: list[tuple[Family, Kind, list[str], dict[str, Scalar], int]], gateway_id: str, site: str
) -> None:
    events = [
        Event(
            device_id=texts[0],
            family=family,
            kind=kind,
            event_time=T0 + seq / 1000,
            received_at=T0,
            model=texts[1],
            location=Location(*texts[2:6]),
            values=values,
            time_source=texts[6],
            source=texts[6][::-1],
            seq=seq,
        )
        for family, kind, texts, values, seq in rows
    ]
    assert events_to_line_protocol(events, gateway_id, site) == reference_body(events, gateway_id, site)


def test_the_batch_encoder_escapes_each_special_character_wherever_it_stands() -> None:
    specials = [",", "=", " ", '"', "\\", "\n", "\r", "\t", "#", "\x00", "\ud800", "＼"]
    texts = [t for c in specials for t in (c, c + "a", "a" + c, "a" + c + "b", c + c, "a\\" + c)]
    events = [
        event(device_id=t, model=t, source=t, location=Location(t, t, t, t), values={t: t}, time_source=t, seq=i)
        for i, t in enumerate(texts, 1)
    ]
    for gateway_id in texts:
        assert events_to_line_protocol(events, gateway_id, gateway_id) == reference_body(events, gateway_id, gateway_id)
