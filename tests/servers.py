"""Real servers for integration tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Each manager starts the Debian-packaged binary on a free loopback port, in its own temp dir
(config, data and a log file live there), and can stop, kill and restart it on the SAME port so
a test can simulate an outage or a crash. Nothing listens on anything but 127.0.0.1.

    with InfluxDB1() as influx:                 # or .start() / .stop()
        influx.create_database("sensegate")
        influx.stop()                            # outage: the port now refuses connections
        influx.start()                           # back, same port, same data
        rows = influx.query("sensegate", "SELECT * FROM door")

If a server does not come up within ``start_timeout`` seconds, ``ServerError`` carries the tail
of its log. Every started process is also registered with ``atexit`` so a crashed test run
leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from typing import IO, Any, ClassVar, Self

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
INFLUXD_BIN = "/usr/bin/influxd"
VICTORIA_METRICS_BIN = "/usr/bin/victoria-metrics"

# The Debian packages that provide the binaries above; ./scripts/test installs them.
DEBIAN_PACKAGES = {
    MOSQUITTO_BIN: "mosquitto",
    INFLUXD_BIN: "influxdb",
    VICTORIA_METRICS_BIN: "victoria-metrics",
}


class ServerError(RuntimeError):
    """A test server is missing, or did not start or stop as expected."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A tiny HTTP call returning (status, body) whatever the status; raises OSError if unreachable."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


_live: weakref.WeakSet[Server] = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()


class Server:
    """Process management shared by the servers: temp dir, log file, start / stop / kill / restart."""

    binary: ClassVar[str]
    start_timeout: float = 10.0
    stop_timeout: float = 10.0

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        if not shutil.which(self.binary):
            pkg = DEBIAN_PACKAGES.get(self.binary, "?")
            raise ServerError(
                f"{self.binary} is not installed (Debian package {pkg!r}); "
                "run ./scripts/test (see the README), which installs the test servers"
            )
        self.host = host
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sensegate-{type(self).__name__.lower()}-"))
        self.log_path = self.dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # -- to be provided by each server -------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def prepare(self) -> None:
        """Write config files; called before every start."""

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        if self.running:
            return self
        self.prepare()
        # The port must be free (a killed child's socket can linger for a moment).
        busy_until = time.monotonic() + 2.0
        while port_open(self.host, self.port):
            if time.monotonic() > busy_until:
                raise ServerError(f"{type(self).__name__}: port {self.port} is used by another process")
            time.sleep(0.05)
        deadline = time.monotonic() + self.start_timeout
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log.write(f"\n==== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,  # a Ctrl-C to pytest must not reach the server first
        )
        _live.add(self)
        self.starts += 1
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._reap()
                raise ServerError(f"{type(self).__name__} exited at start-up\n{self.log_tail()}")
            try:
                if self.ready():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"{type(self).__name__} not ready on {self.host}:{self.port} after {self.start_timeout}s\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Graceful: SIGTERM and wait, so the server saves its state."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is saved that was not already on disk."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def restart(self, *, graceful: bool = True) -> Self:
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def cleanup(self) -> None:
        """Kill and remove the temp dir."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None
        _live.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.dir}>"


class Mosquitto(Server):
    """Mosquitto 2.0 with persistence in its temp dir; queued QoS 1/2 messages survive ``stop()``.

    ``extra_config`` lines are appended to the generated mosquitto.conf.
    """

    binary = MOSQUITTO_BIN

    def __init__(self, *, port: int | None = None, extra_config: list[str] | None = None) -> None:
        super().__init__(port=port)
        self.extra_config = list(extra_config or [])
        self.conf_path = self.dir / "mosquitto.conf"

    def prepare(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 1000",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",  # as the shipped config/mosquitto/mosquitto.conf
            # Started as root, mosquitto drops to user "mosquitto", which can't write our temp dir.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *self.extra_config,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf_path)]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class InfluxDB1(Server):
    """InfluxDB 1.x (``influxd``), auth disabled, everything under the temp dir."""

    binary = INFLUXD_BIN
    start_timeout = 15.0

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self.rpc_port = free_port()
        self.conf_path = self.dir / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        d = self.dir
        self.conf_path.write_text(
            f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""
        )

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.conf_path)]

    def ready(self) -> bool:
        status, _ = http_request("GET", f"{self.url}/ping", timeout=1.0)
        return status == 204

    def _query(self, q: str, db: str = "", method: str = "POST") -> list[dict[str, Any]]:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        qs = urllib.parse.urlencode(params)
        if method == "GET":
            status, body = http_request("GET", f"{self.url}/query?{qs}")
        else:
            status, body = http_request(
                "POST",
                f"{self.url}/query",
                body=qs.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        data = json.loads(body or b"{}")
        if status != 200 or "error" in data:
            raise ServerError(f"InfluxDB query {q!r} failed: HTTP {status} {body!r}")
        results: list[dict[str, Any]] = data.get("results", [])
        for r in results:
            if "error" in r:
                raise ServerError(f"InfluxDB query {q!r} failed: {r['error']}")
        return results

    def create_database(self, name: str) -> None:
        self._query(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self._query(f'DROP DATABASE "{name}"')

    def query(self, db: str, influxql: str) -> list[dict[str, Any]]:
        """Rows of a read query as dicts: column -> value, plus the series tags for GROUP BY.

        Times are epoch nanoseconds (ints). Several series are flattened into one list.
        """
        rows: list[dict[str, Any]] = []
        for result in self._query(influxql, db=db, method="GET"):
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    row.setdefault("_measurement", series.get("name"))
                    rows.append(row)
        return rows


class VictoriaMetrics(Server):
    """Single-node VictoriaMetrics. Accepts InfluxDB line protocol on ``/write`` and ``/api/v2/write``.

    It turns ``measurement field=v`` into the metric ``measurement_field`` with the tags as
    labels, keeps millisecond timestamps, and ignores db / org / bucket / token. Quirks seen with
    1.79: a line it cannot parse is logged and skipped while the request still gets 204; string
    fields are dropped (numbers and bools only, bools as 0/1); without
    ``-dedup.minScrapeInterval`` a sample written twice is stored twice.
    """

    binary = VICTORIA_METRICS_BIN

    def __init__(self, *, port: int | None = None, extra_args: list[str] | None = None) -> None:
        super().__init__(port=port)
        self.data_dir = self.dir / "data"
        # e.g. ["-dedup.minScrapeInterval=1ms"] so that a replayed batch does not double samples
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            *self.extra_args,
        ]

    def ready(self) -> bool:
        status, _ = http_request("GET", f"{self.url}/health", timeout=1.0)
        return status == 200

    def flush(self) -> None:
        """Make everything written so far searchable (VM buffers fresh rows for up to ~1 s)."""
        status, body = http_request("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise ServerError(f"VictoriaMetrics force_flush: HTTP {status} {body!r}")

    def export(self, match: str = '{__name__!=""}', *, flush: bool = True) -> list[dict[str, Any]]:
        """Series matching a selector, as /api/v1/export JSON lines (one read, no waiting).

        Each item: ``{"metric": {"__name__": …, label: …}, "values": […], "timestamps": [ms …]}``.
        """
        if flush:
            self.flush()
        qs = urllib.parse.urlencode({"match[]": match, "start": "0"})
        status, body = http_request("GET", f"{self.url}/api/v1/export?{qs}")
        if status != 200:
            raise ServerError(f"VictoriaMetrics export {match!r}: HTTP {status} {body!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def wait_for_samples(
        self, match: str = '{__name__!=""}', samples: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Poll ``export`` until at least ``samples`` samples match, then return the series.

        VM answers a write with 204 before the rows are searchable: even after a force flush a
        new series takes a few hundred ms to show up. Raises ``ServerError`` on timeout, with
        what was there.
        """
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(match)
            if sum(len(s["values"]) for s in series) >= samples:
                return series
            if time.monotonic() > deadline:
                raise ServerError(f"VictoriaMetrics: fewer than {samples} samples for {match!r}: {series}")
            time.sleep(0.05)


class Blackhole:
    """A TCP port that completes the handshake (the kernel's backlog) but never answers.

    For "the server hangs" tests: a client connects, sends its request, and waits for its
    read timeout.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.host = "127.0.0.1"
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CannedHTTP:
    """An HTTP server that answers every request with one fixed status, body and headers.

    Only for failure modes the real servers can't be made to produce on demand (an InfluxDB 2
    "422", a proxy's "429", a "503" …). ``requests`` records (method, path, headers, body).
    """

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        canned = self
        self.status, self.body, self.headers = status, body, dict(headers or {})
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                canned.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(canned.status)
                for key, value in canned.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port: int = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
