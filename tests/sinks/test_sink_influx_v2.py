"""InfluxV2Sink against a real VictoriaMetrics (``/api/v2/write``; org, bucket and token ignored).

VictoriaMetrics stores ``measurement field=v`` as the metric ``measurement_field`` with the tags
as labels, at millisecond precision. A real InfluxDB 2 can't be installed from Debian here, so
its error answers (400 / 422 JSON with ``message``) are replayed by ``CannedHTTP``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Family, Kind
from gateway.outputs.sinks import InfluxV2Sink
from tests.servers import Blackhole, CannedHTTP, Server, VictoriaMetrics
from tests.sinks.sample_events import T0, event, one_per_family

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_id() -> str:
    """A fresh gateway label per test, so tests sharing the server never see each other's data."""
    return f"gw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def sink(victoriametrics: VictoriaMetrics, gateway_id: str) -> AsyncIterator[InfluxV2Sink]:
    s = InfluxV2Sink("vm", victoriametrics.url, "org", "bucket", token="ignored", timeout=2.0, gateway_id=gateway_id)
    await s.open()
    yield s
    await s.close()


def by_name(series: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {s["metric"]["__name__"]: s for s in series}  # type: ignore[index]


@pytest.mark.parametrize("gzip", [True, False])
async def test_every_family_arrives_with_tags_as_labels(
    victoriametrics: VictoriaMetrics, gateway_id: str, gzip: bool
) -> None:
    sink = InfluxV2Sink(
        "vm", victoriametrics.url, "org", "bucket", gzip=gzip, gateway_id=gateway_id, site="幸福里 小区"
    )
    events = one_per_family(start_seq=10)
    await sink.write(events)
    await sink.close()

    # 3 meta fields + each event's values
    expected = sum(3 + len(e.values) for e in events)
    series = by_name(victoriametrics.wait_for_samples(f'{{gateway="{gateway_id}"}}', samples=expected))
    assert len(series) == expected
    for e in events:
        seq = series[f"{e.family.value}_seq"]
        assert seq["metric"] == {
            "__name__": f"{e.family.value}_seq",
            "site": "幸福里 小区",
            "gateway": gateway_id,
            "building": "3",
            "unit": "2",
            "household": "502",
            "room": "卫生间",
            "device": e.device_id,
            "event": e.kind.value,
            "source": e.source,
        }
        assert seq["values"] == [e.seq]
        assert seq["timestamps"] == [round(e.event_time * 1000)]  # ms: the seq nanoseconds are gone
    assert series["sos_battery"]["values"] == [96.5]
    assert series["smoke_battery"]["values"] == [100]
    assert series["fall_present"]["values"] == [1]  # bools become 1 / 0
    assert series["presence_present"]["values"] == [0]
    assert series["door_credential"]["values"] == [0]  # VM quirk: a string field becomes a 0


async def test_replayed_batch_is_stored_twice_by_default(
    victoriametrics: VictoriaMetrics, gateway_id: str, sink: InfluxV2Sink
) -> None:
    # Unlike InfluxDB, VictoriaMetrics keeps both copies unless started with
    # -dedup.minScrapeInterval (docs/influxdb.md says so).
    batch = [event(seq=1), event(seq=2, event_time=T0 + 1)]
    await sink.write(batch)
    await sink.write(batch)
    series = victoriametrics.wait_for_samples(f'door_seq{{gateway="{gateway_id}"}}', samples=4)
    assert sorted(series[0]["values"]) == [1, 1, 2, 2]


async def test_replayed_batch_collapses_with_dedup(gateway_id: str) -> None:
    with VictoriaMetrics(extra_args=["-dedup.minScrapeInterval=1ms"]) as vm:
        sink = InfluxV2Sink("vm", vm.url, "org", "bucket", gateway_id=gateway_id)
        batch = [event(seq=1), event(seq=2, event_time=T0 + 1)]
        await sink.write(batch)
        await sink.write([*batch, event(seq=3, event_time=T0 + 2)])
        await sink.close()
        series = vm.wait_for_samples("door_seq", samples=3)  # the replay is visible once seq 3 is
        assert sorted(series[0]["values"]) == [1, 2, 3]


async def test_outage_is_retryable_and_writes_resume_after_restart(
    victoriametrics: VictoriaMetrics, gateway_id: str, sink: InfluxV2Sink, ensure_started: list[Server]
) -> None:
    await sink.write([event(seq=1)])
    ensure_started.append(victoriametrics)
    victoriametrics.stop()
    started = time.monotonic()
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await sink.write([event(seq=2, event_time=T0 + 1)])
    assert time.monotonic() - started < 1.0
    victoriametrics.start()
    await sink.write([event(seq=2, event_time=T0 + 1)])
    series = victoriametrics.wait_for_samples(f'door_seq{{gateway="{gateway_id}"}}', samples=2)
    assert sorted(series[0]["values"]) == [1, 2]


async def test_hung_server_times_out_as_retryable() -> None:
    with Blackhole() as hole:
        sink = InfluxV2Sink("vm", hole.url, "org", "bucket", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RetryableSinkError, match="timed out"):
            await sink.write([event()])
        assert time.monotonic() - started < 2.0
        await sink.close()


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason"),
    [
        (
            400,
            b'{"code":"invalid","message":"partial write error (1 written): unable to parse '
            b"'door v=': missing field value\"}",
            RejectedBatchError,
            "partial write error (1 written): unable to parse",
        ),
        (
            422,
            b'{"code":"unprocessable entity","message":"failure writing points to database: '
            b'partial write: field type conflict"}',
            RejectedBatchError,
            "field type conflict",
        ),
        (
            400,
            b'{"code":"invalid","message":"Please provide either orgID or org"}',
            RetryableSinkError,  # an empty org is a config problem: keep the data
            "orgID or org",
        ),
        (401, b'{"code":"unauthorized","message":"unauthorized access"}', RetryableSinkError, "unauthorized"),
        (404, b'{"code":"not found","message":"bucket \\"x\\" not found"}', RetryableSinkError, 'bucket "x"'),
        (413, b'{"code":"request too large","message":"too large"}', RejectedBatchError, "too large"),
        (429, b"", RetryableSinkError, "HTTP 429"),
        (500, b"internal error", RetryableSinkError, "internal error"),
        (503, b'{"code":"unavailable","message":"service unavailable"}', RetryableSinkError, "unavailable"),
    ],
)
async def test_http_status_mapping(status: int, body: bytes, expected: type[Exception], reason: str) -> None:
    with CannedHTTP(status, body, {"Content-Type": "application/json"}) as server:
        sink = InfluxV2Sink("v2", server.url, "my-org", "my-bucket", token="s3cret")
        with pytest.raises(expected, match=f"HTTP {status}") as info:
            await sink.write([event(Family.SOS, Kind.SOS_PRESSED)])
        await sink.close()
        assert reason in str(info.value)
        assert "s3cret" not in str(info.value)
        assert len(server.requests) == 1  # the client did not retry on its own
        method, path, headers, _ = server.requests[0]
        assert method == "POST" and path.startswith("/api/v2/write?")
        assert "org=my-org" in path and "bucket=my-bucket" in path and "precision=ns" in path
        assert headers["authorization"] == "Token s3cret"
        assert headers["content-encoding"] == "gzip"


async def test_empty_batch_and_double_close_are_harmless(sink: InfluxV2Sink) -> None:
    await sink.write([])
    await sink.close()
    await sink.close()
