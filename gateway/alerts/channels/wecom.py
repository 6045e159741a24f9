"""WeCom (企业微信) group robot: a markdown message per notification (docs/channels-webhooks.md).

::

    POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<token>
    {"msgtype": "markdown", "markdown": {"content": "### <font color=\"warning\">…</font>\\n…"}}
    → 200 {"errcode": 0, "errmsg": "ok"}

Layout (the words are the notification's own, never reworded): the title as a heading in the
severity's colour (WeCom markdown has three: ``warning`` orange-red for 一级/二级, ``comment``
grey for 三级/四级, ``info`` green for acknowledged / resolved), prefixed with the grade
(``[一级(特别重大)]``) unless the title already says it; the text line by line; a grey
``告警编号：<id>`` footer unless the text already names it — and always when the text had to
be cut, so the alert can still be acknowledged. The content limit is 4096 UTF-8 bytes; a longer
text is cut at a character boundary and marked. The one-tap link (``note.link``, in the text) is
shown as a markdown link, ``[点此确认](…)``.

@mentions: WeCom markdown cannot @ anyone. When the notification has recipients with phone
numbers (and ``mention`` is on), a second ``text`` message follows with the title, the alert
id (and the one-tap link, which WeCom makes tappable in a text message) and
``mentioned_mobile_list``; WeCom appends the @names. Each robot allows 20 messages a
minute, so a site that pages often may turn ``mention`` off. If the markdown went through and
the mention failed, a retry in the same process sends only the mention (the channel remembers,
for the last few hundred notifications, which part was accepted); after a restart the markdown
may come twice — acceptable for a group chat, and the notifier keeps such retries rare.

errcodes (HTTP 200): 0 ok; 45009 (api freq out of limit) and -1 (system busy) are retried;
everything else is rejected — 93000 (invalid webhook url: wrong or deleted key), 40058
(invalid parameter, e.g. markdown.content longer than 4096 bytes), 40008 (invalid message type)…
The key never appears in errors: it is redacted from every message.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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
from gateway.site.alerting import WeComChannelSettings

MARKDOWN_LIMIT = 4096  # bytes of markdown.content
TEXT_LIMIT = 2048  # bytes of text.content
TITLE_LIMIT = 512  # bytes of the heading, so a runaway title leaves room for the text
RETRYABLE_ERRCODES = frozenset({-1, 45009})
TRUNCATED = "…（内容过长，已截断）"
_REMEMBERED = 512  # notifications whose accepted parts are remembered between retries


def severity_colour(note: Notification) -> str:
    if note.kind in ("acknowledged", "resolved"):
        return "info"
    return "warning" if note.severity <= Severity.MAJOR else "comment"


def grade_label(severity: int) -> str:
    try:
        return Severity(severity).label_zh
    except ValueError:
        return ""


def heading(note: Notification) -> str:
    title = note.title.strip()
    label = grade_label(note.severity)
    if label and label not in title:
        title = f"[{label}] {title}"
    return " ".join(truncate_utf8(title, TITLE_LIMIT).split())


def render_markdown(note: Notification) -> str:
    """The ``markdown.content``: at most ``MARKDOWN_LIMIT`` bytes, always naming the alert id."""
    head = f'### <font color="{severity_colour(note)}">{heading(note)}</font>\n'
    foot = f'\n<font color="comment">告警编号：{note.alert_id}</font>'
    room = MARKDOWN_LIMIT - len(head.encode("utf-8"))
    return head + with_alert_id(markdown_link(note.text.strip(), note.link), note.alert_id, room, foot, TRUNCATED)


def mention_mobiles(note: Notification) -> list[str]:
    mobiles: list[str] = []
    for recipient in note.recipients:
        mobile = normalise_mobile(recipient.phone)
        if mobile and mobile not in mobiles:
            mobiles.append(mobile)
    return mobiles


def render_parts(note: Notification, mention: bool = True) -> list[dict[str, Any]]:
    """The messages one notification becomes: the markdown, then maybe the @mention text."""
    parts: list[dict[str, Any]] = [{"msgtype": "markdown", "markdown": {"content": render_markdown(note)}}]
    mobiles = mention_mobiles(note) if mention else []
    if mobiles:
        tap = f"\n一键确认：{note.link}" if note.link else ""
        content = truncate_utf8(f"{heading(note)}\n告警编号：{note.alert_id}{tap}", TEXT_LIMIT)
        parts.append({"msgtype": "text", "text": {"content": content, "mentioned_mobile_list": mobiles}})
    return parts


class WeComChannel:
    """Sends notifications to one WeCom group robot."""

    def __init__(self, settings: WeComChannelSettings, clock: Clock) -> None:
        self.name = settings.id
        self.clock = clock  # WeCom needs no timestamp; kept for the uniform constructor
        self.mention = settings.mention
        base = checked_base_url(settings.id, settings.url, settings.timeout)
        self._url = f"{base}?{urlencode({'key': settings.token.get_secret_value()})}"
        self._display = display_url(base)
        self._poster = JsonPoster(settings.id, settings.timeout, secrets=[settings.token.get_secret_value()])
        self._accepted: OrderedDict[str, int] = OrderedDict()  # note.key → parts accepted so far

    def __repr__(self) -> str:  # no key
        return f"WeComChannel(name={self.name!r}, url={self._display!r})"

    async def open(self) -> None:
        self._poster.open()

    async def close(self) -> None:
        self._poster.close()

    async def send(self, note: Notification) -> None:
        parts = render_parts(note, self.mention)
        done = self._accepted.get(note.key, 0)
        for index, payload in enumerate(parts):
            if index < done:
                continue
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "SenseGate",
                "Idempotency-Key": header_safe(note.key),  # WeCom ignores it; our receivers use it
            }
            answer = await self._poster.post(self._url, body, headers)
            check_robot_answer(self._poster, "WeCom", answer, RETRYABLE_ERRCODES)
            self._remember(note.key, index + 1)
        self._accepted.pop(note.key, None)

    def _remember(self, key: str, parts: int) -> None:
        self._accepted[key] = parts
        self._accepted.move_to_end(key)
        while len(self._accepted) > _REMEMBERED:
            self._accepted.popitem(last=False)
