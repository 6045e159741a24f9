"""InfluxDB 1.x sink: POST line protocol to ``/write`` with urllib3.

Thin by design (docs/influxdb.md): it opens a connection pool, writes one batch per call and
says whether a failure is worth retrying. Buffering, batching and back-off belong to the runtime.

How the answers of ``/write`` map onto the error tree::

    2xx                         written
    400 / 422                   RejectedBatchError  "partial write: …", "unable to parse …",
                                                    field type conflict (the server's text is kept)
    413                         RejectedBatchError  too large: a smaller batch will do
    404 database not found      RetryableSinkError  (or CREATE DATABASE and write again,
                                                    when create_database=True)
    401 / 403, other 4xx        RetryableSinkError  a config fix makes it succeed; keep the data
    429, 5xx                    RetryableSinkError
    refused, reset, timeout     RetryableSinkError
"""

from __future__ import annotations

import asyncio
import gzip as gzip_module
import json
from collections.abc import Sequence
from urllib.parse import urlencode

import urllib3

from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.models import Event
from gateway.outputs.sinks.schema import events_to_line_protocol_in_pieces
from gateway.outputs.sinks.settings import checked_url, reason_in_body

# 413: the batch is too big for the server; the forwarder's halving of a rejected batch is
# exactly the cure, and a single event that is still too big can never be written.
REJECTED_STATUSES = frozenset({400, 413, 422})


def server_reason(status: int, body: bytes, headers: urllib3.HTTPHeaderDict | None = None) -> str:
    """The server's own words for a failed request: JSON ``error`` / ``message``, a header, or the body."""
    text = reason_in_body(body, ("error", "message"))
    if not text and headers is not None:
        text = headers.get("X-Influxdb-Error", "")
    return text[:2000] or f"HTTP {status}"


class InfluxV1Sink:
    """Writes events to an InfluxDB 1.x database (or anything speaking its ``/write`` API).

    ``gateway_id`` and ``site`` become the ``gateway`` and ``site`` tags of every point.
    ``open()`` does no network I/O, so a server that is down at start-up is not an error until
    the first write. With ``create_database=True`` a write answered with "database not found"
    issues ``CREATE DATABASE`` and tries once more.
    """

    def __init__(
        self,
        name: str,
        url: str,
        database: str,
        retention_policy: str = "",
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
        gzip: bool = True,
        create_database: bool = False,
        *,
        gateway_id: str = "",
        site: str = "",
    ) -> None:
        self.url = checked_url(name, url, timeout, database=database)
        self.name = name
        self.database = database
        self.retention_policy = retention_policy
        self.timeout = timeout
        self.gzip = gzip
        self.create_database = create_database
        self.gateway_id = gateway_id
        self.site = site
        self._headers: dict[str, str] = {}
        if username or password:
            self._headers.update(urllib3.make_headers(basic_auth=f"{username}:{password}"))
        self._pool: urllib3.PoolManager | None = None

    def __repr__(self) -> str:  # no credentials
        return f"InfluxV1Sink(name={self.name!r}, url={self.url!r}, database={self.database!r})"

    async def open(self) -> None:
        if self._pool is None:
            self._pool = urllib3.PoolManager(
                num_pools=2,
                maxsize=2,
                retries=False,  # the runtime owns retries and back-off
                timeout=urllib3.Timeout(total=self.timeout),
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    async def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._pool is None:
            await self.open()
        await asyncio.to_thread(self._write_blocking, events)

    # -- blocking part, run in a worker thread ------------------------------------------------
    def _write_blocking(self, events: Sequence[Event]) -> None:
        try:
            body = events_to_line_protocol_in_pieces(events, self.gateway_id, self.site)
            headers = {"Content-Type": "text/plain; charset=utf-8", **self._headers}
            if self.gzip:
                body = gzip_module.compress(body, compresslevel=5)
                headers["Content-Encoding"] = "gzip"
            params = {"db": self.database, "precision": "ns"}
            if self.retention_policy:
                params["rp"] = self.retention_policy
            url = f"{self.url}/write?{urlencode(params)}"

            status, reply, reply_headers = self._request("POST", url, body, headers)
            if status == 404 and self.create_database and "database not found" in reply.decode(errors="replace"):
                self._create_database()
                status, reply, reply_headers = self._request("POST", url, body, headers)
        except (RetryableSinkError, RejectedBatchError):
            raise
        except Exception as exc:  # a library or encoding failure: keep the batch, say what it was
            raise RetryableSinkError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

        if 200 <= status < 300:
            return
        reason = server_reason(status, reply, reply_headers)
        message = f"{self.name}: InfluxDB answered HTTP {status}: {reason}"
        if status in REJECTED_STATUSES:
            raise RejectedBatchError(message)
        raise RetryableSinkError(message)

    def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, urllib3.HTTPHeaderDict]:
        pool = self._pool
        if pool is None:
            raise RetryableSinkError(f"{self.name}: sink is closed")
        try:
            resp = pool.request(method, url, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableSinkError(f"{self.name}: cannot reach {self.url}: {exc}") from exc
        return resp.status, resp.data, resp.headers

    def _create_database(self) -> None:
        # A quoted identifier, so any name works; backslash and double quote escaped.
        name = self.database.replace("\\", "\\\\").replace('"', '\\"')
        body = urlencode({"q": f'CREATE DATABASE "{name}"'}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._headers}
        status, reply, reply_headers = self._request("POST", f"{self.url}/query", body, headers)
        # /query answers 200 with {"results": [{"error": …}]} when the statement itself failed.
        try:
            results = json.loads(reply).get("results") or []
            errors = [str(r["error"]) for r in results if isinstance(r, dict) and r.get("error")]
        except (ValueError, AttributeError):
            errors = []
        if not 200 <= status < 300 or errors:
            reason = "; ".join(errors) or server_reason(status, reply, reply_headers)
            raise RetryableSinkError(f"{self.name}: CREATE DATABASE {self.database!r} failed: HTTP {status}: {reason}")
