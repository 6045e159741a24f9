"""A real HTTP receiver for the alert webhooks: generic signed JSON, WeCom robot, DingTalk robot.

One threaded HTTP server on a free loopback port serves all three endpoints and checks each
request the way the real receiver would — with its own code, not the channels':

    ============================  =========================================================
    ``receiver.webhook_url``      generic JSON: verifies ``X-SenseGate-Signature`` (HMAC-SHA256
    (POST /hook)                  of ``f"{timestamp}.{body}"``), rejects a bad or missing one and
                                  a timestamp more than ``max_skew`` seconds from ``now()`` with
                                  401; needs ``Idempotency-Key`` (400 without); 200 ``{"ok": true}``
    ``receiver.wecom_url``        WeCom group robot: ``?key=`` must be ``wecom_key`` (else
    (POST /cgi-bin/webhook/send)  errcode 93000); markdown ≤ 4096 bytes / text ≤ 2048 bytes (else
                                  40058); 200 ``{"errcode": 0, "errmsg": "ok"}``
    ``receiver.dingtalk_url``     DingTalk robot, signed mode: ``access_token`` must be
    (POST /robot/send)            ``dingtalk_token`` (else 300001); ``sign`` must equal
                                  base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")) and the ms
                                  ``timestamp`` be within an hour of ``now()`` (else 310000);
                                  markdown needs ``title`` and ``text`` (else 40035)
    ============================  =========================================================

Usage::

    with Receiver(now=clock.now) as rx:                 # or rx.close()
        channel = WebhookChannel(settings(url=rx.webhook_url, secret=rx.webhook_secret), clock)
        rx.fail_next(2, status=503)                     # the next 2 requests get HTTP 503
        rx.errcode_next(1, 45009, "api freq out of limit", after=1)  # HTTP 200 with that errcode,
                                                        # after one request passed normally
        rx.drop_next(1)                                 # close the connection without answering
        rx.delay_next(1, 2.0)                           # answer after 2 s (a client timeout)
        rx.down(); …; rx.up()                           # refuse connections, then listen again on the same port
        rx.deliveries("webhook")                        # accepted requests, in order (Delivery;
                                                        # .at: time.monotonic() on arrival)
        rx.unique_keys("webhook")                       # the Idempotency-Keys delivered
        rx.duplicates                                   # accepted requests whose (endpoint, key, msgtype) was seen
        rx.rejected                                     # requests refused by a check (bad sign, key …)

Faults apply to the next requests whatever the endpoint, in the order they were queued, before
any check; a faulted request is in ``attempts`` but not in ``deliveries``. Every request
(faulted, rejected or accepted) is in ``attempts``. ``now`` defaults to ``time.time``; pass a
``VirtualClock``'s ``now`` when the channel signs with virtual time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

Endpoint = Literal["webhook", "wecom", "dingtalk"]

WEBHOOK_PATH = "/hook"
WECOM_PATH = "/cgi-bin/webhook/send"
DINGTALK_PATH = "/robot/send"
_ENDPOINTS: dict[str, Endpoint] = {WEBHOOK_PATH: "webhook", WECOM_PATH: "wecom", DINGTALK_PATH: "dingtalk"}


@dataclass(frozen=True)
class Delivery:
    """One request as the receiver saw it."""

    endpoint: Endpoint | None  # None: an unknown path
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    body: Any  # the parsed JSON, or None
    outcome: str = ""  # "accepted", "duplicate", "rejected: <why>", "fault: <what>"
    at: float = 0.0  # time.monotonic() when the request had been read, before any check or fault

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")

    @property
    def msgtype(self) -> str:
        return str(self.body.get("msgtype", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class _Fault:
    kind: Literal["status", "errcode", "drop", "delay", "pass"]
    status: int = 500
    errcode: int = 0
    errmsg: str = ""
    seconds: float = 0.0


@dataclass
class _State:
    attempts: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)
    rejected: list[Delivery] = field(default_factory=list)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    duplicates: int = 0
    faults: deque[_Fault] = field(default_factory=deque)


class Receiver:
    """See the module docstring. Thread-safe; every accessor returns a copy."""

    def __init__(
        self,
        *,
        webhook_secret: str = "webhook-test-secret-0123456789",
        wecom_key: str = "wecom-test-key-7f3a",
        dingtalk_token: str = "dingtalk-test-token-9c2e",
        dingtalk_secret: str = "SECdingtalk-test-secret-5b1d",
        max_skew: float = 300.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.webhook_secret = webhook_secret
        self.wecom_key = wecom_key
        self.dingtalk_token = dingtalk_token
        self.dingtalk_secret = dingtalk_secret
        self.max_skew = max_skew
        self.now = now
        self._lock = threading.Lock()
        self._state = _State()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    # -- addresses ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    @property
    def wecom_url(self) -> str:
        """The robot URL without ``?key=`` (the channel appends it)."""
        return self.url + WECOM_PATH

    @property
    def dingtalk_url(self) -> str:
        """The robot URL without its query (the channel appends token, timestamp and sign)."""
        return self.url + DINGTALK_PATH

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self) -> None:
        """Listen (again, on the same port after ``down()``)."""
        if self._server is not None:
            return
        server = http.server.ThreadingHTTPServer((self.host, self.port), self._handler_class())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.down()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ---------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, errmsg: str = "injected failure", *, after: int = 0) -> None:
        """The next ``n`` requests are answered with HTTP ``status`` and ``{"error": errmsg}``.

        ``after``: let that many requests through normally first (every fault method has it).
        """
        self._queue(n, _Fault("status", status=status, errmsg=errmsg), after)

    def errcode_next(self, n: int, errcode: int, errmsg: str = "", *, after: int = 0) -> None:
        """The next ``n`` requests are answered HTTP 200 ``{"errcode": errcode, "errmsg": errmsg}``."""
        fault = _Fault("errcode", status=200, errcode=errcode, errmsg=errmsg or f"injected errcode {errcode}")
        self._queue(n, fault, after)

    def drop_next(self, n: int = 1, *, after: int = 0) -> None:
        """The next ``n`` connections are closed after the request is read, with no answer."""
        self._queue(n, _Fault("drop"), after)

    def delay_next(self, n: int, seconds: float, *, after: int = 0) -> None:
        """The next ``n`` requests are answered (normally) only after ``seconds``."""
        self._queue(n, _Fault("delay", seconds=seconds), after)

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    def _queue(self, n: int, fault: _Fault, after: int = 0) -> None:
        with self._lock:
            self._state.faults.extend([_Fault("pass")] * after + [fault] * n)

    # -- what was received ----------------------------------------------------------------------
    def deliveries(self, endpoint: Endpoint | None = None) -> list[Delivery]:
        """Accepted requests (duplicates included), in arrival order."""
        with self._lock:
            return [d for d in self._state.accepted if endpoint is None or d.endpoint == endpoint]

    def unique_keys(self, endpoint: Endpoint | None = None) -> set[str]:
        """The Idempotency-Keys of accepted requests."""
        return {d.key for d in self.deliveries(endpoint)}

    def unique(self, endpoint: Endpoint | None = None) -> list[Delivery]:
        """Accepted requests, the first of each (endpoint, Idempotency-Key, msgtype) only."""
        return [d for d in self.deliveries(endpoint) if d.outcome == "accepted"]

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self._state.duplicates

    @property
    def rejected(self) -> list[Delivery]:
        with self._lock:
            return list(self._state.rejected)

    @property
    def attempts(self) -> list[Delivery]:
        with self._lock:
            return list(self._state.attempts)

    def reset(self) -> None:
        """Forget everything received and every queued fault."""
        with self._lock:
            self._state = _State()

    def wait_for(self, count: int, endpoint: Endpoint | None = None, timeout: float = 5.0) -> list[Delivery]:
        """Block until ``count`` unique deliveries arrived (for tests that send from another task)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.unique(endpoint)
            if len(got) >= count or time.monotonic() >= deadline:
                return got
            time.sleep(0.01)

    # -- checks ---------------------------------------------------------------------------------
    def _check_webhook(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], str]:
        """(status, answer, rejection reason or "")."""
        stamp = headers.get("x-sensegate-timestamp", "")
        given = headers.get("x-sensegate-signature", "")
        if not stamp.isdigit() or not given.startswith("sha256="):
            return 401, {"error": "missing or malformed signature headers"}, "unsigned"
        expected = hmac.new(self.webhook_secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.removeprefix("sha256="), expected):
            return 401, {"error": "bad signature"}, "bad signature"
        if abs(self.now() - int(stamp)) > self.max_skew:
            return 401, {"error": "stale timestamp"}, "stale timestamp"
        if not headers.get("idempotency-key"):
            return 400, {"error": "Idempotency-Key header required"}, "no idempotency key"
        if not headers.get("content-type", "").startswith("application/json"):
            return 415, {"error": "application/json expected"}, "content type"
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 400, {"error": "body is not UTF-8 JSON"}, "bad json"
        if not isinstance(body, dict) or body.get("schema_version") != 1 or not body.get("key"):
            return 422, {"error": "not a SenseGate notification (schema_version 1)"}, "bad shape"
        if body["key"] != unquote(headers["idempotency-key"]):
            return 422, {"error": "Idempotency-Key does not match the body's key"}, "key mismatch"
        return 200, {"ok": True}, ""

    def _check_wecom(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any], str]:
        if query.get("key") != self.wecom_key:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [test receiver]"}, "bad key"
        if not isinstance(body, dict):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}, "bad json"
        msgtype = body.get("msgtype")
        if msgtype == "markdown":
            content = (body.get("markdown") or {}).get("content")
            limit = 4096
        elif msgtype == "text":
            content = (body.get("text") or {}).get("content")
            limit = 2048
            mobiles = body["text"].get("mentioned_mobile_list", [])
            if not isinstance(mobiles, list) or not all(isinstance(m, str) for m in mobiles):
                return 200, {"errcode": 40058, "errmsg": "invalid mentioned_mobile_list"}, "bad mentions"
        else:
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}, "bad msgtype"
        if not isinstance(content, str) or not content:
            return 200, {"errcode": 40058, "errmsg": f"{msgtype}.content missing"}, "no content"
        if len(content.encode("utf-8")) > limit:
            return 200, {"errcode": 40058, "errmsg": f"{msgtype}.content exceed max length {limit}"}, "too long"
        return 200, {"errcode": 0, "errmsg": "ok"}, ""

    def _check_dingtalk(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any], str]:
        if query.get("access_token") != self.dingtalk_token:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}, "bad token"
        stamp, given = query.get("timestamp", ""), query.get("sign", "")
        if not stamp.isdigit() or not given:
            return 200, {"errcode": 310000, "errmsg": "sign not match"}, "unsigned"
        digest = hmac.new(
            self.dingtalk_secret.encode(), f"{stamp}\n{self.dingtalk_secret}".encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(given, base64.b64encode(digest).decode()):
            return 200, {"errcode": 310000, "errmsg": "sign not match"}, "bad sign"
        if abs(self.now() * 1000 - int(stamp)) > 3_600_000:
            return 200, {"errcode": 310000, "errmsg": "invalid timestamp"}, "stale timestamp"
        markdown = body.get("markdown") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("msgtype") != "markdown"
            or not isinstance(markdown, dict)
            or not isinstance(markdown.get("title"), str)
            or not isinstance(markdown.get("text"), str)
        ):
            return 200, {"errcode": 40035, "errmsg": "缺少参数 json"}, "bad shape"
        at = body.get("at", {})
        if not isinstance(at, dict) or not isinstance(at.get("atMobiles", []), list):
            return 200, {"errcode": 40035, "errmsg": "invalid at"}, "bad at"
        return 200, {"errcode": 0, "errmsg": "ok"}, ""

    # -- the HTTP side --------------------------------------------------------------------------
    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.0: the connection closes after each answer, so no pooled keep-alive
            # connection outlives down() and a "down" receiver really refuses the next request.
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                self.send_error(405)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        parts = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in req.headers.items()}
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        endpoint = _ENDPOINTS.get(parts.path)
        seen = Delivery(endpoint, parts.path, query, headers, raw, body, at=time.monotonic())

        with self._lock:
            fault = self._state.faults.popleft() if self._state.faults else None
        if fault is not None and fault.kind in ("delay", "pass"):
            time.sleep(fault.seconds)
            fault = None
        if fault is not None:
            self._record(seen, f"fault: {fault.kind}")
            if fault.kind == "drop":
                req.close_connection = True
                with contextlib.suppress(OSError):
                    req.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "status":
                self._answer(req, fault.status, {"error": fault.errmsg})
            else:
                self._answer(req, 200, {"errcode": fault.errcode, "errmsg": fault.errmsg})
            return

        if endpoint == "webhook":
            status, answer, why = self._check_webhook(headers, raw)
        elif endpoint == "wecom":
            status, answer, why = self._check_wecom(query, body)
        elif endpoint == "dingtalk":
            status, answer, why = self._check_dingtalk(query, body)
        else:
            status, answer, why = 404, {"error": "no such endpoint"}, "unknown path"

        if why:
            self._record(seen, f"rejected: {why}")
        else:
            with self._lock:
                identity = (str(endpoint), seen.key, seen.msgtype)
                duplicate = identity in self._state.seen
                self._state.seen.add(identity)
                if duplicate:
                    self._state.duplicates += 1
            if endpoint == "webhook":
                answer = {**answer, "duplicate": duplicate}
            self._record(seen, "duplicate" if duplicate else "accepted")
        self._answer(req, status, answer)

    def _record(self, seen: Delivery, outcome: str) -> None:
        delivery = replace(seen, outcome=outcome)
        with self._lock:
            self._state.attempts.append(delivery)
            if outcome in ("accepted", "duplicate"):
                self._state.accepted.append(delivery)
            elif outcome.startswith("rejected"):
                self._state.rejected.append(delivery)

    @staticmethod
    def _answer(req: http.server.BaseHTTPRequestHandler, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
