"""Serving the console: uvicorn on the gateway's own event loop, as one supervised task.

Why uvicorn (with Starlette) and how it is held:

- The socket is bound here, before uvicorn starts, so a port in use is a ``TransportError`` the
  supervisor retries with back-off (uvicorn itself would ``sys.exit`` from inside the task, which
  takes the whole event loop down) and the bound port is known (port 0 in tests).
- uvicorn's ``serve`` normally takes SIGINT / SIGTERM for itself; the gateway owns the process's
  signals, so ``capture_signals`` is a no-op here.
- Cancelling the task (the gateway stopping) asks uvicorn to shut down: no new connections,
  event streams ended (``on_stop``), at most ``GRACE`` seconds for requests in flight.
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
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.errors import TransportError
from gateway.site.console import ConsoleSettings

log = logging.getLogger("sensegate.console")

LIMIT_CONCURRENCY = 64
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head()

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


class ConsoleServer:
    def __init__(self, app: ASGIApp, settings: ConsoleSettings, on_stop: Callable[[], None] = lambda: None) -> None:
        self.app = app
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
