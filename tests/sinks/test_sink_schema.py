"""The InfluxDB schema (gateway/outputs/sinks/schema.py): pure, no server."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.models import TEST, TEST_MODE, Event, Family, Kind, Location
from gateway.outputs.sinks import SINKS, InfluxV1Sink, InfluxV2Sink, Sink
from gateway.outputs.sinks.schema import (
    TAG_KEYS,
    event_fields,
    event_tags,
    events_to_line_protocol,
    point_time_ns,
)
from tests.sinks.sample_events import T0, event, one_per_family


def line(e: Event, gateway_id: str = "gw-01", site: str = "xfl") -> str:
    return events_to_line_protocol([e], gateway_id, site).decode()


def test_measurement_is_the_family() -> None:
    events = one_per_family()
    assert {e.family for e in events} == set(Family)
    for e in events:
        assert line(e).startswith(f"{e.family.value},")


def test_tags_of_every_family() -> None:
    for e in one_per_family():
        assert event_tags(e, "gw-01", "xfl") == {
            "site": "xfl",
            "gateway": "gw-01",
            "building": "3",
            "unit": "2",
            "household": "502",
            "room": "卫生间",
            "device": e.device_id,
            "event": e.kind.value,
            "source": e.source,
        }  # model is empty in these samples, so left out


def test_tag_order_and_full_set() -> None:
    e = event(model="MCCGQ11LM", values={TEST: True, TEST_MODE: 3})
    assert tuple(event_tags(e, "gw-01", "xfl")) == TAG_KEYS


def test_a_test_is_tagged_and_nothing_else_is() -> None:
    """In test mode (values.test) or the device's own test signal: test=true; otherwise no tag."""
    in_test_mode = event(Family.SMOKE, Kind.SMOKE_ALARM, values={TEST: True, TEST_MODE: 3, "linkquality": 80})
    assert event_tags(in_test_mode, "gw-01", "xfl")["test"] == "true"
    fields = event_fields(in_test_mode)
    assert "test" not in fields and fields["test_mode"] == 3.0  # the tag says it; the id stays a field
    assert ",test=true," in line(in_test_mode)  # tags sorted: after source, before unit
    assert event_tags(event(Family.SMOKE, Kind.SMOKE_TEST), "gw-01", "xfl")["test"] == "true"
    assert event_tags(event(Family.SMOKE, Kind.SELF_TEST), "gw-01", "xfl")["test"] == "true"
    for real in (event(Family.SMOKE, Kind.SMOKE_ALARM), event(Family.SMOKE, Kind.SMOKE_ALARM, values={TEST: False})):
        assert "test" not in event_tags(real, "gw-01", "xfl")


def test_empty_tag_values_are_left_out() -> None:
    e = event(location=Location(), model="", source="")
    assert event_tags(e, "gw-01", "") == {"gateway": "gw-01", "device": e.device_id, "event": "door_opened"}
    assert line(e, site="").startswith("door,device=door-3-2-502,event=door_opened,gateway=gw-01 ")


def test_numbers_become_floats_bools_and_strings_stay() -> None:
    e = event(values={"battery": 100, "voltage": 2.95, "tamper": False, "person": "张三", "linkquality": 87})
    fields = event_fields(e)
    assert fields["battery"] == 100.0 and type(fields["battery"]) is float
    assert type(fields["linkquality"]) is float
    assert fields["voltage"] == 2.95
    assert fields["tamper"] is False
    assert fields["person"] == "张三"
    text = line(e)
    # no "i" suffix: an int 100 today and 96.5 tomorrow are the same field type
    assert "battery=100," in text and "linkquality=87," in text and "tamper=false" in text


def test_meta_fields_always_present() -> None:
    e = event(seq=7, values={}, received_at=T0 + 0.5, time_source="device")
    assert event_fields(e) == {"seq": 7, "received_at": T0 + 0.5, "time_source": "device"}
    assert ' received_at=1717000000.623,seq=7i,time_source="device" ' in line(e)


def test_values_that_clash_with_reserved_names_are_renamed() -> None:
    e = event(seq=7, values={"seq": 99, "time": 5, "received_at": 1.0})
    fields = event_fields(e)
    assert fields["seq"] == 7
    assert fields["value_seq"] == 99.0 and fields["value_time"] == 5.0 and fields["value_received_at"] == 1.0
    assert "time" not in fields


def test_non_finite_floats_are_left_out() -> None:
    text = line(event(values={"temperature": math.nan, "level": math.inf, "battery": 50}))
    assert "temperature" not in text and "level" not in text and "battery=50" in text


def test_point_time_worked_example() -> None:
    # the example in docs/influxdb.md
    e = event(event_time=1_717_000_000.123456, seq=1_000_042)
    assert point_time_ns(e) == 1_717_000_000_123_000_042
    assert line(e).endswith(" 1717000000123000042")


def test_point_time_survives_float_noise() -> None:
    # 1717000000.123 * 1000 == 1717000000122.9998 in binary floating point
    assert point_time_ns(event(event_time=1_717_000_000.123, seq=0)) == 1_717_000_000_123_000_000


def test_same_seq_and_time_give_the_identical_line() -> None:
    a = event(seq=5, received_at=T0 + 1)
    b = event(seq=5, received_at=T0 + 1)
    assert line(a) == line(b)


def test_same_millisecond_different_seq_gives_distinct_times() -> None:
    a = event(seq=5, event_time=T0)
    b = event(seq=6, event_time=T0 + 0.0004)  # same millisecond
    assert point_time_ns(a) // 1_000_000 == point_time_ns(b) // 1_000_000
    assert point_time_ns(a) != point_time_ns(b)


@given(
    seq=st.integers(min_value=0, max_value=2**53),
    event_time=st.floats(min_value=0, max_value=4_102_444_800),  # up to 2100
)
def test_point_time_rule(seq: int, event_time: float) -> None:
    ns = point_time_ns(event(seq=seq, event_time=event_time))
    assert ns % 1_000_000 == seq % 1_000_000
    assert abs(ns // 1_000_000 - event_time * 1000) <= 1.001


def test_escaping_of_chinese_spaces_commas_and_equals() -> None:
    e = event(
        location=Location(building="3", unit="2", household="502", room="卫生间, 北 =侧"),
        values={"person": 'say "hi" \\ 你好'},
    )
    text = line(e, site="幸福里 小区")
    assert "site=幸福里\\ 小区" in text
    assert "room=卫生间\\,\\ 北\\ \\=侧" in text
    assert 'person="say \\"hi\\" \\\\ 你好"' in text
    assert text.encode() in events_to_line_protocol([e], "gw-01", "幸福里 小区")


def test_batch_is_one_line_per_event() -> None:
    events = one_per_family()
    body = events_to_line_protocol(events, "gw-01", "xfl")
    assert isinstance(body, bytes)
    assert len(body.decode().split("\n")) == len(events)
    assert events_to_line_protocol([], "gw-01", "xfl") == b""


def test_registry_entries_fit_the_sink_contract() -> None:
    assert {"influxdb_v1": InfluxV1Sink, "influxdb_v2": InfluxV2Sink} == SINKS
    sinks: list[Sink] = [
        InfluxV1Sink("a", "http://127.0.0.1:8086", "db"),
        InfluxV2Sink("b", "http://127.0.0.1:8086", "org", "bucket"),
    ]
    for sink in sinks:
        assert sink.name in ("a", "b")
        for method in ("open", "write", "close"):
            assert callable(getattr(sink, method))


def test_repr_has_no_secrets() -> None:
    v1 = InfluxV1Sink("a", "http://127.0.0.1:8086", "db", username="u", password="s3cret")
    v2 = InfluxV2Sink("b", "http://127.0.0.1:8086", "org", "bucket", token="t0ken")
    assert "s3cret" not in repr(v1) and "t0ken" not in repr(v2)


def test_bad_settings_are_refused_at_construction() -> None:
    for make in (
        lambda: InfluxV1Sink("a", "127.0.0.1:8086", "db"),
        lambda: InfluxV1Sink("a", "http://127.0.0.1:8086", ""),
        lambda: InfluxV1Sink("a", "http://127.0.0.1:8086", "db", timeout=0),
        lambda: InfluxV2Sink("b", "ftp://127.0.0.1", "org", "bucket"),
        lambda: InfluxV2Sink("b", "http://127.0.0.1:8086", "org", ""),
    ):
        with pytest.raises(ValueError):
            make()


def test_the_worked_example_in_the_docs_is_what_the_schema_writes() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "influxdb.md"
    documented = next(ln for ln in doc.read_text().splitlines() if ln.startswith("fall,"))
    e = event(
        Family.FALL,
        Kind.FALL_DETECTED,
        seq=1_000_042,
        event_time=1_717_000_000.123456,
        received_at=1_717_000_000.4,
        device_id="radar-502-bath",
        model="MR60FDA1",
        source="native",
        time_source="device",
        values={"present": True, "distance": 1.25},
    )
    assert line(e, "gw-01", "幸福里 小区") == documented
