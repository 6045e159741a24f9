"""How the person who gets a page acknowledges it from where they are — the line of the page
that says so, and what goes with it (docs/alerts.md, "acknowledge from where people are").

Per channel, for a page (raised, escalated, reminder, repeated, downgraded) to known people:

- **SMS with a modem that reads replies** (``[[channels]] type = "sms"``, ``replies = true``, the
  default): "回复 1 7K3Q 确认" with the alert's short code (``gateway.alerts.replies``) — works
  with no network but GSM — and, when the duty desk has a ``public_url``, each phone's own
  one-tap link (``links``, which the SMS channel appends to that phone's text).
- **Group robots (WeCom, DingTalk) and integrations (webhook, MQTT)**, with a ``public_url``:
  one link in the text (``link``). Paged to one person: that person's link. Paged to several
  @-mentioned people: one group link whose page asks "who are you" among the people this
  channel paged about the alert, each answer bound by that person's own signature — one line instead of a long URL
  per person in a group chat, and nothing a group member could not do with per-person links
  anyway, since everyone in the group reads every message. ``links`` also carries each
  person's own link, for an integration that forwards pages one by one.
- Otherwise (no ``public_url``, an SMS channel that does not read replies and no link, or a page
  that reaches nobody): the configured ``notify.ack_hint_zh`` / ``ack_hint_en`` — how this
  community acknowledges otherwise (the duty room by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.alerts.channels.base import Recipient
from gateway.alerts.links import AckLinks, LinkSigner, group_of, store_key
from gateway.alerts.replies import ReplyCodes
from gateway.models import Alert
from gateway.site.alerting import SmsSettings
from gateway.site.config import SiteConfig
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class Invite:
    zh: str  # the page's "how to acknowledge" line
    en: str
    link: str = ""  # the message's own link, in the text (robots, integrations)
    links: dict[str, str] = field(default_factory=dict)  # person id → their own link
    reply_code: str = ""  # what to text back (SMS)


class Invites:
    def __init__(self, config: SiteConfig, store: Store) -> None:
        self.store = store
        self.kinds = {c.id: c.type for c in config.channels}
        self.replying = {c.id for c in config.channels if isinstance(c, SmsSettings) and c.replies}
        self.codes = ReplyCodes(store)
        console = config.console
        self._links: AckLinks | None = None
        self._link_settings = (
            (console.public_url, console.link_hours) if console.enabled and console.public_url else None
        )

    @property
    def links(self) -> AckLinks | None:
        """The link maker, once a page needs one (the key is made then, not at start-up)."""
        if self._links is None and self._link_settings is not None:
            url, hours = self._link_settings
            self._links = AckLinks(LinkSigner(store_key(self.store)), url, hours)
        return self._links

    def for_page(self, alert: Alert, people: Sequence[Recipient], channel: str, now: float) -> Invite | None:
        """What the page says about acknowledging, or None for the configured hint."""
        if not people or channel not in self.kinds:
            return None
        links = self.links
        if self.kinds[channel] == "sms":
            code = self.codes.code_for(alert, now) if channel in self.replying else ""
            own = {p.id: links.url(alert.id, p.id, now) for p in people if p.phone} if links else {}
            if code:
                tail = "（或打开下方链接）" if own else ""
                return Invite(
                    f"回复 1 {code} 确认{tail}", f"Reply '1 {code}' to acknowledge", links=own, reply_code=code
                )
            if own:
                return Invite("请尽快处置，打开下方链接确认", "Act now; acknowledge with the link below", links=own)
            return None
        if links is None:
            return None
        own = {p.id: links.url(alert.id, p.id, now) for p in people}
        link = own[people[0].id] if len(people) == 1 else links.url(alert.id, group_of(channel), now)
        return Invite(
            f"请尽快处置，一键确认（免登录）：{link}",
            f"Act now; acknowledge with one tap (no sign-in): {link}",
            link=link,
            links=own,
        )
