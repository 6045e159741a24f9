"""What the HTTP channels share: one urllib3 pool, a POST in a worker thread, failures mapped.

Like the InfluxDB sinks (``gateway.outputs.sinks.influx_v1``): urllib3 with ``retries=False`` (the
notifier owns retry and back-off), called through ``asyncio.to_thread``, one total timeout per
request. How an HTTP answer maps onto the error tree::

    2xx                                  the caller looks at the body (robots answer errcode)
    408, 429, 5xx                        RetryableSinkError
    other 4xx                            RejectedBatchError  with the receiver's reason, truncated
    refused, reset, timeout, TLS, DNS    RetryableSinkError

Secrets travel in URLs (a WeCom ``key``, a DingTalk ``access_token`` and ``sign``) and
urllib3 puts the URL into its exception text. So every message this module builds goes through
``Redactor``, and library exceptions are not chained: a ``__cause__`` / ``__context__`` would carry the
unredacted URL into any traceback that gets logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import urllib3

from gateway.errors import RejectedBatchError, RetryableSinkError
from gateway.outputs.sinks.settings import reason_in_body

REASON_LIMIT = 300  # characters of a receiver's reason kept in an error message
RETRYABLE_STATUSES = frozenset({408, 429})


class Redactor:
    """Replaces every secret (raw and URL-encoded) with ``***`` in a piece of text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return text


def display_url(url: str) -> str:
    """``scheme://host[:port]/path`` — the query string (where tokens live) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def checked_base_url(channel: str, url: str, timeout: float) -> str:
    """The URL without a trailing slash; ``ValueError`` naming the channel if it is unusable."""
    parsed = urllib3.util.parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"channel {channel!r}: url must be http(s)://host[:port][/path], got {display_url(url)!r}")
    if timeout <= 0:
        raise ValueError(f"channel {channel!r}: timeout must be > 0, got {timeout}")
    return url.rstrip("/")


def header_safe(value: str) -> str:
    """``value`` if it can travel in an HTTP header as is, else percent-encoded (UTF-8)."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


def truncate_utf8(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character.

    When it has to cut, ``marker`` is appended (and counted in the limit).
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    if room <= 0:
        return marker.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    # errors="ignore" drops the partial character the byte cut may have left at the end.
    return data[:room].decode("utf-8", errors="ignore") + marker


def with_alert_id(text: str, alert_id: str, limit: int, footer: str, marker: str) -> str:
    """``text`` within ``limit`` UTF-8 bytes, still naming the alert so it can be acknowledged.

    A text that fits and already says ``告警编号`` and the id is returned as is; otherwise it is
    cut (at a character boundary, ending in ``marker``) to leave room for ``footer``.
    """
    if len(text.encode("utf-8")) <= limit and "告警编号" in text and alert_id in text:
        return text
    return truncate_utf8(text, limit - len(footer.encode("utf-8")), marker) + footer


def markdown_link(text: str, link: str, label: str = "点此确认") -> str:
    """``text`` with the one-tap ``link`` in it as a markdown link: a bare URL in robot markdown
    may be cut at a ``_`` (emphasis) or not be tappable at all."""
    return text.replace(link, f"[{label}]({link})") if link else text


def receiver_reason(body: bytes) -> str:
    """The receiver's own words: JSON ``errmsg`` / ``error`` / ``message``, else the body text."""
    return reason_in_body(body, ("errmsg", "error", "message", "reason"))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or ``None`` if it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


class JsonPoster:
    """POSTs JSON bodies for one channel and maps transport failures and HTTP statuses.

    ``secrets`` are redacted from every error message (with their URL-encoded forms).
    """

    def __init__(self, name: str, timeout: float, secrets: Iterable[str] = ()) -> None:
        self.name = name
        self.timeout = timeout
        self.redact = Redactor(secrets)
        self._pool: urllib3.PoolManager | None = None

    def open(self) -> None:
        if self._pool is None:
            self._pool = urllib3.PoolManager(
                num_pools=2,
                maxsize=2,
                retries=False,  # the notifier owns retries and back-off
                timeout=urllib3.Timeout(total=self.timeout),
            )

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST and return a 2xx answer; raise the mapped error for anything else."""
        if self._pool is None:
            self.open()
        answer = await asyncio.to_thread(self._post_blocking, url, body, dict(headers))
        if 200 <= answer.status < 300:
            return answer
        reason = self.reason(answer.body) or f"HTTP {answer.status}"
        message = f"{self.name}: {display_url(url)} answered HTTP {answer.status}: {reason}"
        if answer.status in RETRYABLE_STATUSES or answer.status >= 500 or answer.status < 400:
            # 1xx/3xx are not expected from a webhook (redirects are not followed): a
            # misconfigured proxy, most likely; keep the notification.
            raise RetryableSinkError(message)
        raise RejectedBatchError(message)

    def reason(self, body: bytes) -> str:
        """The receiver's reason, redacted and truncated for an error message."""
        text = " ".join(self.redact(receiver_reason(body)).split())
        return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"

    def _post_blocking(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        pool = self._pool
        if pool is None:
            raise RetryableSinkError(f"{self.name}: channel is closed")
        try:
            resp = pool.request("POST", url, body=body, headers=headers, redirect=False)
        except Exception as exc:  # urllib3, socket, TLS or encoding: the contract allows only ours
            detail = self.redact(f"{type(exc).__name__}: {exc}")
        else:
            return Answer(resp.status, resp.data)
        # Raised outside the except block, so neither __cause__ nor __context__ carries the
        # library's text with the full URL and its token (see the module docstring).
        raise RetryableSinkError(f"{self.name}: cannot reach {display_url(url)}: {detail}")


def check_robot_answer(poster: JsonPoster, service: str, answer: Answer, retryable: Iterable[int]) -> None:
    """Robots (WeCom, DingTalk) answer HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``.

    errcode 0 returns; one of ``retryable`` (rate limits, "system busy") raises
    ``RetryableSinkError``; any other errcode ``RejectedBatchError`` (a wrong key or token, a
    failed signature, a malformed message: retrying the same bytes cannot help). A 2xx whose
    body is not such an object (a captive portal, a proxy's page) is retryable.
    """
    data = answer.json()
    code = data.get("errcode") if isinstance(data, dict) else None
    if isinstance(code, bool) or not isinstance(code, int):
        reason = poster.reason(answer.body) or "empty body"
        raise RetryableSinkError(f"{poster.name}: {service} answered HTTP {answer.status} without an errcode: {reason}")
    if code == 0:
        return
    message = f"{poster.name}: {service} answered errcode {code}: {poster.reason(answer.body)}"
    if code in set(retryable):
        raise RetryableSinkError(message)
    raise RejectedBatchError(message)


def normalise_mobile(phone: str) -> str:
    """A phone number as the robots' @-lists expect it: digits, no +86 / 0086 prefix.

    ``""`` if nothing usable is left. Numbers from other countries keep their ``+``.
    """
    compact = "".join(ch for ch in phone if ch.isdigit() or ch == "+")
    for prefix in ("+86", "0086"):
        if compact.startswith(prefix):
            compact = compact[len(prefix) :]
    digits = compact.lstrip("+")
    if not digits.isdigit():
        return ""
    return compact
