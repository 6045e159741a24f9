"""The line-protocol encoder fuzzed against a real InfluxDB 1.x: whatever text a device or the
config puts into names, tag values and string values, every point is written (never refused)
and reads back exactly as the schema says it is stored (``event_tags`` / ``event_fields``:
unchanged, except what line protocol cannot carry, gateway/outputs/sinks/line_protocol.py)."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import Event, Family, Kind, Location
from gateway.outputs.sinks import InfluxV1Sink
from gateway.outputs.sinks.schema import event_fields, event_tags, point_time_ns
from tests.servers import InfluxDB1
from tests.sinks.sample_events import T0, event

pytestmark = pytest.mark.integration

KINDS = {
    Family.DOOR: Kind.DOOR_OPENED,
    Family.FALL: Kind.FALL_DETECTED,
    Family.SMOKE: Kind.SMOKE_ALARM,
    Family.PRESENCE: Kind.PRESENCE,
}
# What breaks line protocol, often; any other character (surrogates too) now and then.
SPECIAL = st.sampled_from([",", "=", " ", '"', "\\", "\n", "\r", "\t", "#", "'", "\x00", "卫"])
TEXT = st.text(st.one_of(SPECIAL, SPECIAL, st.characters(), st.characters(categories=["Cs"])), max_size=16)
NAME = TEXT.filter(bool)
VALUE = st.one_of(
    st.booleans(),
    st.floats(),  # NaN and ±inf too: left out
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    TEXT,
)


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    # One event per family: a field's type is fixed per measurement, and these are random.
    families = draw(st.lists(st.sampled_from(list(KINDS)), min_size=1, max_size=3, unique=True))
    return [
        event(
            family,
            KINDS[family],
            seq=i + 1,
            event_time=T0 + i,
            device_id=draw(NAME),
            model=draw(TEXT),
            source=draw(TEXT),
            time_source=draw(st.sampled_from(["device", "gateway"])),
            location=Location(building=draw(TEXT), unit=draw(TEXT), household=draw(TEXT), room=draw(TEXT)),
            values=draw(st.dictionaries(TEXT, VALUE, max_size=5)),
        )
        for i, family in enumerate(families)
    ]


def read_back(influx: InfluxDB1, database: str, family: str) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    """(time, tags, fields) of every point of a measurement; ``*::field`` so that a field named
    like a tag is not renamed ``<name>_1`` in the answer."""
    results = influx._query(f'SELECT *::field FROM "{family}" GROUP BY *', db=database, method="GET")
    points = []
    for series in results[0].get("series", []):
        tags = {k: v for k, v in (series.get("tags") or {}).items() if v != ""}
        for row in series["values"]:
            columns = dict(zip(series["columns"], row, strict=True))
            time = columns.pop("time")
            points.append((time, tags, {k: v for k, v in columns.items() if v is not None}))
    return points


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=events(), gateway_id=NAME, site=TEXT)
def test_every_point_written_reads_back_as_the_schema_stores_it(
    influxdb_v1: InfluxDB1, batch: list[Event], gateway_id: str, site: str
) -> None:
    database = f"fuzz_{uuid.uuid4().hex[:12]}"
    influxdb_v1.create_database(database)
    sink = InfluxV1Sink("influx", influxdb_v1.url, database, timeout=5.0, gateway_id=gateway_id, site=site)

    async def write() -> None:
        await sink.open()
        try:
            await sink.write(batch)  # a refused point raises RejectedBatchError
        finally:
            await sink.close()

    try:
        asyncio.run(write())
        for e in batch:
            fields = {k: v for k, v in event_fields(e).items() if not (isinstance(v, float) and not math.isfinite(v))}
            ((time, tags, stored),) = read_back(influxdb_v1, database, e.family.value)
            # JSON writes a float of 3e16 as 31634139566842010: a number, read as an int.
            stored = {k: float(v) if isinstance(fields.get(k), float) else v for k, v in stored.items()}
            assert (time, tags, stored) == (point_time_ns(e), event_tags(e, gateway_id, site), fields)
    finally:
        influxdb_v1.drop_database(database)


async def test_a_field_key_or_tag_ending_in_a_backslash_is_written_not_dead_lettered(influxdb_v1: InfluxDB1) -> None:
    # Issue 13: InfluxDB refused the point ("invalid field format"), so the forwarder
    # dead-lettered it, every time.
    database = f"t_{uuid.uuid4().hex[:12]}"
    influxdb_v1.create_database(database)
    sink = InfluxV1Sink("influx", influxdb_v1.url, database, timeout=5.0, gateway_id="gw-01", site="幸福里")
    e = event(values={"path\\": 1.0, 'say\\"': "C:\\temp\\"}, location=Location(building="3\\", room="厨房 \\"))
    await sink.open()
    try:
        await sink.write([e])
    finally:
        await sink.close()
    ((time, tags, fields),) = read_back(influxdb_v1, database, "door")
    assert fields == {
        "path＼": 1.0,
        'say＼"': "C:\\temp\\",
        "seq": 1,
        "received_at": e.received_at,
        "time_source": "gateway",
    }
    assert tags["building"] == "3＼" and tags["room"] == "厨房 ＼" and time == point_time_ns(e)
