"""One-tap links (一键确认): a URL in a page that opens the alert on the duty desk and, with one
more tap, acknowledges it as the person it was sent to — no password typed on a phone at 3 a.m.
See docs/console.md.

A link is ``<public_url>/ack/<alert id>/<token>``. The token carries the person and an expiry
and is signed with HMAC-SHA256 over the alert id, the person and the expiry::

    token = base64url( 01 | expires_at (4 octets, big-endian Unix seconds) | person (UTF-8) | mac )
    mac   = HMAC-SHA256(key, "sensegate-ack-link" 00 | 01 | alert id | 00 | expires_at | person)[:16]

- Bound to one alert: the alert id is in the path and in the MAC, not in the token, so a token
  moved to another alert's URL (or any edit) fails the check; bound to one person (the person
  is signed) and to a time (``[console] link_hours``, 24 h by default).
- A person ``*<channel id>`` (``group_of``) means "one of those this channel paged about the
  alert": the link a group chat gets, where several people were @-mentioned. Its page asks who
  you are among exactly those people (the recipients of that channel's pages about the alert),
  each answer a form carrying that person's own signed token (docs/console.md says why).
- The MAC is cut to 128 bits (NIST SP 800-107 allows truncating HMAC; 2^-128 per guess) to keep
  an SMS link short. Tokens are compared in constant time.

The key: 32 random bytes made once, on the first page that carries a link, and kept in the
store's ``meta`` table (``onetap.key``). Why not a config secret: there is nothing for an
installer to set or rotate by hand, and the links in yesterday's pages must still verify after a
restart, so the key must live as long as the store does — anyone who can read the store can
change alert state directly anyway. Why HMAC from the standard library rather than
itsdangerous: this is one MAC over three fields with an expiry the gateway's (injected) clock
checks; the standard library's ``hmac`` and ``secrets`` do exactly that with no new dependency.
Deleting the key (``sensegate`` has no command for it; the store is SQLite) voids every link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from gateway.store import Store

KEY_META = "onetap.key"
VERSION = 1
GROUP = "*"  # a group link's person: GROUP + the channel id (config ids never contain "*")
MAC_BYTES = 16
MAX_PERSON = 64  # bytes of UTF-8; config ids are short
_DOMAIN = b"sensegate-ack-link\x00"


class LinkError(Exception):
    """A link that does not verify: ``bad`` (edited, another alert's, not ours) or ``expired``."""

    def __init__(self, reason: Literal["bad", "expired"], claim: Claim | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claim = claim  # what an expired link said (it verified); None for a bad one


@dataclass(frozen=True, slots=True)
class Claim:
    """What a verified link says: act on ``alert_id`` as ``person`` until ``expires_at``."""

    alert_id: str
    person: str  # a config person id, or GROUP + a channel id
    expires_at: int

    @property
    def is_group(self) -> bool:
        return self.person.startswith(GROUP)

    @property
    def channel(self) -> str:
        """The channel whose recipients a group link is for ("" for a person's link)."""
        return self.person[len(GROUP) :] if self.is_group else ""


def group_of(channel: str) -> str:
    """The person field of a group link for ``channel``."""
    return GROUP + channel


def store_key(store: Store) -> bytes:
    """The signing key from the store's meta, made (once) if there is none yet."""
    store.set_meta_default({KEY_META: secrets.token_bytes(32).hex()})
    value = store.meta(KEY_META)
    assert value is not None  # just set, if it was missing
    return bytes.fromhex(value)


class LinkSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a link key of at least 16 bytes")
        self._key = key

    def _mac(self, alert_id: str, person: bytes, expires: bytes) -> bytes:
        message = _DOMAIN + bytes([VERSION]) + alert_id.encode("utf-8") + b"\x00" + expires + person
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def token(self, alert_id: str, person: str, expires_at: int) -> str:
        who = person.encode("utf-8")
        if len(who) > MAX_PERSON:
            raise ValueError(f"a person id of at most {MAX_PERSON} bytes")
        expires = int(expires_at).to_bytes(4, "big")
        raw = bytes([VERSION]) + expires + who + self._mac(alert_id, who, expires)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, alert_id: str, token: str, now: float) -> Claim:
        """The claim of a token presented for ``alert_id``; ``LinkError`` if it is not one we
        signed for this alert, or has expired (``claim`` then says whose it was)."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise LinkError("bad") from None
        if len(raw) < 1 + 4 + MAC_BYTES or len(raw) > 1 + 4 + MAX_PERSON + MAC_BYTES or raw[0] != VERSION:
            raise LinkError("bad")
        expires, who, mac = raw[1:5], raw[5:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(alert_id, who, expires)):
            raise LinkError("bad")
        try:
            person = who.decode("utf-8")
        except UnicodeDecodeError:
            raise LinkError("bad") from None
        claim = Claim(alert_id, person, int.from_bytes(expires, "big"))
        if now >= claim.expires_at:
            raise LinkError("expired", claim)
        return claim


class AckLinks:
    """Makes the links of pages: ``<base>/ack/<alert id>/<token>``, good for ``hours``."""

    def __init__(self, signer: LinkSigner, base_url: str, hours: float) -> None:
        self.signer = signer
        self.base = base_url.rstrip("/")
        self.seconds = hours * 3600.0

    def path(self, alert_id: str, token: str) -> str:
        return f"/ack/{quote(alert_id, safe='')}/{token}"

    def url(self, alert_id: str, person: str, now: float, expires_at: int | None = None) -> str:
        expires = int(now + self.seconds) if expires_at is None else expires_at
        return self.base + self.path(alert_id, self.signer.token(alert_id, person, expires))
