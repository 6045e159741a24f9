"""A small HTTP API for alerts (JSON, token authentication): list, show, acknowledge,
resolve — what the web console will use. Enabled by ``[notify.api]`` (docs/alerts.md).

::

    GET  /api/v1/alerts[?all=1]            open alerts (all=1: resolved ones too)
    GET  /api/v1/alerts/<id>               one alert, its audit trail and notifications
    POST /api/v1/alerts/<id>/ack           {"by": "s-li", "note": "…"}
    POST /api/v1/alerts/<id>/resolve       {"by": "s-li", "note": "已上门处置"}

Every request carries ``Authorization: Bearer <token>``; a wrong or missing token gets 401
(compared in constant time; the token is never logged). Errors are ``{"error": "…"}`` with
400 / 401 / 404 / 409; a ``by`` the site config does not name is a 400 with ``suggestions``.

The token is shared: it says the caller may act, not who they are. ``by`` is what the caller
claims, checked only against the people the site knows (user accounts are for later).

The standard library's threading HTTP server answers; reads go to the store (thread-safe),
while ack / resolve are handed to the event loop, so the alert path stays the one writer of
alert state — the same command as the CLI and MQTT (gateway.alerts.commands).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.alerts.commands import parse_command
from gateway.errors import PayloadError
from gateway.store import Store

log = logging.getLogger("sensegate.api")

MAX_BODY = 16 * 1024
PREFIX = "/api/v1/alerts"


class AlertApi:
    def __init__(
        self,
        store: Store,
        token: str,
        apply: Callable[[dict[str, Any]], dict[str, Any]],
        host: str = "127.0.0.1",
        port: int = 8480,
    ) -> None:
        """``apply`` runs a checked command on the event loop (it is called from a server
        thread and must be thread-safe: the runtime passes a loop-bridging function)."""
        if not token:
            raise ValueError("the HTTP API needs a token ([notify.api] token)")
        self.store = store
        self.token = token.encode()
        self.apply = apply
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sensegate-api", daemon=True)
        self._thread.start()
        log.info("alert API on http://%s:%d%s", self._server.server_address[0], self.port, PREFIX)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    async def run(self) -> None:
        """Serve until cancelled (for the runtime's task group)."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self.stop)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "SenseGate"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization", "")
                scheme, _, token = given.partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api.token):
                    return True
                self._send(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                url = urlsplit(self.path)
                parts = _parts(url.path)
                if parts is None or len(parts) > 1:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no such resource {url.path}"})
                elif not parts:
                    every = parse_qs(url.query).get("all", ["0"])[0] in ("1", "true")
                    alerts = api.store.alerts(open_only=not every, limit=10_000)
                    self._send(HTTPStatus.OK, {"alerts": [a.to_dict() for a in alerts]})
                else:
                    self._show(parts[0])

            def _show(self, alert_id: str) -> None:
                alert = api.store.alert(alert_id)
                if alert is None:
                    found = api.store.alerts_by_prefix(alert_id) if len(alert_id) >= 4 else []
                    alert = found[0] if len(found) == 1 else None
                if alert is None:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no alert {alert_id!r}"})
                    return
                trail = [
                    {"at": r.at, "action": r.action, "actor": r.actor, "channel": r.channel, "detail": r.detail}
                    for r in api.store.alert_log(alert.id)
                ]
                notes = [
                    {"key": n.key, "channel": n.channel, "state": n.state, "attempts": n.attempts, "due_at": n.due_at}
                    for n in api.store.notifications(alert.id)
                ]
                self._send(HTTPStatus.OK, {"alert": alert.to_dict(), "trail": trail, "notifications": notes})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                parts = _parts(urlsplit(self.path).path)
                if parts is None or len(parts) != 2 or parts[1] not in ("ack", "resolve"):
                    self._send(HTTPStatus.NOT_FOUND, {"error": "POST /api/v1/alerts/<id>/ack or /resolve"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
                    return
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    data = json.loads(raw)
                    if not isinstance(data, dict):
                        raise ValueError("not an object")
                    data = {**data, "action": parts[1], "alert": parts[0]}
                    command = parse_command(json.dumps(data), "http")
                except (ValueError, PayloadError) as exc:
                    self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                    return
                result = api.apply(command)
                if result.get("ok"):
                    self._send(HTTPStatus.OK, result)
                else:
                    self._send(_STATUS.get(str(result.get("reason")), HTTPStatus.CONFLICT), result)

        return Handler


# A refused command's reason (gateway.alerts.path.LifecycleError) → status; the rest are 409.
_STATUS = {"no_alert": HTTPStatus.NOT_FOUND, "unknown_person": HTTPStatus.BAD_REQUEST}


def _parts(path: str) -> list[str] | None:
    """``/api/v1/alerts/<id>/<verb>`` → ``[id, verb]``; None outside the API."""
    if path.rstrip("/") == PREFIX:
        return []
    if not path.startswith(PREFIX + "/"):
        return None
    return [p for p in path[len(PREFIX) + 1 :].split("/") if p]


def loop_bridge(
    loop: asyncio.AbstractEventLoop, apply: Callable[[dict[str, Any]], dict[str, Any]], timeout: float = 10.0
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``apply`` run on ``loop`` from another thread, waiting for its result."""

    async def on_loop(command: dict[str, Any]) -> dict[str, Any]:
        return apply(command)

    def bridged(command: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(on_loop(command), loop).result(timeout)

    return bridged
