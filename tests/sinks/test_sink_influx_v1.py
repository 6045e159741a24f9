"""InfluxV1Sink against a real InfluxDB 1.x (the ``influxdb_v1`` fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Family, Kind
from gateway.outputs.sinks import InfluxV1Sink
from gateway.outputs.sinks.schema import point_time_ns
from tests.servers import Blackhole, CannedHTTP, InfluxDB1, Server, VictoriaMetrics
from tests.sinks.sample_events import T0, event, one_per_family

pytestmark = pytest.mark.integration


@pytest.fixture
def database(influxdb_v1: InfluxDB1) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxdb_v1.create_database(name)
    return name


@pytest.fixture
async def sink(influxdb_v1: InfluxDB1, database: str) -> AsyncIterator[InfluxV1Sink]:
    s = InfluxV1Sink("influx", influxdb_v1.url, database, timeout=2.0, gateway_id="gw-01", site="幸福里 小区")
    await s.open()
    yield s
    await s.close()


def count_points(influx: InfluxDB1, db: str) -> int:
    rows = influx.query(db, "SELECT COUNT(seq) FROM /.*/")
    return sum(int(r["count"]) for r in rows)


@pytest.mark.parametrize("gzip", [True, False])
async def test_every_family_is_stored_with_the_documented_tags_and_fields(
    influxdb_v1: InfluxDB1, database: str, gzip: bool
) -> None:
    sink = InfluxV1Sink("influx", influxdb_v1.url, database, gzip=gzip, gateway_id="gw-01", site="幸福里 小区")
    await sink.open()
    events = one_per_family(start_seq=10)
    await sink.write(events)
    await sink.close()

    measurements = {r["name"] for r in influxdb_v1.query(database, "SHOW MEASUREMENTS")}
    assert measurements == {f.value for f in Family}
    for e in events:
        rows = influxdb_v1.query(database, f'SELECT * FROM "{e.family.value}"')
        assert len(rows) == 1
        row = rows[0]
        assert row["time"] == point_time_ns(e)
        assert row["site"] == "幸福里 小区" and row["gateway"] == "gw-01"
        assert (row["building"], row["unit"], row["household"], row["room"]) == ("3", "2", "502", "卫生间")
        assert row["device"] == e.device_id and row["event"] == e.kind.value and row["source"] == e.source
        assert row["seq"] == e.seq and row["received_at"] == pytest.approx(e.received_at)
        assert row["time_source"] == "gateway"
        for key, value in e.values.items():
            assert row[key] == value, key
    # tags really are tags, and the stored field types follow the schema
    tag_keys = {r["tagKey"] for r in influxdb_v1.query(database, 'SHOW TAG KEYS FROM "door"')}
    assert tag_keys == {
        "site",
        "gateway",
        "building",
        "unit",
        "household",
        "room",
        "device",
        "event",
        "source",
    }
    types = {r["fieldKey"]: r["fieldType"] for r in influxdb_v1.query(database, 'SHOW FIELD KEYS FROM "smoke"')}
    assert types == {
        "battery": "float",
        "smoke": "boolean",
        "seq": "integer",
        "received_at": "float",
        "time_source": "string",
    }


async def test_int_then_float_battery_is_no_type_conflict(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink
) -> None:
    await sink.write([event(Family.SOS, Kind.BATTERY, seq=1, values={"battery": 100})])
    await sink.write([event(Family.SOS, Kind.BATTERY, seq=2, event_time=T0 + 60, values={"battery": 96.5})])
    rows = influxdb_v1.query(database, 'SELECT battery FROM "sos"')
    assert [r["battery"] for r in rows] == [100, 96.5]


async def test_replayed_batch_overwrites_instead_of_duplicating(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink
) -> None:
    batch = one_per_family(start_seq=100)
    await sink.write(batch)
    await sink.write(batch)
    await sink.write(batch[2:5])
    assert count_points(influxdb_v1, database) == len(batch)


async def test_two_events_of_one_device_in_the_same_millisecond_are_both_kept(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink
) -> None:
    opened = event(kind=Kind.DOOR_OPENED, seq=500, event_time=T0)
    closed = event(kind=Kind.DOOR_CLOSED, seq=501, event_time=T0 + 0.0003)
    again = event(kind=Kind.DOOR_OPENED, seq=502, event_time=T0 + 0.0006)
    await sink.write([opened, closed, again])
    rows = influxdb_v1.query(database, 'SELECT seq, "event" FROM "door"')
    assert [(r["seq"], r["event"]) for r in rows] == [
        (500, "door_opened"),
        (501, "door_closed"),
        (502, "door_opened"),
    ]


async def test_field_type_conflict_is_rejected_with_the_servers_reason(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink
) -> None:
    await sink.write([event(Family.GAS, Kind.GAS_ALARM, seq=1, values={"level": 3})])
    bad = event(Family.GAS, Kind.GAS_ALARM, seq=2, values={"level": "high"})
    good = event(Family.GAS, Kind.GAS_CLEAR, seq=3, values={"level": 0})
    with pytest.raises(RejectedBatchError) as info:
        await sink.write([bad, good])
    message = str(info.value)
    assert "partial write" in message and "field type conflict" in message and '"level"' in message
    assert "HTTP 400" in message and "influx" in message
    # InfluxDB 1.x kept the good point of the partial write
    assert sorted(r["seq"] for r in influxdb_v1.query(database, 'SELECT seq FROM "gas"')) == [1, 3]


async def test_unparsable_batch_is_rejected_with_the_servers_reason(sink: InfluxV1Sink) -> None:
    # A device clock in the year 2286: the ns timestamp overflows InfluxDB's int64.
    broken_clock = event(seq=1, event_time=1e10)
    with pytest.raises(RejectedBatchError, match=r"unable to parse .*value out of range"):
        await sink.write([broken_clock])


async def test_missing_database_is_retryable(influxdb_v1: InfluxDB1) -> None:
    sink = InfluxV1Sink("influx", influxdb_v1.url, f"missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(RetryableSinkError, match="HTTP 404: database not found"):
        await sink.write([event()])
    await sink.close()


async def test_create_database_creates_it_on_first_write(influxdb_v1: InfluxDB1) -> None:
    name = f"auto_{uuid.uuid4().hex[:8]}"
    sink = InfluxV1Sink("influx", influxdb_v1.url, name, create_database=True)
    await sink.open()
    await sink.write([event(seq=1)])
    await sink.write([event(seq=2)])
    await sink.close()
    assert count_points(influxdb_v1, name) == 2


async def test_missing_retention_policy_is_retryable(influxdb_v1: InfluxDB1, database: str) -> None:
    sink = InfluxV1Sink("influx", influxdb_v1.url, database, retention_policy="one_year")
    with pytest.raises(RetryableSinkError, match="retention policy not found: one_year"):
        await sink.write([event()])
    influxdb_v1.query(database, f'CREATE RETENTION POLICY "one_year" ON "{database}" DURATION INF REPLICATION 1')
    await sink.write([event()])
    assert influxdb_v1.query(database, 'SELECT seq FROM "one_year"."door"')[0]["seq"] == 1
    await sink.close()


async def test_outage_is_retryable_and_writes_resume_after_restart(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink, ensure_started: list[Server]
) -> None:
    await sink.write([event(seq=1)])
    ensure_started.append(influxdb_v1)
    influxdb_v1.stop()
    started = time.monotonic()
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await sink.write([event(seq=2)])
    assert time.monotonic() - started < 1.0  # refused, not a timeout
    influxdb_v1.start()
    await sink.write([event(seq=2)])  # the same pool reconnects
    assert count_points(influxdb_v1, database) == 2


async def test_crash_mid_stream_is_retryable(
    influxdb_v1: InfluxDB1, database: str, sink: InfluxV1Sink, ensure_started: list[Server]
) -> None:
    await sink.write([event(seq=1)])
    ensure_started.append(influxdb_v1)
    influxdb_v1.kill()
    with pytest.raises(RetryableSinkError):
        await sink.write([event(seq=2)])
    influxdb_v1.start()
    await sink.write([event(seq=2)])
    assert count_points(influxdb_v1, database) == 2


async def test_hung_server_times_out_as_retryable() -> None:
    with Blackhole() as hole:
        sink = InfluxV1Sink("influx", hole.url, "db", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RetryableSinkError, match="timed out"):
            await sink.write([event()])
        assert time.monotonic() - started < 2.0
        await sink.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, b'{"error":"authorization failed"}', RetryableSinkError),
        (403, b'{"error":"user not authorized to write"}', RetryableSinkError),
        (413, b'{"error":"Request Entity Too Large"}', RejectedBatchError),
        (429, b"", RetryableSinkError),
        (500, b'{"error":"timeout"}', RetryableSinkError),
        (503, b"<html>bad gateway</html>", RetryableSinkError),
        (422, b'{"error":"unprocessable"}', RejectedBatchError),
    ],
)
async def test_http_status_mapping(status: int, body: bytes, expected: type[Exception]) -> None:
    with CannedHTTP(status, body) as server:
        sink = InfluxV1Sink("influx", server.url, "db", username="gw", password="pw")
        with pytest.raises(expected, match=f"HTTP {status}") as info:
            await sink.write([event()])
        await sink.close()
        if body.startswith(b"{"):
            assert body.decode().split('"')[3] in str(info.value)
        method, path, headers, _ = server.requests[0]
        assert method == "POST" and path == "/write?db=db&precision=ns"
        assert headers["authorization"] == "Basic Z3c6cHc="
        assert headers["content-encoding"] == "gzip"


async def test_empty_batch_and_double_close_are_harmless(sink: InfluxV1Sink) -> None:
    await sink.write([])
    await sink.close()
    await sink.close()


async def test_victoriametrics_takes_the_v1_sink_too(victoriametrics: VictoriaMetrics) -> None:
    gateway_id = f"gw-{uuid.uuid4().hex[:10]}"
    sink = InfluxV1Sink("vm", victoriametrics.url, "ignored", gateway_id=gateway_id)
    await sink.write([event(seq=7)])
    await sink.close()
    series = victoriametrics.wait_for_samples(f'door_seq{{gateway="{gateway_id}"}}')
    assert series[0]["values"] == [7]
