"""InfluxDB 2.x sink (``/api/v2/write``) through ``influxdb_client``, synchronous, in a thread.

Also fits InfluxDB 1.8+ (token ``user:password``, bucket ``database/retention_policy``),
InfluxDB 3 and VictoriaMetrics, which takes ``/api/v2/write`` and ignores org, bucket and token.

The client's own retries are off (``retries=False``, synchronous write API): the runtime owns
retry and back-off, and a retry hidden in here would mask outages and double the back-off.

How failures map onto the error tree::

    400 / 422                   RejectedBatchError  bad line protocol, field type conflict …
                                                    (the server's message is kept)
    400 "provide … org"         RetryableSinkError  empty org on InfluxDB 2: config, not data
    413                         RejectedBatchError  too large: a smaller batch will do
    401 / 403, 404, other 4xx   RetryableSinkError  a token, org or bucket can be fixed; keep the data
    429, 5xx                    RetryableSinkError
    refused, reset, timeout     RetryableSinkError
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import urllib3

from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Event
from gateway.outputs.sinks.schema import events_to_line_protocol_in_pieces
from gateway.outputs.sinks.settings import checked_url

if TYPE_CHECKING:
    from influxdb_client.client.exceptions import InfluxDBError

# 413: the batch is too big for the server; the forwarder's halving of a rejected batch is
# exactly the cure, and a single event that is still too big can never be written.
REJECTED_STATUSES = frozenset({400, 413, 422})
# A 400 that a config fix cures rather than a data problem: InfluxDB 2 answers an empty ``org``
# with it. Rejecting would send the whole backlog to the dead letters, one event at a time.
CONFIG_PROBLEMS_400 = ("provide either orgid or org",)


class InfluxV2Sink:
    """Writes events to an InfluxDB 2.x bucket.

    ``gateway_id`` and ``site`` become the ``gateway`` and ``site`` tags of every point.
    ``open()`` does no network I/O: a server that is down at start-up fails the first write.
    """

    def __init__(
        self,
        name: str,
        url: str,
        org: str,
        bucket: str,
        token: str = "",
        timeout: float = 10.0,
        gzip: bool = True,
        *,
        gateway_id: str = "",
        site: str = "",
    ) -> None:
        self.url = checked_url(name, url, timeout, bucket=bucket)
        self.name = name
        self.org = org
        self.bucket = bucket
        self.timeout = timeout
        self.gzip = gzip
        self.gateway_id = gateway_id
        self.site = site
        self._token = token
        self._client: Any = None
        self._write_api: Any = None

    def __repr__(self) -> str:  # no token
        return f"InfluxV2Sink(name={self.name!r}, url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    async def open(self) -> None:
        if self._client is None:
            # influxdb_client is 12–14 MiB of memory and 500 modules: only for a gateway with an
            # influxdb_v2 output (docs/performance.md), not at every start.
            from influxdb_client.client.influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            self._client = InfluxDBClient(
                url=self.url,
                token=self._token,
                org=self.org,
                timeout=int(self.timeout * 1000),
                enable_gzip=self.gzip,
                retries=False,
            )
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    async def close(self) -> None:
        client, write_api = self._client, self._write_api
        self._client = self._write_api = None
        if write_api is not None:
            await asyncio.to_thread(write_api.close)
        if client is not None:
            await asyncio.to_thread(client.close)

    async def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._write_api is None:
            await self.open()
        await asyncio.to_thread(self._write_blocking, self._write_api, events)

    def _write_blocking(self, write_api: Any, events: Sequence[Event]) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision

        try:
            body = events_to_line_protocol_in_pieces(events, self.gateway_id, self.site)
            write_api.write(bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.NS)
        except InfluxDBError as exc:
            status = int(getattr(exc, "status", 0) or getattr(exc.response, "status", 0) or 0)
            reason = _reason(exc)
            message = f"{self.name}: InfluxDB answered HTTP {status}: {reason}"
            config_problem = any(hint in reason.lower() for hint in CONFIG_PROBLEMS_400)
            if status in REJECTED_STATUSES and not config_problem:
                raise RejectedBatchError(message) from exc
            raise RetryableSinkError(message) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableSinkError(f"{self.name}: cannot reach {self.url}: {exc}") from exc
        except Exception as exc:  # anything else from the client: keep the batch, say what it was
            raise RetryableSinkError(f"{self.name}: {type(exc).__name__}: {exc}") from exc


def _reason(exc: InfluxDBError) -> str:
    """The server's message: JSON ``message`` (the client extracts it), else the body or reason."""
    message = getattr(exc, "message", None)
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    if isinstance(message, str) and message.strip() and message != "no response":
        return message.strip()[:2000]
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body.strip():
        return body.strip()[:2000]
    return str(getattr(exc, "reason", "") or "no reason given")
