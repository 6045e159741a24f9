"""What a scenario expects, and the verdict: the alert timeline, pages, audit trails, visits,
malformed wire messages and counters (format: scenarios/README.md).

Also the scenario's notation for time, which steps share: ``"03:12"`` on day 1 (the start's
date, Asia/Shanghai), ``"day 2 03:12"``, ``"+30s"`` after the previous step.

The runner (gateway/scenario.py) hands over what happened: the rule transitions as ``Seen``
lines and, from the store, flat ``records`` — ``page`` (a notification a channel delivered:
when, to whom, the ladder tier it was planned for, the alert's rule and household), ``trail``
(every line of every alert's audit trail) and ``visit`` (the visit records).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge_rules.schedule import parse_duration
from gateway.alerts.notify import PAGE_KINDS
from gateway.alerts.path import Transition
from gateway.care.report import build_report
from gateway.models import Location
from gateway.site.config import SiteConfig
from gateway.site.registry import Registry
from gateway.store import Store

TZ = ZoneInfo("Asia/Shanghai")
TRANSITIONS = frozenset({"raised", "updated", "repeated", "escalated", "downgraded", "resolved"})
_AT = re.compile(r"^(?:day\s+(\d+)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")
# The keys of [[expect_page]] / [[expect_trail]] / [[expect_visit]], besides at, within and count.
WANTED = {
    "page": ("rule", "to", "tier", "channel", "kind", "household"),
    "trail": ("rule", "action", "by", "channel", "household"),
    "visit": ("household", "visitor", "method"),
    "would_have": ("rule", "device", "severity", "action"),
}
Records = dict[str, list[dict[str, Any]]]


# ---------------------------------------------------------------------- time and tables


def at_time(value: str, start: float, previous: float) -> float:
    """``"03:12"`` (day 1 = the start's date), ``"day 2 03:12"``, ``"+30m"`` (after ``previous``)."""
    value = value.strip()
    if value.startswith("+"):
        return previous + parse_duration(value[1:])
    m = _AT.match(value)
    if m is None:
        raise ValueError(f'time {value!r}: expected "HH:MM", "day N HH:MM" or "+30m"')
    day, hh, mm, ss = int(m[1] or 1), int(m[2]), int(m[3]), int(m[4] or 0)
    if day < 1 or hh > 23 or mm > 59 or ss > 59:
        raise ValueError(f"time {value!r}: out of range")
    first = datetime.fromtimestamp(start, TZ).date()
    return datetime.combine(first + timedelta(days=day - 1), time(hh, mm, ss), tzinfo=TZ).timestamp()


def day_time(start: float, t: float) -> str:
    first = datetime.fromtimestamp(start, TZ).date()
    dt = datetime.fromtimestamp(t, TZ)
    return f"day {(dt.date() - first).days + 1} {dt:%H:%M:%S}"


def tables(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{key}: expected [[{key}]] tables")
    return value


def req(raw: Mapping[str, Any], key: str, where: str) -> str:
    if key not in raw:
        raise ValueError(f"{where}.{key}: missing")
    return str(raw[key])


def only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown keys {extra} (allowed: {sorted(allowed)})")


# ---------------------------------------------------------------------- what is expected


@dataclass(frozen=True, slots=True)
class Expect:
    rule: str
    transitions: frozenset[str]
    severity: int | None = None
    household: str = ""
    subject: str = ""
    device: str = ""
    building: str = ""
    message: str = ""  # a part of the alert's message_zh (after the transition)
    start: float | None = None
    end: float | None = None
    count: int | None = None  # the alert's count after the transition
    only: bool = False  # nothing else for this household

    def describe(self, fmt: Callable[[float], str]) -> str:
        parts = [self.rule]
        for name in ("household", "subject", "device", "building"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        if self.severity is not None:
            parts.append(f"severity={self.severity}")
        if self.count is not None:
            parts.append(f"count={self.count}")
        if self.message:
            parts.append(f"message~{self.message!r}")
        if self.transitions not in (TRANSITIONS, TRANSITIONS - {"resolved"}):
            parts.append("/".join(sorted(self.transitions)))
        if self.start is not None and self.end is not None:
            parts.append(f"between {fmt(self.start)} and {fmt(self.end)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Wanted:
    """An ``[[expect_page]]``, ``[[expect_no_page]]``, ``[[expect_trail]]`` or ``[[expect_visit]]``:
    every field given must match a record; ``count``: exactly that many (None: at least one)."""

    what: str  # "page" | "trail" | "visit"
    fields: tuple[tuple[str, object], ...]
    start: float | None = None
    end: float | None = None
    count: int | None = None

    def describe(self, fmt: Callable[[float], str]) -> str:
        parts = [self.what, *(f"{k}={v}" for k, v in self.fields)]
        if self.count is not None:
            parts.append(f"×{self.count}")
        if self.start is not None and self.end is not None:
            parts.append(f"between {fmt(self.start)} and {fmt(self.end)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class VisitRate:
    month: str  # "2026-03"
    rate: float | None = None  # covered elders visited in the month ÷ covered elders
    visited: int | None = None


@dataclass(slots=True)
class Expectations:
    expect: list[Expect] = field(default_factory=list)
    expect_not: list[Expect] = field(default_factory=list)
    expect_none: bool = False
    wanted: list[Wanted] = field(default_factory=list)
    visit_rates: list[VisitRate] = field(default_factory=list)
    malformed: int = 0  # wire messages and frames rejected (malformed.*, serial bad checksums)
    counters: dict[str, int] = field(default_factory=dict)

    KEYS = frozenset({"expect", "expect_not", "expect_none", "expect_page", "expect_no_page", "expect_trail",
                      "expect_visit", "expect_visit_rate", "expect_malformed", "expect_counters",
                      "expect_would_have", "expect_no_would_have"})  # fmt: skip

    @classmethod
    def parse(cls, data: Mapping[str, Any], start: float) -> Expectations:
        x = cls()
        x.expect = [_expect(raw, f"expect[{i}]", start, True) for i, raw in enumerate(tables(data, "expect"))]
        x.expect_not = [
            _expect(raw, f"expect_not[{i}]", start, False) for i, raw in enumerate(tables(data, "expect_not"))
        ]
        x.expect_none = data.get("expect_none", False)
        if not isinstance(x.expect_none, bool):
            raise ValueError("expect_none: expected true or false")
        if x.expect_none and x.expect:
            raise ValueError("expect_none = true with [[expect]] entries")
        for key, what in (("expect_page", "page"), ("expect_no_page", "page"), ("expect_trail", "trail"),
                          ("expect_visit", "visit"), ("expect_would_have", "would_have"),
                          ("expect_no_would_have", "would_have")):  # fmt: skip
            x.wanted += [_wanted(raw, what, f"{key}[{i}]", start, key.startswith("expect_no_"))
                         for i, raw in enumerate(tables(data, key))]  # fmt: skip
        for i, raw in enumerate(tables(data, "expect_visit_rate")):
            only(raw, {"month", "rate", "visited"}, f"expect_visit_rate[{i}]")
            rate, visited = raw.get("rate"), raw.get("visited")
            month = req(raw, "month", f"expect_visit_rate[{i}]")
            x.visit_rates.append(VisitRate(month, None if rate is None else float(rate), visited))
        malformed, counters = data.get("expect_malformed", 0), data.get("expect_counters", {})
        if isinstance(malformed, bool) or not isinstance(malformed, int) or not isinstance(counters, dict):
            raise ValueError("expect_malformed: a number; [expect_counters]: a table of counter = number")
        x.malformed, x.counters = malformed, {str(k): int(v) for k, v in counters.items()}
        return x


def _window(raw: Mapping[str, Any], start: float) -> tuple[float | None, float | None]:
    if "at" not in raw:
        return None, None
    lo = at_time(str(raw["at"]), start, start)
    return lo, lo + parse_duration(raw.get("within", "1m"))


def _count(raw: Mapping[str, Any], where: str) -> int | None:
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"{where}.count: expected a number")
    return count


def _expect(raw: dict[str, Any], where: str, start: float, positive: bool) -> Expect:
    keys = {"rule", "severity", "transition", "household", "subject", "device", "building", "message", "at", "within"}
    only(raw, keys | ({"count", "only"} if positive else set()), where)
    transition = raw.get("transition")
    if transition is None:
        # expected: any transition but a resolution; must not fire: any transition at all
        transitions = TRANSITIONS - {"resolved"} if positive else TRANSITIONS
    else:
        names = [transition] if isinstance(transition, str) else list(transition)
        bad = [n for n in names if n not in TRANSITIONS]
        if bad:
            raise ValueError(f"{where}.transition: {bad} not in {sorted(TRANSITIONS)}")
        transitions = frozenset(names)
    severity = raw.get("severity")
    if severity is not None and not isinstance(severity, int):
        raise ValueError(f"{where}.severity: expected 1–4")
    if raw.get("only") and not raw.get("household"):
        raise ValueError(f"{where}.only: says nothing else happens to a household; give household =")
    lo, hi = _window(raw, start)
    return Expect(
        rule=req(raw, "rule", where),
        transitions=transitions,
        severity=severity,
        household=str(raw.get("household", "")),
        subject=str(raw.get("subject", "")),
        device=str(raw.get("device", "")),
        building=str(raw.get("building", "")),
        message=str(raw.get("message", "")),
        start=lo,
        end=hi,
        count=_count(raw, where),
        only=bool(raw.get("only", False)),
    )


def _wanted(raw: dict[str, Any], what: str, where: str, start: float, none: bool) -> Wanted:
    only(raw, {*WANTED[what], "at", "within", *(() if none else ("count",))}, where)
    fields = tuple((k, raw[k]) for k in WANTED[what] if k in raw)
    if not fields:
        raise ValueError(f"{where}: name at least one of {list(WANTED[what])}")
    lo, hi = _window(raw, start)
    return Wanted(what, fields, lo, hi, 0 if none else _count(raw, where))


# ---------------------------------------------------------------------- what happened


@dataclass(frozen=True, slots=True)
class Seen:
    at: float
    kind: str
    rule: str
    severity: int
    message_zh: str
    household: str  # "building/unit/household number" of the alert's location
    building: str
    device: str
    dedup_key: str
    count: int = 1
    alert_id: str = ""


def seen(t: Transition) -> Seen:
    a = t.alert
    if t.kind == "raised":
        at = a.raised_at
    elif t.kind == "resolved" and a.resolved_at is not None:
        at = a.resolved_at
    else:
        at = a.last_seen
    loc = a.location
    return Seen(
        at, t.kind, a.rule, int(a.severity), a.message_zh, f"{loc.building}/{loc.unit}/{loc.household}",
        loc.building, a.device_id, a.dedup_key, a.count, a.id,
    )  # fmt: skip


def records(store: Store, timeline: list[Seen], household_of: Callable[[Location], str]) -> Records:
    """Pages delivered, the alerts' audit trails and the visits recorded, as flat records."""
    rules: dict[str, set[str]] = {}
    for s in timeline:
        rules.setdefault(s.alert_id, set()).add(s.rule)
    pages, trail = [], []
    for alert in store.alerts(limit=100_000):
        log = store.alert_log(alert.id)
        where = household_of(alert.location)
        had = tuple(sorted(rules.get(alert.id, set()) | {alert.rule}))
        # A notification's tier: the paged / held row written with it (same time, channel, kind).
        planned = {
            (row.at, channel, str(row.detail.get("kind"))): int(str(row.detail.get("tier", 0))) + 1
            for row in log
            if row.action in ("paged", "held") and row.detail
            for channel in (row.detail.get("channels") or [row.channel])
        }
        for row in log:
            trail.append({"at": row.at, "action": row.action, "by": row.actor, "channel": row.channel,
                          "household": where, "rule": had})  # fmt: skip
            note = store.notification(str(row.detail.get("key"))) if row.action == "delivered" and row.detail else None
            if note is None:
                continue
            body = note.body
            kind = str(body.get("kind", ""))
            created = float(body.get("created_at", 0.0))
            pages.append({
                "at": row.at,
                "rule": str(body.get("alert", {}).get("rule", "")) or alert.rule,
                "to": tuple(str(r["id"]) for r in body.get("recipients", ())),
                "tier": planned.get((created, row.channel, kind), 0) if kind in PAGE_KINDS else 0,
                "channel": row.channel,
                "kind": kind,
                "household": where,
            })  # fmt: skip
    visits = [{"at": v.at, "household": v.household, "visitor": v.visitor, "method": v.method} for v in store.visits()]
    would = [
        {"at": w.at, "rule": w.rule, "device": w.device_id, "severity": w.severity, "action": w.action}
        for w in store.would_haves()
    ]
    return {
        "page": sorted(pages, key=lambda r: r["at"]),
        "trail": sorted(trail, key=lambda r: r["at"]),
        "visit": visits,
        "would_have": would,
    }


# ---------------------------------------------------------------------- the verdict


def verdict(
    x: Expectations,
    registry: Registry,
    timeline: list[Seen],
    found: Records,
    store: Store,
    config: SiteConfig,
    now: float,
    tz: str,
    fmt: Callable[[float], str],
) -> list[str]:
    """Every mismatch, in words: what was expected, what happened instead."""
    failures: list[str] = []
    used: set[int] = set()
    for e in x.expect:
        hit = next((i for i, s in enumerate(timeline) if i not in used and _matches(e, s, registry)), None)
        if hit is not None:
            used.add(hit)
            continue
        near = [s for s in timeline if s.rule == e.rule]
        seen_ = "; ".join(f"{s.kind} {s.rule} 级{s.severity} at {fmt(s.at)}" for s in near)
        failures.append(f"expected {e.describe(fmt)}; found {seen_ or 'nothing like it'}")
    for e in x.expect_not:
        for s in timeline:
            if _matches(e, s, registry):
                failures.append(f"must not fire: {e.describe(fmt)}; got {s.kind} at {fmt(s.at)}: {s.message_zh}")
    if x.expect_none and timeline:
        for s in timeline:
            failures.append(f"expected no alert at all; got {s.kind} {s.rule} 级{s.severity} at {fmt(s.at)}")
    for household in dict.fromkeys(e.household for e in x.expect if e.only):
        named = {e.rule for e in x.expect if e.household == household}
        for s in timeline:
            if s.household == _place(registry, household) and s.kind != "resolved" and s.rule not in named:
                failures.append(f"nothing else for {household}; got {s.kind} {s.rule} 级{s.severity} at {fmt(s.at)}")
    for w in x.wanted:
        hits = [r for r in found[w.what] if _fits(w, r)]
        if (w.count is None and hits) or len(hits) == w.count:
            continue
        alike = [r for r in found[w.what] if _fits(w, r, window=False)] or hits
        shown = "; ".join(_record(w.what, r, fmt) for r in alike[:6]) or "nothing like it"
        failures.append(f"expected {w.describe(fmt)}; found {len(hits)}: {shown}")
    for rate in x.visit_rates:
        report = build_report(config, store, rate.month, now, tz)
        off = rate.rate is not None and (report.rate is None or abs(report.rate - rate.rate) > 0.001)
        if off or (rate.visited is not None and report.visited != rate.visited):
            failures.append(
                f"expected {rate.month} visit rate {rate.rate} visited {rate.visited}; "
                f"found {report.rate} ({report.visited} of {len(report.elders)})"
            )
    counters = store.counters()
    malformed = {k: v for k, v in counters.items() if k.startswith("malformed.") or k.endswith(".bad_checksums")}
    if sum(malformed.values()) != x.malformed:
        failures.append(f"expected {x.malformed} malformed wire messages; found {sum(malformed.values())} {malformed}")
    for name, want in x.counters.items():
        if counters.get(name, 0) != want:
            failures.append(f"expected counter {name} = {want}; found {counters.get(name, 0)}")
    return failures


def _place(registry: Registry, household: str) -> str:
    h = registry.households.get(household)
    return f"{h.building}/{h.unit}/{h.number or h.id}" if h else household


def _matches(e: Expect, s: Seen, registry: Registry, window: bool = True) -> bool:
    if s.rule != e.rule or s.kind not in e.transitions:
        return False
    if e.severity is not None and s.severity != e.severity:
        return False
    if e.household and s.household != _place(registry, e.household):
        return False
    if e.subject and s.dedup_key.rsplit(":", 1)[-1] != e.subject:
        return False
    if e.device and s.device != e.device:
        return False
    if e.building and s.building != e.building:
        return False
    if e.message and e.message not in s.message_zh:
        return False
    if e.count is not None and s.count != e.count:
        return False
    return not window or e.start is None or e.end is None or e.start <= s.at <= e.end


def _fits(w: Wanted, r: Mapping[str, Any], window: bool = True) -> bool:
    for key, want in w.fields:
        got = r[key]
        if (want not in got) if isinstance(got, tuple) else (got != want):
            return False
    return not window or w.start is None or w.end is None or w.start <= r["at"] <= w.end


def _record(what: str, r: Mapping[str, Any], fmt: Callable[[float], str]) -> str:
    shown = " ".join(f"{k}={'/'.join(v) if isinstance(v, tuple) else v}" for k, v in r.items() if k != "at")
    return f"{what} {shown} at {fmt(r['at'])}"
