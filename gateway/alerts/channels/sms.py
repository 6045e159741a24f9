"""SMS through a GSM modem on a serial port: one text per recipient with a phone number.

The channel is thin (``gateway.alerts.channels.base``): the notifier keeps the note in its durable
outbox and retries it; this turns it into SMS-SUBMIT PDUs (``drivers.gsm_pdu``: UCS2, so the
Chinese arrives intact; concatenated parts) and hands them to the modem (``drivers.gsm_modem``).

What a phone gets: ``note.title``, a line break, ``note.text`` — not reworded; they already name
the alert id and how to acknowledge ("回复 1 7K3Q 确认" when this modem reads replies) — and, when
the notification carries one for this recipient (``note.links``), a last line with their own
one-tap link ("确认链接：https://…"). A text longer than ``max_parts`` parts (67 characters
each; 70 for a single message) is cut to fit and ends with "…" — cut before the link line, which
stays whole; the cut is counted (``truncated``) and logged.

Per send:

1. The modem is opened and initialised if it is not (a port that vanished is reopened here).
2. ``AT+CREG?`` / ``AT+CSQ``: not registered → ``RetryableSinkError`` and nothing is sent.
3. Each recipient with a phone number, in order, unless already texted for this ``note.key``:
   every part, then the recipient is marked done.

Errors: a modem that is gone, silent, not registered, or a ``+CMS ERROR`` about the network or
the SIM → ``RetryableSinkError``. A number that is not a phone number, or a ``+CMS ERROR`` that
says the number or the PDU is bad (``drivers.gsm_modem.PERMANENT_CMS``) → that recipient is
given up; the others are still texted, then ``RejectedBatchError`` names who could not be.

**Progress across retries.** The notifier retries the same note (same ``key``) after a failure.
The channel remembers, in memory, which recipients got the whole text and how many parts of
the current one went out (with the concatenation reference used), so a retry texts only the
rest: the remaining parts of a cut-off message go with the same reference and the phone joins
them. Forgotten once the note is done or given up (and the oldest beyond ``PROGRESS_LIMIT``
notes). Not durable: after a gateway crash, or when the modem's answer to a part was lost (a
timeout after the PDU was handed over), a retry can send a part or a whole text twice.

Health for ``sensegate status`` (``status()``): registered, registration, signal_dbm,
last_error, last_error_at, the port and whether it is open; ``counters``: ``messages``
(recipient texts completed), ``parts``, ``truncated``, ``rejected`` (recipients given up),
``retryable`` (sends that failed to be retried), ``no_phone`` (recipients without a number).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from drivers.gsm_modem import CommandError, GsmModem
from drivers.gsm_pdu import encode_submit, fit, parts_needed
from drivers.serial_link import Opener, open_serial
from gateway.alerts.channels.base import Notification
from gateway.clock import Clock
from gateway.errors import PayloadError, RejectedBatchError, RetryableSinkError, TransportError
from gateway.site.alerting import SmsSettings

log = logging.getLogger("sensegate.channels.sms")

PROGRESS_LIMIT = 1000  # notes whose progress is remembered; the oldest are forgotten first
LINK_LINE = "确认链接："


@dataclass(slots=True)
class _Progress:
    done: set[str] = field(default_factory=set)  # phones that got every part
    rejected: dict[str, str] = field(default_factory=dict)  # phone → why it was given up
    parts_sent: dict[str, int] = field(default_factory=dict)  # phone → parts of its text already sent
    refs: dict[str, int] = field(default_factory=dict)  # phone → concatenation reference in use


_SEPARATORS = re.compile(r"[\s\-().]")


def normalise_phone(phone: str) -> str:
    """ "+86 138-0013-8000" → "+8613800138000"; "008613…" → "+8613…"; national numbers kept."""
    number = _SEPARATORS.sub("", phone)
    if number.startswith("00"):
        number = "+" + number[2:]
    return number


def masked(phone: str) -> str:
    """A phone number for logs: enough to tell people apart, not to call them."""
    return phone[:-8] + "****" + phone[-4:] if len(phone) >= 11 else "****" + phone[-2:]


class SmsChannel:
    def __init__(self, name: str, settings: SmsSettings, clock: Clock, *, opener: Opener = open_serial) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self.modem = GsmModem(
            settings.port,
            clock,
            baudrate=settings.baudrate,
            timeout=settings.timeout,
            send_timeout=settings.send_timeout,
            pin=settings.pin,
            opener=opener,
            name=f"sms:{name}",
        )
        self.counters: dict[str, int] = {
            "messages": 0,
            "parts": 0,
            "truncated": 0,
            "rejected": 0,
            "retryable": 0,
            "no_phone": 0,
        }
        self._progress: OrderedDict[str, _Progress] = OrderedDict()
        self._ref = int(clock.now()) & 0xFF  # differs between runs, so a phone does not mix two messages

    # ------------------------------------------------------------------ health

    @property
    def registered(self) -> bool | None:
        return self.modem.health.registered

    @property
    def signal_dbm(self) -> int | None:
        return self.modem.health.signal_dbm

    @property
    def last_error(self) -> str:
        return self.modem.last_error

    def status(self) -> dict[str, Any]:
        health = self.modem.health
        return {
            "port": self.settings.port,
            "open": self.modem.is_open,
            "registered": health.registered,
            "registration": health.registration,
            "signal_dbm": health.signal_dbm,
            "checked_at": health.checked_at,
            "last_error": self.modem.last_error,
            "last_error_at": self.modem.last_error_at,
            "counters": dict(self.counters),
        }

    async def check(self) -> dict[str, Any]:
        """Ask the modem for registration and signal now (the notifier does, every few
        minutes, so a dead SIM is seen before an emergency needs it); ``status()`` after."""
        with contextlib.suppress(TransportError):
            await self.modem.check_health()
        return self.status()

    # ------------------------------------------------------------------ the contract

    async def open(self) -> None:
        """Nothing to do: the port is opened by the first send (a modem missing at start is no error)."""

    async def close(self) -> None:
        await self.modem.close()

    async def send(self, note: Notification) -> None:
        phones: list[str] = []
        link_of: dict[str, str] = {}  # phone → the one-tap link of its (first) recipient
        for recipient in note.recipients:
            phone = normalise_phone(recipient.phone)
            if not phone:
                self.counters["no_phone"] += 1
                continue
            if phone not in phones:
                phones.append(phone)
            if phone not in link_of and note.links.get(recipient.id):
                link_of[phone] = note.links[recipient.id]
        if not phones:
            log.warning("%s: notification %s has no recipient with a phone number", self.name, note.key)
            return
        progress = self._progress.get(note.key) or _Progress()
        self._progress[note.key] = progress
        self._progress.move_to_end(note.key)
        while len(self._progress) > PROGRESS_LIMIT:
            self._progress.popitem(last=False)
        try:
            await self.modem.check_health()
            for phone in phones:
                if phone in progress.done or phone in progress.rejected:
                    continue
                link = link_of.get(phone, "")
                await self._send_one(phone, self._text(note, LINK_LINE + link if link else ""), progress)
        except TransportError as exc:
            self.counters["retryable"] += 1
            raise RetryableSinkError(f"{self.name}: {exc}") from exc
        self._progress.pop(note.key, None)
        if progress.rejected:
            reasons = "; ".join(f"{masked(p)}: {why}" for p, why in progress.rejected.items())
            raise RejectedBatchError(f"{self.name}: not sent to {len(progress.rejected)} of {len(phones)}: {reasons}")

    # ------------------------------------------------------------------ internals

    def _text(self, note: Notification, last_line: str = "") -> str:
        text = "\n".join(part for part in (note.title.strip(), note.text.strip()) if part)
        try:
            fitted, cut = self._fit(text, last_line)
        except PayloadError:  # a lone surrogate: cannot happen with rendered text; drop it
            text = text.encode("utf-16-be", "replace").decode("utf-16-be")
            fitted, cut = self._fit(text, last_line)
        if cut:
            self.counters["truncated"] += 1
            log.warning(
                "%s: notification %s cut to %d parts (%d → %d characters)",
                self.name,
                note.key,
                self.settings.max_parts,
                len(text),
                len(fitted),
            )
        return fitted

    def _fit(self, text: str, last_line: str) -> tuple[str, bool]:
        """``text`` and ``last_line`` within ``max_parts``: the text is cut (with "…") so that the
        last line — a link, useless when cut — stays whole; if even that cannot fit, both are cut."""
        whole = f"{text}\n{last_line}" if last_line else text
        if not last_line or parts_needed(whole) <= self.settings.max_parts:
            return fit(whole, self.settings.max_parts)
        tail = "…\n" + last_line
        if parts_needed(tail) > self.settings.max_parts:
            return fit(whole, self.settings.max_parts)
        keep, over = 0, len(text)  # the longest text[:keep] that fits with the tail
        while keep + 1 < over:
            mid = (keep + over) // 2
            keep, over = (mid, over) if parts_needed(text[:mid] + tail) <= self.settings.max_parts else (keep, mid)
        return text[:keep] + tail, True

    async def _send_one(self, phone: str, text: str, progress: _Progress) -> None:
        ref = progress.refs.get(phone)
        if ref is None:
            ref = progress.refs[phone] = self._next_ref()
        try:
            pdus = encode_submit(phone, text, reference=ref)
        except PayloadError as exc:
            self._reject(phone, str(exc), progress)
            return
        for index in range(progress.parts_sent.get(phone, 0), len(pdus)):
            try:
                await self.modem.send_pdu(pdus[index])
            except CommandError as exc:
                if not exc.permanent:
                    raise
                self._reject(phone, str(exc), progress)
                return
            progress.parts_sent[phone] = index + 1
            self.counters["parts"] += 1
        progress.done.add(phone)
        self.counters["messages"] += 1
        log.info("%s: texted %s (%d parts)", self.name, masked(phone), len(pdus))

    def _reject(self, phone: str, why: str, progress: _Progress) -> None:
        progress.rejected[phone] = why
        self.counters["rejected"] += 1
        log.warning("%s: giving up on %s: %s", self.name, masked(phone), why)

    def _next_ref(self) -> int:
        self._ref = (self._ref + 1) & 0xFF
        return self._ref
