"""What every alert delivery channel gets and how it answers: one contract, thin channels.

A channel (generic webhook, WeCom robot, DingTalk robot, SMS modem, MQTT …) turns one
``Notification`` into whatever its receiver speaks and sends it. It owns nothing else: the
notifier (``gateway.alerts.notify``) keeps notifications in the store's durable outbox, retries with
back-off, and marks each one done once ``send`` returned — so a receiver that is down for an
hour gets everything when it is back, and each notification once per ``key``.

Contract::

    open()       set up clients; no network I/O (a receiver down at start-up is not an error)
    send(note)   returns when the receiver accepted the notification, else raises
                   RetryableSinkError  try again later (unreachable, timeout, 5xx, 429, a modem
                                       not registered on the network, a robot's rate limit)
                   RejectedBatchError  the receiver refused this notification and retrying the
                                       same bytes cannot help (4xx other than 408/429, a robot's
                                       "invalid" errcode); the message carries the receiver's reason
                 and never anything else. The same ``note.key`` may be sent twice if the gateway
                 dies between the receiver's answer and the store's commit: channels pass the key
                 on wherever the receiver can use it (an Idempotency-Key header, a msgid).
    close()      release connections; safe to call twice

Secrets (webhook signing secrets, robot tokens) come from config and are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person a notification is meant for (to @mention in a group, or to text)."""

    id: str  # a staff / visitor id, or "contact:<resident>:<n>" for a resident's family contact
    name: str
    phone: str = ""  # E.164 (+8613…) or national (13…); SMS and @mentions use it
    role: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one alert, for one channel.

    ``title`` and ``text`` are rendered in Chinese (``text_en`` in English) and already say
    which alert (its short id), where, what, since when and how to acknowledge it; channels lay
    them out (markdown for robots, plain text for SMS) but do not reword them. ``link`` (already
    in the text) is the one-tap link for whoever reads this message, which a robot may show as a
    markdown link; ``links`` holds each recipient's own link, which the SMS channel appends to
    that recipient's text (gateway/alerts/invites.py).
    """

    key: str  # idempotency key: the same on every retry of this notification
    alert_id: str
    kind: str  # raised / escalated / reminder / repeated / acknowledged / resolved / summary
    severity: int  # 1 (一级, the most severe) … 4 (四级)
    title: str
    text: str
    text_en: str = ""
    recipients: tuple[Recipient, ...] = ()
    alert: Mapping[str, Any] = field(default_factory=dict)  # Alert.to_dict() plus lifecycle fields
    created_at: float = 0.0  # seconds since the epoch, from the gateway's clock
    link: str = ""  # a one-tap link that acknowledges, already in ``text``
    links: Mapping[str, str] = field(default_factory=dict)  # recipient id → their own one-tap link
    reply_code: str = ""  # what to text back to acknowledge ("1 <code>"), already in ``text``

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "text_en": self.text_en,
            "recipients": [{"id": r.id, "name": r.name, "phone": r.phone, "role": r.role} for r in self.recipients],
            "alert": dict(self.alert),
            "created_at": self.created_at,
            "link": self.link,
            "links": dict(self.links),
            "reply_code": self.reply_code,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            key=str(data["key"]),
            alert_id=str(data["alert_id"]),
            kind=str(data["kind"]),
            severity=int(data["severity"]),
            title=str(data["title"]),
            text=str(data["text"]),
            text_en=str(data.get("text_en", "")),
            recipients=tuple(
                Recipient(str(r["id"]), str(r["name"]), str(r.get("phone", "")), str(r.get("role", "")))
                for r in data.get("recipients", ())
            ),
            alert=dict(data.get("alert") or {}),
            created_at=float(data.get("created_at", 0.0)),
            link=str(data.get("link", "")),
            links={str(k): str(v) for k, v in (data.get("links") or {}).items()},
            reply_code=str(data.get("reply_code", "")),
        )


class Channel(Protocol):
    name: str  # the channel's id in config ([[channels]] id)

    async def open(self) -> None: ...

    async def send(self, note: Notification) -> None: ...

    async def close(self) -> None: ...
