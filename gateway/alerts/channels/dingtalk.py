"""DingTalk (钉钉) custom group robot, signed mode (加签): a markdown message per notification.

::

    POST https://oapi.dingtalk.com/robot/send?access_token=<token>&timestamp=<ms>&sign=<sign>
    {"msgtype": "markdown",
     "markdown": {"title": "<preview line>", "text": "### …\\n\\n…\\n\\n@13800000000"},
     "at": {"atMobiles": ["13800000000"], "isAtAll": false}}
    → 200 {"errcode": 0, "errmsg": "ok"}

Signature (DingTalk's 加签 scheme): ``timestamp`` is the gateway clock in milliseconds at this
attempt, ``sign = base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))``, URL-encoded.
DingTalk refuses a timestamp more than an hour from its own clock, so the gateway's clock must
be roughly right (NTP).

Layout (the notification's words, never reworded): a heading with the grade
(``[一级(特别重大)]``, unless the title already says it) and the title; the text, one paragraph
per line; a quoted ``告警编号：<id>`` line unless the text already names it (always when the
text had to be cut, so the alert can still be acknowledged); the one-tap link (``note.link``) as
a markdown link ``[点此确认](…)``; then the @mobiles —
DingTalk only notifies a number in ``atMobiles`` if ``@<number>`` also appears in the text.
``title`` is what the notification preview shows.

errcodes (HTTP 200): 0 ok; 130101 (send too fast, 20 messages a minute per robot, then 10
minutes of throttling), 410100 (throttled) and -1 (system busy) are retried; everything else
is rejected — 310000 (security check failed: sign not match, keywords not in content, IP not in
whitelist, invalid timestamp), 300001 / 300005 (token is not exist), … The token, the secret
and the sign are redacted from every error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

from gateway.alerts.channels.base import Notification
from gateway.alerts.channels.http import (
    JsonPoster,
    check_robot_answer,
    checked_base_url,
    display_url,
    header_safe,
    markdown_link,
    normalise_mobile,
    truncate_utf8,
    with_alert_id,
)
from gateway.clock import Clock
from gateway.models import Severity
from gateway.site.alerting import DingTalkChannelSettings

TEXT_LIMIT = 18_000  # bytes of markdown.text; DingTalk reports "message too long, exceed 20000 bytes"
TITLE_LIMIT = 64  # characters of the preview title
RETRYABLE_ERRCODES = frozenset({-1, 130101, 410100})
TRUNCATED = "…（内容过长，已截断）"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query parameter before URL-encoding: base64 of the HMAC-SHA256."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _grade(severity: int) -> str:
    try:
        return Severity(severity).label_zh
    except ValueError:
        return ""


def heading(note: Notification) -> str:
    title = " ".join(note.title.split())
    label = _grade(note.severity)
    return f"[{label}] {title}" if label and label not in title else title


def render_payload(note: Notification) -> dict[str, Any]:
    mobiles: list[str] = []
    for recipient in note.recipients:
        mobile = normalise_mobile(recipient.phone)
        if mobile and mobile not in mobiles:
            mobiles.append(mobile)
    head = f"### {truncate_utf8(heading(note), 512)}\n\n"
    at = "\n\n" + " ".join(f"@{m}" for m in mobiles) if mobiles else ""
    # One paragraph per line: DingTalk's markdown joins single newlines into one line.
    text = "\n\n".join(line.strip() for line in note.text.strip().splitlines() if line.strip())
    text = markdown_link(text, note.link)
    room = TEXT_LIMIT - len(head.encode("utf-8")) - len(at.encode("utf-8"))
    body = with_alert_id(text, note.alert_id, room, f"\n\n> 告警编号：{note.alert_id}", TRUNCATED)
    title = heading(note)
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1] + "…"
    return {
        "msgtype": "markdown",
        "markdown": {"title": title, "text": head + body + at},
        "at": {"atMobiles": mobiles, "isAtAll": False},
    }


class DingTalkChannel:
    """Sends notifications to one DingTalk custom robot in signed mode."""

    def __init__(self, settings: DingTalkChannelSettings, clock: Clock) -> None:
        self.name = settings.id
        self.clock = clock
        self._base = checked_base_url(settings.id, settings.url, settings.timeout)
        self._token = settings.token.get_secret_value()
        self._secret = settings.secret.get_secret_value()
        self._poster = JsonPoster(settings.id, settings.timeout, secrets=[self._token, self._secret])

    def __repr__(self) -> str:  # no token, no secret
        return f"DingTalkChannel(name={self.name!r}, url={display_url(self._base)!r})"

    async def open(self) -> None:
        self._poster.open()

    async def close(self) -> None:
        self._poster.close()

    def signed_url(self) -> str:
        timestamp = int(self.clock.now() * 1000)
        query = {
            "access_token": self._token,
            "timestamp": str(timestamp),
            "sign": dingtalk_sign(self._secret, timestamp),
        }
        return f"{self._base}?{urlencode(query)}"

    async def send(self, note: Notification) -> None:
        body = json.dumps(render_payload(note), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "SenseGate",
            "Idempotency-Key": header_safe(note.key),  # DingTalk ignores it; our receivers use it
        }
        answer = await self._poster.post(self.signed_url(), body, headers)
        check_robot_answer(self._poster, "DingTalk", answer, RETRYABLE_ERRCODES)
