"""Acknowledge by SMS reply (短信回复确认): a page texted through the GSM modem ends with
"回复 1 7K3Q 确认"; the person texts back ``1 7K3Q`` and the alert is acknowledged in their name,
with no network but the GSM one. See docs/alerts.md.

**The short code.** Four characters from ``ALPHABET`` — digits and capitals without 0/O, 1/I/L
and U, so nothing on a phone screen reads two ways and a leading "1" (the verb) is never part of
a code — 30^4 = 810,000 codes. An alert gets its code the first time a page about it is rendered
for an SMS channel that reads replies; the code is derived from the alert id (``candidates``),
skipping codes in use, and kept in the store's meta (``sms.reply_codes``: code → alert id), so
it is unique among open alerts and stays the same across restarts. A code stays reserved for
``RESERVED_AFTER_CLOSE`` (7 days) after its alert was resolved, so a late reply to a closed
alert's code can never acknowledge a newer one.

**A reply** (``parse_reply``): after NFKC (full-width digits and letters from a Chinese keyboard
become ASCII) and upper-casing, optionally one of ``1 确认 收到 接警 OK ACK Y YES``, then the
code, e.g. ``1 7K3Q``, ``17k3q``, ``确认7K3Q``, ``7K3Q`` or ``7K3Q 确认``; anything else is not a
reply.

**Who.** The sender's number must be a phone of someone the site config names — a staff member,
a registered visitor or a resident's family contact — and the acknowledgement is theirs
(``via = "sms"``), held to the same rule as every other path (the alert path checks the person).
Numbers are compared as Chinese numbers: ``+86 138…``, ``0086138…``, ``86138…`` and ``138…`` are
one number. Two people sharing one phone: the one who was paged about the alert, else the first
in the config.

**The answer** goes back to the sender's phone through the notifier's durable queue on the same
channel (kind ``reply``), at most once per alert, person and outcome (the queue's key), so an
auto-responder cannot start a loop: 已确认 (acknowledged now), 已由…确认 (someone was first) or
已处置完毕 (already resolved). Unknown numbers, texts that are not a reply and unknown codes get
no answer — a stranger learns nothing, and no operator service is drawn into a conversation —
and are logged once each and counted (``sms.replies.*`` in the store's counters).

**The SIM never fills**: every received message is deleted once handled (``AT+CMGD``), replies
or not, undecodable ones too; the part of a concatenated message whose other parts have not come
within ``CONCAT_WAIT`` is deleted as incomplete.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from drivers.gsm_modem import GsmModem, Stored
from drivers.gsm_pdu import Deliver, decode_deliver
from edge_rules.schedule import zone
from gateway.alerts.channels.base import Notification, Recipient
from gateway.alerts.channels.sms import masked
from gateway.alerts.commands import apply_command
from gateway.alerts.path import AlertPath
from gateway.clock import Clock
from gateway.errors import PayloadError, TransportError
from gateway.log import LogOnce
from gateway.models import Alert
from gateway.site.config import SiteConfig
from gateway.site.people import contact_id
from gateway.store import Store

log = logging.getLogger("sensegate.replies")

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 4
CODES_META = "sms.reply_codes"
RESERVED_AFTER_CLOSE = 7 * 86_400.0
CONCAT_WAIT = 600.0  # seconds a part waits for the rest of its message
VIA = "sms"
ACK_WORDS = ("1", "确认", "收到", "接警", "OK", "ACK", "YES", "Y")

_VERB = "|".join(re.escape(w) for w in sorted(ACK_WORDS, key=len, reverse=True))
_REPLY = re.compile(
    rf"(?:(?:{_VERB})[\s:：,，.。、\-]*)?([A-Z0-9]{{{CODE_LENGTH}}})(?:[\s,，]*(?:确认|收到|接警))?[\s.。!！]*"
)
_QUOTES = "\"'「」『』“”‘’【】[]()（）<>《》"


def parse_reply(text: str) -> str | None:
    """The code in a reply such as ``1 7K3Q`` (see the module docstring), or None."""
    normal = unicodedata.normalize("NFKC", text).strip().upper()
    normal = normal.translate({ord(q): None for q in _QUOTES}).strip()
    match = _REPLY.fullmatch(normal)
    if match is None:
        return None
    code = match.group(1)
    return code if all(c in ALPHABET for c in code) else None


def candidates(alert_id: str) -> Iterator[str]:
    """The codes an alert may get, in the order tried: a hash of its id, then of id#1, id#2 …"""
    for i in itertools.count():
        n = int.from_bytes(hashlib.sha256(f"{alert_id}#{i}".encode()).digest()[:8], "big")
        chars = []
        for _ in range(CODE_LENGTH):
            n, r = divmod(n, len(ALPHABET))
            chars.append(ALPHABET[r])
        yield "".join(chars)


class ReplyCodes:
    """Short codes for alerts, unique among open ones, kept in the store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _load(self) -> dict[str, str]:
        raw = self.store.meta(CODES_META)
        try:
            codes = json.loads(raw) if raw else {}
        except ValueError:
            codes = {}
        return {str(k): str(v) for k, v in codes.items()} if isinstance(codes, dict) else {}

    def code_for(self, alert: Alert, now: float) -> str:
        codes = self._load()
        for code, alert_id in codes.items():
            if alert_id == alert.id:
                return code
        for code, alert_id in list(codes.items()):
            other = self.store.alert(alert_id)
            if other is None or (not other.is_open and (other.resolved_at or 0.0) < now - RESERVED_AFTER_CLOSE):
                del codes[code]
        code = next(c for c in candidates(alert.id) if c not in codes)
        codes[code] = alert.id
        self.store.set_meta(CODES_META, json.dumps(codes, sort_keys=True))
        return code

    def alert_for(self, code: str) -> str | None:
        return self._load().get(code.upper())

    def known(self, alert_id: str) -> str | None:
        """The code an alert already has (None: no SMS page has shown one)."""
        return next((c for c, a in self._load().items() if a == alert_id), None)


# ---------------------------------------------------------------------- who texted


def phone_key(phone: str) -> str:
    """A phone number as compared: digits only, China's +86 / 0086 / 86 prefix dropped."""
    digits = re.sub(r"[^0-9+]", "", phone)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+86"):
        return digits[3:]
    if digits.startswith("86") and len(digits) == 13:  # a mobile number sent as type "unknown"
        return digits[2:]
    return digits.lstrip("+")


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str


class PhoneBook:
    """Everyone the site config names with a phone, by ``phone_key``."""

    def __init__(self, config: SiteConfig) -> None:
        book: dict[str, list[Person]] = {}

        def add(person: str, name: str, phone: str) -> None:
            key = phone_key(phone)
            if key:
                book.setdefault(key, []).append(Person(person, name))

        for s in config.staff:
            add(s.id, s.name, s.phone)
        for v in config.visitors:
            add(v.id, v.name, v.phone)
        for r in config.residents:
            for i, c in enumerate(r.contacts):
                add(contact_id(r.id, i), c.name, c.phone)
        self.book = book

    def people(self, number: str) -> list[Person]:
        return list(self.book.get(phone_key(number), ()))


# ---------------------------------------------------------------------- the reader


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reply did (for tests and the log)."""

    number: str
    text: str
    result: str  # acknowledged / already / resolved / unknown_number / not_a_reply / bad_code / refused
    alert_id: str = ""
    person: str = ""


class SmsReplies:
    """Reads the SMS channel's modem every ``interval`` seconds and acts on the replies."""

    def __init__(
        self,
        channel: str,
        modem: GsmModem,
        config: SiteConfig,
        store: Store,
        clock: Clock,
        alerts: AlertPath,
        *,
        interval: float = 5.0,
        timezone: str = "Asia/Shanghai",
        wake: asyncio.Event | None = None,
    ) -> None:
        self.channel = channel
        self.modem = modem
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.interval = interval
        self.tz = zone(timezone)
        self.wake = wake  # the channel's delivery loop: an answer is queued
        self.codes = ReplyCodes(store)
        self.phones = PhoneBook(config)
        self.names = {s.id: s.name for s in config.staff} | {v.id: v.name for v in config.visitors}
        for r in config.residents:
            self.names.update((contact_id(r.id, i), c.name) for i, c in enumerate(r.contacts))
        self._log_once = LogOnce(log)
        self._waiting: dict[tuple[str, int, int, bool], float] = {}  # a concatenated message → first seen

    async def run(self) -> None:
        """Poll until cancelled; a modem that is away is retried at the next turn (logged once)."""
        while True:
            try:
                await self.poll()
            except TransportError as exc:
                self._log_once.warning(("modem",), "%s: cannot read replies from the modem: %s", self.channel, exc)
            else:
                self._log_once.reset(("modem",))
            await self.clock.sleep(self.interval)

    async def poll(self) -> list[Outcome]:
        """Read the storage once, act on every complete message, delete what was handled."""
        stored = [s for s in await self.modem.list_messages() if s.received]
        decoded: list[tuple[Stored, Deliver]] = []
        for s in stored:
            try:
                decoded.append((s, decode_deliver(s.pdu)))
            except PayloadError as exc:
                self._count("undecodable")
                self._log_once.warning(
                    ("undecodable",), "%s: a received SMS is not readable text: %s", self.channel, exc
                )
                await self.modem.delete_message(s.index)
        outcomes: list[Outcome] = []
        groups: dict[tuple[str, int, int, bool], list[tuple[Stored, Deliver]]] = {}
        for s, d in decoded:
            if d.concat is None:
                outcomes.append(self.handle(d.number, d.text))
                await self.modem.delete_message(s.index)
            else:
                key = (d.number, d.concat.ref, d.concat.total, d.concat.wide)
                groups.setdefault(key, []).append((s, d))
        now = self.clock.now()
        for key, parts in groups.items():
            seqs = {d.concat.seq: d.text for _, d in parts if d.concat is not None}
            if len(seqs) == key[2]:
                outcomes.append(self.handle(key[0], "".join(seqs[i] for i in sorted(seqs))))
            elif now - self._waiting.setdefault(key, now) >= CONCAT_WAIT:
                self._count("incomplete")
                self._log_once.warning(
                    ("incomplete",), "%s: dropped parts of a reply whose rest never came", self.channel
                )
            else:
                continue
            self._waiting.pop(key, None)
            for s, _ in parts:
                await self.modem.delete_message(s.index)
        return outcomes

    def handle(self, number: str, text: str) -> Outcome:
        """One whole message from ``number``: acknowledge if it is a reply from someone we know."""
        people = self.phones.people(number)
        if not people:
            self._count("unknown_number")
            self._log_once.warning(
                ("unknown_number", phone_key(number)),
                "%s: ignored an SMS from an unknown number %s",
                self.channel,
                masked(number),
            )
            return Outcome(number, text, "unknown_number")
        code = parse_reply(text)
        if code is None:
            self._count("not_a_reply")
            self._log_once.warning(
                ("not_a_reply", people[0].id),
                "%s: an SMS from %s is not a reply like '1 <code>'",
                self.channel,
                people[0].id,
            )
            return Outcome(number, text, "not_a_reply", person=people[0].id)
        alert_id = self.codes.alert_for(code)
        alert = self.store.alert(alert_id) if alert_id else None
        if alert is None:
            self._count("bad_code")
            self._log_once.warning(
                ("bad_code", code), "%s: %s replied with code %s, which no alert has", self.channel, people[0].id, code
            )
            return Outcome(number, text, "bad_code", person=people[0].id)
        person = self._who(people, alert)
        command = {"action": "ack", "alert": alert.id, "by": person.id, "note": "", "via": VIA}
        result = apply_command(self.alerts, command)
        if result["ok"]:
            outcome = "already" if result.get("already") else "acknowledged"
        else:
            outcome = "resolved" if result.get("reason") == "already_resolved" else "refused"
        log.info("sms reply: ack %s (%s) by %s: %s", alert.id, code, person.id, outcome)
        self._count(outcome)
        current = self.store.alert(alert.id) or alert
        self._answer(current, code, person, number, outcome)
        return Outcome(number, text, outcome, alert.id, person.id)

    def _who(self, people: Sequence[Person], alert: Alert) -> Person:
        if len(people) > 1:
            rows = self.store.alert_log(alert.id)
            paged = {str(p) for r in rows if r.action == "paged" for p in (r.detail or {}).get("to", ())}
            for p in people:
                if p.id in paged:
                    return p
        return people[0]

    def _answer(self, alert: Alert, code: str, person: Person, number: str, outcome: str) -> None:
        what = alert.message_zh.split("\n", 1)[0]
        if outcome == "acknowledged":
            text = f"已确认：{what}（{code}）。升级已停止，请尽快处置。"
            en = f"Acknowledged: {alert.message_en} ({code}). Escalation stopped."
        elif outcome == "already":
            who = "您" if alert.acked_by == person.id else self.names.get(alert.acked_by, alert.acked_by)
            at = datetime.fromtimestamp(alert.acked_at or self.clock.now(), self.tz).strftime("%H:%M")
            text = f"该报警已由{who}于{at}确认（{code}）：{what}"
            en = f"Already acknowledged by {alert.acked_by} at {at} ({code}): {alert.message_en}"
        elif outcome == "resolved":
            text = f"该报警已处置完毕（{code}）：{what}"
            en = f"Already resolved ({code}): {alert.message_en}"
        else:
            return
        now = self.clock.now()
        key = f"{alert.id}/reply/{person.id}/{outcome}"
        note = Notification(
            key=key,
            alert_id=alert.id,
            kind="reply",
            severity=int(alert.severity),
            title="",
            text=text,
            text_en=en,
            recipients=(Recipient(person.id, person.name, number),),
            alert=alert.to_dict(),
            created_at=now,
        )
        queued = self.store.save_notify(notifications=[(key, self.channel, alert.id, now, note.to_dict())])
        if queued and self.wake is not None:
            self.wake.set()

    def _count(self, what: str) -> None:
        self.store.count({f"sms.replies.{what}": 1})
