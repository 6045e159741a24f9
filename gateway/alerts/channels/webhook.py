"""Generic JSON webhook: one signed POST per notification (docs/channels-webhooks.md).

Request::

    POST <url>
    Content-Type: application/json; charset=utf-8
    Idempotency-Key: <note.key>                     the same on every retry of a notification
    X-SenseGate-Timestamp: <unix seconds>           from the gateway's clock, at this attempt
    X-SenseGate-Signature: sha256=<hex>             HMAC-SHA256(secret, f"{timestamp}.{body}")

    {"schema_version": 1, "key": …, "alert_id": …, "kind": …, "severity": …, "title": …,
     "text": …, "text_en": …, "recipients": [...], "alert": {...}, "created_at": …}

The body is UTF-8 JSON (Chinese is not escaped); the signature is over the raw body bytes as
sent, prefixed by the timestamp's decimal digits and a dot. A receiver recomputes it with the
shared secret, compares in constant time, rejects a timestamp too far from its own clock (a
replay) and stores the Idempotency-Key to drop the rare duplicate (the gateway died between the
receiver's answer and its own commit). Each retry is signed afresh with a new timestamp.

Answers: 2xx delivered; 408, 429, 5xx, no connection, timeout → RetryableSinkError; any other
4xx (a bad signature, a receiver that refuses the payload) → RejectedBatchError with the
receiver's reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

from gateway.alerts.channels.base import Notification
from gateway.alerts.channels.http import JsonPoster, checked_base_url, display_url, header_safe
from gateway.clock import Clock
from gateway.site.alerting import WebhookChannelSettings

SCHEMA_VERSION = 1


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-SenseGate-Signature`` value for a body sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def encode_body(note: Notification) -> bytes:
    return json.dumps(
        {"schema_version": SCHEMA_VERSION, **note.to_dict()}, ensure_ascii=False, separators=(",", ":"), default=str
    ).encode("utf-8")


class WebhookChannel:
    """Sends each notification as signed JSON to one URL."""

    def __init__(self, settings: WebhookChannelSettings, clock: Clock) -> None:
        self.name = settings.id
        checked_base_url(settings.id, settings.url, settings.timeout)
        self.url = settings.url  # exactly as configured: a trailing slash may matter to the receiver
        self.clock = clock
        self._secret = settings.secret.get_secret_value().encode("utf-8")
        # A token in the URL's query string is as secret as the signing key.
        query = urlsplit(settings.url).query
        self._poster = JsonPoster(settings.id, settings.timeout, secrets=[settings.secret.get_secret_value(), query])

    def __repr__(self) -> str:  # no secret, no query string
        return f"WebhookChannel(name={self.name!r}, url={display_url(self.url)!r})"

    async def open(self) -> None:
        self._poster.open()

    async def close(self) -> None:
        self._poster.close()

    async def send(self, note: Notification) -> None:
        body = encode_body(note)
        timestamp = int(self.clock.now())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "SenseGate",
            "Idempotency-Key": header_safe(note.key),
            "X-SenseGate-Timestamp": str(timestamp),
            "X-SenseGate-Signature": sign(self._secret, timestamp, body),
        }
        await self._poster.post(self.url, body, headers)
