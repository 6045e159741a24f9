"""What the duty desk shows, read from the store: open alerts by severity and age, where each
alert's ladder stands (who was paged, when, on which channel; who is next and when) and its audit
trail in local time. Plain data for the templates and the JSON API; no HTTP here.

The ladder is read, never moved: the store's ``escalations`` row (step, next due) and the
alert's ``alert_log`` (``paged`` / ``held`` / ``delivered`` rows), with the notifier resolving
who a future tier reaches now (the roster decides who is on duty then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_rules.schedule import zone
from gateway.alerts.notify import Notifier
from gateway.alerts.path import TOKEN_ACTOR
from gateway.models import Alert, AlertState, Severity
from gateway.site.people import People
from gateway.store import LogRow, Store
from gateway.web.i18n import ACTION, STATE, TEXT


@dataclass(frozen=True, slots=True)
class Page:
    """One page sent (or held): when, which tier, to whom, on which channels."""

    at: float
    tier: int
    to: tuple[str, ...]  # names
    channels: tuple[str, ...]
    held_until: float | None = None


@dataclass(frozen=True, slots=True)
class NextStep:
    tier: int
    at: float
    to: tuple[str, ...]  # names, as the roster stands now
    channels: tuple[str, ...]
    repeat: bool  # the top tier again (the ladder's repeat)


@dataclass(frozen=True, slots=True)
class LadderView:
    ladder: str  # the ladder's id ("" when none was started)
    pages: tuple[Page, ...]
    next: NextStep | None
    stopped: bool  # acknowledged or resolved: no further page
    unrouted: bool


@dataclass(frozen=True, slots=True)
class TrailRow:
    at: float
    action: str
    actor: str  # as people read it: a name and the id, a token, a rule, 系统
    channel: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def sort_key(alert: Alert) -> tuple[int, float]:
    """Most severe first; within a severity, the one waiting longest first."""
    return (int(alert.severity), alert.raised_at)


def needs_alarm(alert: Alert) -> bool:
    """Sound at the desk until someone acknowledges: 一级 and 二级 alerts nobody has taken."""
    return alert.is_open and alert.acked_at is None and alert.severity <= Severity.MAJOR


class BoardReader:
    def __init__(self, store: Store, notifier: Notifier, timezone: str) -> None:
        self.store = store
        self.notifier = notifier
        self.people = People(notifier.config)
        self.tz = zone(timezone)

    # ------------------------------------------------------------------ who

    def household_of(self, alert: Alert) -> str:
        return self.notifier.household_of(alert)

    def actor_name(self, actor: str, lang: str = "zh") -> str:
        """``李值班 (s-li)``, ``接口令牌 ha`` / ``token ha``, ``规则 sos`` … for the audit trail."""
        if actor.startswith(TOKEN_ACTOR):
            return ("接口令牌 " if lang == "zh" else "API token ") + actor[len(TOKEN_ACTOR) :]
        if actor.startswith("rule:"):
            return ("规则 " if lang == "zh" else "rule ") + actor[len("rule:") :]
        if actor in ("", "system"):
            return "系统" if lang == "zh" else "system"
        name = self.people.names.get(actor)
        return f"{name} ({actor})" if name else actor

    def _name(self, person: str) -> str:
        return self.people.names.get(person) or person

    # ------------------------------------------------------------------ ladder

    def ladder(self, alert: Alert, trail: Sequence[LogRow] | None = None) -> LadderView:
        rows = self.store.alert_log(alert.id) if trail is None else trail
        pages = []
        ladder_id = ""
        unrouted = False
        for r in rows:
            d = dict(r.detail or {})
            if r.action == "unrouted":
                unrouted = True
            if r.action not in ("paged", "held"):
                continue
            ladder_id = str(d.get("ladder", ladder_id))
            to = tuple(self._name(str(p)) for p in d.get("to", ()))
            if r.action == "paged":
                channels = tuple(str(c) for c in d.get("channels", ()))
                pages.append(Page(r.at, _int(d.get("tier")), to, channels))
            else:
                until = d.get("until")
                held = float(until) if isinstance(until, int | float) else None
                pages.append(Page(r.at, _int(d.get("tier")), to, (r.channel,), held))
        esc = self.store.escalation(alert.id) if alert.is_open else None
        stopped = not alert.is_open or alert.acked_at is not None
        nxt = None
        if esc is not None and not stopped and esc.next_at is not None:
            ladder = self.notifier.ladders.get(esc.ladder)
            if ladder is not None:
                ladder_id = ladder.id
                repeat = esc.step >= len(ladder.tiers)
                tier_no = min(esc.step, len(ladder.tiers) - 1)
                tier = ladder.tiers[tier_no]
                names = tuple(p.name or p.id for p in self.notifier.recipients(alert, tier))
                nxt = NextStep(tier_no, esc.next_at, names, tuple(tier.channels), repeat)
        return LadderView(ladder_id, tuple(pages), nxt, stopped, unrouted and not pages)

    # ------------------------------------------------------------------ trail

    def trail(self, alert: Alert, rows: Sequence[LogRow] | None = None, lang: str = "zh") -> list[TrailRow]:
        rows = self.store.alert_log(alert.id) if rows is None else rows
        return [TrailRow(r.at, r.action, self.actor_name(r.actor, lang), r.channel, dict(r.detail or {})) for r in rows]

    # ------------------------------------------------------------------ formatting

    def when(self, t: float | None, now: float, *, seconds: bool = True) -> str:
        """Local time: ``14:03:12`` (``14:03`` without ``seconds``) that day, ``03-01 14:03`` another."""
        if t is None:
            return "-"
        at = datetime.fromtimestamp(t, self.tz)
        today = datetime.fromtimestamp(now, self.tz).date()
        if at.date() != today:
            return at.strftime("%m-%d %H:%M")
        return at.strftime("%H:%M:%S" if seconds else "%H:%M")

    def full_time(self, t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t, self.tz).strftime("%Y-%m-%d %H:%M:%S")


def age_text(seconds: float, lang: str) -> str:
    """How long an alert has been open, roughly: ``45秒``, ``12分钟``, ``3小时5分钟``, ``2天``."""
    t = TEXT[lang]
    space = "" if lang == "zh" else " "
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}{space}{t['seconds']}"
    if s < 3600:
        return f"{s // 60}{space}{t['minutes']}"
    if s < 86_400:
        h, m = divmod(s // 60, 60)
        return f"{h}{space}{t['hours']}" + (f"{m}{space}{t['minutes']}" if m and lang == "zh" else "")
    return f"{s // 86_400}{space}{t['days']}"


def state_text(state: AlertState, lang: str) -> str:
    return STATE[lang].get(state.value, state.value)


def action_text(action: str, lang: str) -> str:
    return ACTION[lang].get(action, action)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


HELD_WHY = {
    "zh": {"cap_per_hour": "超过每小时上限，并入汇总", "quiet": "免打扰时段", "grouped": "与其他报警合并发送"},
    "en": {"cap_per_hour": "over the hourly cap: in the summary", "quiet": "quiet hours", "grouped": "grouped"},
}


def detail_text(action: str, detail: Mapping[str, Any] | None, reader: BoardReader, lang: str) -> str:
    """One audit-trail row's detail in words: to whom, which tier, until when, the note."""
    d = dict(detail or {})
    sep = "、" if lang == "zh" else ", "
    to = sep.join(reader.people.names.get(str(p)) or str(p) for p in d.get("to", ()))
    tier = d.get("tier")
    tier_text = TEXT[lang]["tier"].format(n=tier + 1) if isinstance(tier, int) else ""
    if action == "paged":
        channels = ", ".join(str(c) for c in d.get("channels", ()))
        return " ".join(x for x in (tier_text, f"→ {to or TEXT[lang]['nobody']}", f"({channels})") if x)
    if action == "held":
        until = d.get("until")
        when = reader.full_time(float(until)) if isinstance(until, int | float) else "?"
        why = HELD_WHY[lang].get(str(d.get("why", "")), str(d.get("why", "")))
        return f"{tier_text} → {to}：{why}，{when}" if lang == "zh" else f"{tier_text} → {to}: {why}, until {when}"
    if action == "delivered":
        return f"→ {to}" if to else ""
    if action in ("acknowledged", "resolved") and d.get("note"):
        return str(d["note"])
    if action == "escalated" and tier_text:
        return ("无人确认，升级至" if lang == "zh" else "nobody acknowledged: ") + tier_text
    if action in ("raised", "updated", "repeated") and d.get("events"):
        n = len(d["events"]) if isinstance(d["events"], list) else 0
        return f"{n}条事件" if lang == "zh" else f"{n} event(s)"
    if action in ("failed", "rejected") and d.get("error"):
        return str(d["error"])[:200]
    if action == "ladder_done":
        return ""
    return ""
