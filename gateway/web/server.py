"""Serving the console: uvicorn on the gateway's own event loop, as one supervised task.

Why uvicorn (with Starlette) and how it is held:

- The socket is bound here, before uvicorn starts, so a port in use is a ``TransportError`` the
  supervisor retries with back-off (uvicorn itself would ``sys.exit`` from inside the task, which
  takes the whole event loop down) and the bound port is known (port 0 in tests).
- uvicorn's ``serve`` normally takes SIGINT / SIGTERM for itself; the gateway owns the process's
  signals, so ``capture_signals`` is a no-op here.
- Cancelling the task (the gateway stopping) asks uvicorn to shut down: no new connections,
  event streams ended (``on_stop``), at most ``GRACE`` seconds for requests in flight.
- Connections: at most ``MAX_CONNECTIONS`` open, ``MAX_PER_CLIENT`` from one address; one more
  is closed as it is accepted (counted, logged once), so a flood of half-open connections cannot
  take the file descriptors the gateway's other parts need. Requests: at most ``RATE`` a second
  from one address, in bursts of ``BURST`` (429 with ``Retry-After`` beyond; on the gateway's clock).
- Limits: at most ``LIMIT_CONCURRENCY`` connections and requests at once (503 beyond), request
  head at most 16 KiB (h11; bigger is a 400), a request head must arrive within ``HEAD_SECONDS``
  of the connection or of the previous response (408, then closed: a slow client holds no slot
  for long), idle keep-alive connections close after ``KEEP_ALIVE`` seconds; the body limits are
  the app's (``gateway.web.console``: 16 KiB, 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator

import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.errors import TransportError
from gateway.site.console import ConsoleSettings

log = logging.getLogger("sensegate.console")

LIMIT_CONCURRENCY = 64
MAX_CONNECTIONS = 256
MAX_PER_CLIENT = 32
RATE = 20.0  # requests a second from one address, sustained
BURST = 100.0  # and at once (a board with its static files is a handful)
KEEP_ALIVE = 5
HEAD_SECONDS = 10.0
HEAD_MAX_BYTES = 16 * 1024
GRACE = 3


class _Server(uvicorn.Server):
    """uvicorn inside a process whose signals are the gateway's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _H11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head (slowloris): from the
    connection, or the previous response, to the end of the next request's headers."""

    _head_timer: asyncio.TimerHandle | None = None

    refused = 0  # connections closed as they were accepted, over a limit (all servers of the process)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if self._over_limit():
            _H11.refused += 1
            if _H11.refused == 1:
                log.warning("console: too many connections; new ones are closed at once (counted)")
            transport.close()
            return
        self._arm_head()

    def _over_limit(self) -> bool:
        if len(self.connections) > MAX_CONNECTIONS:
            return True
        host = self.client[0] if self.client else None
        same = [c for c in self.connections if (getattr(c, "client", None) or (None,))[0] == host]
        return len(same) > MAX_PER_CLIENT

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head()  # the head is in; the body has the app's own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def _arm_head(self) -> None:
        self._disarm_head()
        self._head_timer = self.loop.call_later(HEAD_SECONDS, self._head_timeout)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()


class RateLimit:
    """At most ``rate`` requests a second from one client address, in bursts of ``burst``: a
    token bucket per address (the oldest forgotten past ``remember``); beyond, 429."""

    def __init__(self, app: ASGIApp, now: Callable[[], float], rate: float = RATE, burst: float = BURST) -> None:
        self.app, self.now, self.rate, self.burst = app, now, rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, at)
        self.remember = 4096

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (scope.get("client") or ("?", 0))[0]
        now = self.now()
        tokens, at = self.buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self.buckets) >= self.remember:
            del self.buckets[next(iter(self.buckets))]
        if tokens < 1.0:
            self.buckets[host] = (tokens, now)
            wait = str(max(1, round((1.0 - tokens) / self.rate)))
            headers = [(b"content-length", b"0"), (b"retry-after", wait.encode()), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        self.buckets[host] = (tokens - 1.0, now)
        await self.app(scope, receive, send)


class ConsoleServer:
    def __init__(
        self,
        app: ASGIApp,
        settings: ConsoleSettings,
        on_stop: Callable[[], None] = lambda: None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.app = app if now is None else RateLimit(app, now)
        self.settings = settings
        self.on_stop = on_stop
        self.port: int | None = None  # once bound
        self.started = asyncio.Event()

    @property
    def url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        scheme = "https" if self.settings.tls else "http"
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}/"

    def _bind(self) -> socket.socket:
        s = self.settings
        try:
            family, kind, proto, _, address = socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            raise TransportError(f"console: cannot listen on {s.host}:{s.port}: {exc}") from exc
        sock.set_inheritable(False)
        return sock

    def _config(self) -> uvicorn.Config:
        s = self.settings
        config = uvicorn.Config(
            self.app,
            http=_H11,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # the client address is the peer's: no header can claim another
            limit_concurrency=LIMIT_CONCURRENCY,
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=GRACE,
            h11_max_incomplete_event_size=HEAD_MAX_BYTES,
            backlog=128,
            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
            ssl_keyfile=str(s.tls_key) if s.tls_key else None,
        )
        try:
            config.load()  # reads the certificate now: a bad one is an error here, not in a task
        except (OSError, ValueError) as exc:
            raise TransportError(f"console: cannot load TLS certificate {s.tls_cert}: {exc}") from exc
        return config

    async def run(self) -> None:
        """Serve until cancelled (for the runtime's task group)."""
        config = self._config()
        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        server = _Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        log.info("console (值班台) on %s", self.url)
        self.started.set()
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True
            self.on_stop()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(serving, GRACE + 2)
            raise
        finally:
            self.started.clear()
            sock.close()
        raise TransportError("console: the web server stopped by itself")
