"""``sensegate rules check`` and ``sensegate rules explain``: what the rules are, and which
apply to one household with their current timers and open alerts (read from the store).

``explain`` rebuilds the engine as the alert path does after a restart (``restored_engine``:
its saved state and the events since): it never advances it and never writes, so it is safe
against a running gateway (SQLite WAL lets a reader in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from edge_rules import AnyRule, Engine, ResidentInfo, RuleSet
from edge_rules.rules import Condition, effective_duration
from edge_rules.schedule import format_duration_en, zone
from gateway.alerts.path import restored_engine, rule_context
from gateway.care.checkin import covered_residents, plan_interval
from gateway.care.visits import OVERDUE_RULE, SINCE_KEY
from gateway.site.config import Device, Resident, SiteConfig
from gateway.site.registry import Registry
from gateway.store import Store


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration_en(seconds)


def rule_line(rule: AnyRule) -> str:
    parts = [f"{rule.id}", f"type={rule.type}", f"severity={rule.severity}", f"per={rule.per}"]
    if rule.type == "absence" and rule.interval_multiple is not None:
        parts.append(f"duration={rule.interval_multiple:g}×report_interval (else {_dur(rule.duration)})")
    elif rule.base_duration() is not None:
        name = {"count": "window", "correlation": "window", "sequence": "within"}.get(rule.type, "duration")
        parts.append(f"{name}={_dur(rule.base_duration())}")
    if rule.type == "count":
        parts.append(f"count={rule.count}")
    if rule.type == "correlation":
        parts.append(f"devices={rule.devices}")
    if rule.type == "sequence":
        parts.append(f"mode={rule.mode}")
    if rule.thresholds:
        parts.append("thresholds={" + ", ".join(f"{k}={_dur(v)}" for k, v in rule.thresholds.items()) + "}")
    if rule.resident_threshold:
        parts.append(f"resident_threshold={rule.resident_threshold}")
    at = rule.applies_to
    if at.filters_residents:
        bits = [f"lives_alone={str(at.lives_alone).lower()}"] if at.lives_alone is not None else []
        bits += [f"risk_tier={','.join(at.risk_tier)}"] if at.risk_tier else []
        parts.append("applies_to={" + ", ".join(bits) + "}")
    if not rule.enabled:
        parts.append("DISABLED")
    return "  ".join(parts)


def check_rules(config: SiteConfig, rules: RuleSet) -> str:
    sources = [*config.rules.packs, *(str(f) for f in config.rules.files)]
    lines = [
        f"ok: {len(rules.rules)} rules from {', '.join(sources) or 'nothing'} (timezone {rules.settings.timezone})"
    ]
    lines += [f"  {rule_line(r)}" for r in rules.rules]
    return "\n".join(lines)


def _conditions(rule: AnyRule) -> list[Condition]:
    out: list[Condition] = []
    for name in ("when", "first", "then", "start", "end"):
        out.extend(getattr(rule, name, None) or [])
    return out


def explain_household(config: SiteConfig, store: Store, rules: RuleSet, household: str, now: float) -> str:
    houses = {h.id: h for h in config.households}
    if household not in houses:
        known = ", ".join(sorted(houses)[:8])
        raise ValueError(f"unknown household {household!r} (known: {known}{', …' if len(houses) > 8 else ''})")
    tz = rules.settings.timezone
    h = houses[household]
    registry = Registry(config)
    engine = restored_engine(rules, None, rule_context(registry), store)[0]
    devices = [d for d in config.devices if d.household == household]
    public = [d for d in config.devices if not d.household and d.building == h.building]
    residents = [r for r in config.residents if r.household == household]
    people = {r.id: r for r in config.residents}

    def when(t: float) -> str:
        left = t - now
        rel = f"in {format_duration_en(left)}" if left > 0 else f"{format_duration_en(-left) if left else '0s'} ago"
        return f"{datetime.fromtimestamp(t, zone(tz)).strftime('%Y-%m-%d %H:%M:%S')} ({rel})"

    lines = [f"household {household}: building {h.building}, unit {h.unit or '-'}, door {h.number or '-'}"]
    for r in residents:
        alone = ", lives alone" if r.lives_alone else ""
        lines.append(f"  resident {r.id} {r.name} (risk {r.risk_tier}{alone})")
    lines.append(f"  devices: {', '.join(d.id for d in devices) or 'none'}")
    lines.append(f"  building devices: {', '.join(d.id for d in public) or 'none'}")

    subjects: set[str] = set()
    lines.append("rules that apply:")
    for rule in engine.rules:
        hits: dict[str, list[str]] = {}
        for d in [*devices, *public]:
            info = engine.context.device(d.id)
            if info is None or not any(c.static_match(info) for c in _conditions(rule)):
                continue
            for s in engine.subjects(rule, d.id):
                subjects.add(s.id)
                ids = hits.setdefault(s.kind, [])
                if s.id not in ids:
                    ids.append(s.id)
        if hits:
            lines.append(f"  {rule_line(rule)}")
            lines.append("      for " + "; ".join(f"{kind} {', '.join(ids)}" for kind, ids in hits.items()))
            lines += _duration_lines(rule, [*devices, *public], engine, people)
    mine = subjects | {household, *(d.id for d in devices), *(r.id for r in residents)}
    timers = [(t, rule, subj) for t, rule, subj in engine.timers() if subj in mine]
    lines.append("timers:" if timers else "timers: none pending")
    lines += [f"  {rule} [{subj}] fires at {when(t)}" for t, rule, subj in timers]
    alerts = {k: v for k, v in engine.open_alerts().items() if v.get("subject") in mine}
    lines.append("open alerts (engine):" if alerts else "open alerts (engine): none")
    lines += [f"  {k} rule={v['rule']} severity={v['severity']} count={v['count']}" for k, v in alerts.items()]
    lines += _visit_lines(config, store, residents, when)
    return "\n".join(lines)


def _duration_lines(rule: AnyRule, devices: Sequence[Device], engine: Engine, people: dict[str, Resident]) -> list[str]:
    """The rule's effective duration for each subject whose residents can change it (risk tier,
    their own ``thresholds``), and where it comes from."""
    if not (rule.thresholds or rule.resident_threshold) or rule.base_duration() is None:
        return []
    out: list[str] = []
    for d in devices:
        for s in engine.subjects(rule, d.id):
            # from the config, so the resident's own values show whatever the engine was given
            infos = [
                ResidentInfo(r.id, r.name, r.lives_alone, r.risk_tier, tuple(r.thresholds.items()))
                for r in (people[x.id] for x in s.residents if x.id in people)
            ]
            value, source = effective_duration(rule, infos)
            if source.startswith("resident "):
                who = people[source.split(" ", 1)[1]]
                tier, tier_source = effective_duration(rule, [replace(i, thresholds=()) for i in infos])
                source = f"{who.id} {who.name}'s own thresholds.{rule.resident_threshold} ({tier_source}: {_dur(tier)})"
            elif source == "rule":
                source = "rule default"
            line = f"      {s.kind} {s.id}: {_dur(value)} — {source}"
            if line not in out:
                out.append(line)
    return out


def _visit_lines(
    config: SiteConfig, store: Store, residents: Sequence[Resident], when: Callable[[float], str]
) -> list[str]:
    covered = [r for r in covered_residents(config) if r in residents]
    if not covered:
        return ["visit plan: none (no covered resident)"]
    last = store.last_visits()
    out = ["visit plan (探访计划):"]
    for r in covered:
        interval = plan_interval(config, r)
        since_text = store.meta(SINCE_KEY + r.id)
        base = max(float(since_text), last.get(r.id, 0.0)) if since_text else last.get(r.id)
        due = f"next visit due {when(base + interval)}" if base is not None else "not started (starts with the gateway)"
        state = " — overdue alert open" if store.open_alert(f"{OVERDUE_RULE}:{r.id}") else ""
        out.append(f"  {r.id} every {format_duration_en(interval)}: {due}{state}")
    return out
