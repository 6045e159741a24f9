"""What the console's site pages show, read from the config and the store: a household's card,
a building's device grid, the site overview, the device list, the alert history and the visits
of a month. Plain JSON-ready data (times as epoch seconds; words in the page's language) for the
templates and the JSON API alike; no HTTP here (``gateway.web.pages`` serves it).

Everything is cut to what the signed-in person may see, as on the board (``Scope``): duty staff
their buildings, a registered visitor the households they look after, installers and managers
everything. Something outside that is ``None`` here and "not found" on the page.

Costs, for a site of 5,000 households and 20,000 devices: a device's state is one row of
``device_state`` (never a scan of ``events``), open alerts are the board's read, past alerts
and a household's visits come through indexes (``gateway.store.history``), and the monthly
visit figures are the report's own (``gateway.care.report``: the rate is computed there only).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from edge_rules import RuleSet
from edge_rules.schedule import zone
from gateway.care.checkin import METHOD_ZH, ROLE_ZH, covered_residents, plan_interval
from gateway.care.report import TIER_ZH, VisitReport, build_report, month_bounds, render_csv, tables
from gateway.care.visits import OVERDUE_RULE
from gateway.models import Alert, Location
from gateway.site.config import Device, Household, Resident, SiteConfig, Staff, Visitor
from gateway.site.console import ConsoleRole
from gateway.site.registry import device_location
from gateway.store import AlertQuery, DeviceState, Store, VisitRow
from gateway.web.auth import Identity
from gateway.web.board import BoardReader, age_text, state_text
from gateway.web.health import PROBLEMS, SilenceLimits, problems, worst
from gateway.web.pages_text import PAGE_TEXT

DEVICES_PER_PAGE = 100
ALERTS_PER_PAGE = 50
MAX_PAGE = 1000
PAST_ALERTS = 20  # on a household card
CARD_VISITS = 20


class BadQuery(ValueError):
    """A filter the page cannot read (a month, a date): the page says which (400)."""


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    since: str = ""  # a local date, YYYY-MM-DD
    until: str = ""  # a local date, inclusive
    building: str = ""
    rule: str = ""
    severity: int | None = None
    person: str = ""
    state: str = ""  # open | resolved | ""
    text: str = ""
    page: int = 1


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    problem: str = ""  # "" every device, "any", or one of health.PROBLEMS
    building: str = ""
    family: str = ""
    text: str = ""
    page: int = 1


@dataclass(slots=True)
class _Site:
    """The config, indexed once for the pages."""

    buildings: dict[str, str] = field(default_factory=dict)  # id → name
    units: dict[str, list[str]] = field(default_factory=dict)  # building → units
    households: dict[str, Household] = field(default_factory=dict)
    households_of: dict[str, list[Household]] = field(default_factory=lambda: defaultdict(list))
    residents_of: dict[str, list[Resident]] = field(default_factory=lambda: defaultdict(list))
    devices: dict[str, Device] = field(default_factory=dict)
    devices_of: dict[str, list[Device]] = field(default_factory=lambda: defaultdict(list))  # household →
    public_of: dict[str, list[Device]] = field(default_factory=lambda: defaultdict(list))  # building →
    building_of: dict[str, str] = field(default_factory=dict)  # device → building
    location_of: dict[str, Location] = field(default_factory=dict)  # device →
    visitors_of: dict[str, list[Visitor]] = field(default_factory=lambda: defaultdict(list))  # household →


def _index(config: SiteConfig) -> _Site:
    s = _Site()
    for b in config.buildings:
        s.buildings[b.id] = b.name or f"{b.id}号楼"
        s.units[b.id] = list(b.units)
    for h in config.households:
        s.households[h.id] = h
        s.households_of[h.building].append(h)
        s.buildings.setdefault(h.building, f"{h.building}号楼")
        units = s.units.setdefault(h.building, [])
        if h.unit not in units:
            units.append(h.unit)
    for r in config.residents:
        s.residents_of[r.household].append(r)
    for d in config.devices:
        s.devices[d.id] = d
        loc = device_location(d, s.households)
        s.location_of[d.id] = loc
        s.building_of[d.id] = loc.building
        if d.household:
            s.devices_of[d.household].append(d)
        else:
            s.public_of[d.building].append(d)
    for v in config.visitors:
        for hid in v.households:
            s.visitors_of[hid].append(v)
    return s


class Scope:
    """What one identity may see of the site, as ``Identity.sees`` decides for alerts."""

    def __init__(self, who: Identity, site: _Site) -> None:
        self.who = who
        self.site = site
        mine = who.households
        self._buildings_of_mine = (
            None if mine is None else {site.households[h].building for h in mine if h in site.households}
        )

    def household(self, household: str) -> bool:
        h = self.site.households.get(household)
        if h is None:
            return False
        if self.who.households is not None:
            return household in self.who.households
        return self.who.buildings is None or h.building in self.who.buildings

    def building(self, building: str) -> bool:
        if building not in self.site.buildings:
            return False
        if self._buildings_of_mine is not None:
            return building in self._buildings_of_mine
        return self.who.buildings is None or building in self.who.buildings

    def device(self, device: Device) -> bool:
        if device.household:
            return self.household(device.household)
        # A public area's device: for whoever covers its building (a visitor's scope is households).
        return self.who.households is None and (self.who.buildings is None or device.building in self.who.buildings)

    def alert(self, alert: Alert, household: str) -> bool:
        return self.who.sees(alert, household)

    @property
    def shows_phones(self) -> bool:
        """Family phone numbers are for the people who respond, not for the installer."""
        return self.who.role is not ConsoleRole.INSTALLER


class SiteViews:
    def __init__(
        self, config: SiteConfig, store: Store, reader: BoardReader, rules: RuleSet | None, timezone: str
    ) -> None:
        self.config = config
        self.store = store
        self.reader = reader
        self.timezone = timezone
        self.tz = zone(timezone)
        self.site = _index(config)
        self.limits = SilenceLimits.from_rules(rules)
        self.rule_ids = sorted({r.id for r in (rules.rules if rules is not None else ())} | {OVERDUE_RULE})
        self.covered = {r.id for r in covered_residents(config)}
        self.people: list[tuple[str, str]] = [(s.id, s.name) for s in config.staff] + [
            (v.id, v.name) for v in config.visitors
        ]

    def scope(self, who: Identity) -> Scope:
        return Scope(who, self.site)

    # ------------------------------------------------------------------ rows

    def _device_row(self, d: Device, state: DeviceState | None, lang: str, now: float) -> dict[str, Any]:
        p = PAGE_TEXT[lang]
        found = problems(d, state, now, self.limits)
        loc = self.site.location_of[d.id]
        s = state or DeviceState(d.id)
        silent = ""
        if "silent" in found:
            silent = (
                p["never_reported"]
                if s.last_seen is None
                else p["silent_for"].format(age=age_text(now - s.last_seen, lang))
            )
        return {
            "id": d.id,
            "family": d.family,
            "family_label": p["families"].get(d.family, d.family),
            "model": d.model,
            "room": d.room,
            "building": loc.building,
            "household": d.household,
            "place": loc.label_zh() if lang == "zh" else loc.label_en(),
            "state": s.state,
            "state_label": p["states"].get(s.state, s.state) if s.state else "",
            "state_at": s.state_at,
            "last_seen": s.last_seen,
            "last_kind": s.last_kind,
            "online": s.online,
            "battery": s.battery,
            "battery_low": s.battery_low,
            "link_quality": s.link_quality,
            "tamper": s.tamper,
            "fault": s.fault,
            "activity_at": s.activity_at,
            "report_interval": d.report_interval,
            "silent_after": self.limits.limit(d),
            "silent_text": silent,
            "problems": list(found),
            "problem_labels": [p["problem_names"][x] for x in found],
            "status": worst(found),
        }

    def _alert_row(self, a: Alert, household: str, lang: str) -> dict[str, Any]:
        zh = lang == "zh"
        return {
            "id": a.id,
            "rule": a.rule,
            "severity": int(a.severity),
            "severity_label": a.severity.label_zh if zh else a.severity.label_en,
            "state": a.state.value,
            "state_label": state_text(a.state, lang),
            "open": a.is_open,
            "message": a.message_zh if zh else a.message_en,
            "place": a.location.label_zh() if zh else a.location.label_en(),
            "building": a.location.building,
            "household": household,
            "device_id": a.device_id,
            "raised_at": a.raised_at,
            "resolved_at": a.resolved_at,
            "acked_by": a.acked_by,
            "acked_by_name": self.reader.actor_name(a.acked_by, lang) if a.acked_by else "",
            "resolved_by": a.resolved_by,
            "resolved_by_name": self.reader.actor_name(a.resolved_by, lang) if a.resolved_by else "",
            "resolve_note": a.resolve_note,
        }

    def _open_alerts(self, scope: Scope) -> list[tuple[Alert, str]]:
        """The open alerts ``scope`` sees, with their households, most severe and oldest first."""
        out = []
        for a in self.store.alerts(open_only=True, limit=10_000):
            household = self.reader.household_of(a)
            if scope.alert(a, household):
                out.append((a, household))
        out.sort(key=lambda x: (int(x[0].severity), x[0].raised_at))
        return out

    def _health_counts(self, found: Iterable[Sequence[str]]) -> dict[str, int]:
        """Devices, those online (not offline, not silent) and per problem, from each device's problems."""
        counts: Counter[str] = Counter()
        for problems_of in found:
            counts["devices"] += 1
            if "offline" not in problems_of and "silent" not in problems_of:
                counts["online"] += 1
            counts.update(problems_of)
        return {k: counts.get(k, 0) for k in ("devices", "online", *PROBLEMS)}

    def _label(self, h: Household) -> str:
        building = self.site.buildings.get(h.building, h.building)
        return f"{building}{h.unit + '单元' if h.unit else ''}{h.number or h.id}室"

    # ------------------------------------------------------------------ household card

    def household(self, who: Identity, household: str, lang: str, now: float) -> dict[str, Any] | None:
        scope = self.scope(who)
        if not scope.household(household):
            return None
        p = PAGE_TEXT[lang]
        h = self.site.households[household]
        residents = self.site.residents_of.get(household, [])
        devices = self.site.devices_of.get(household, [])
        states = self.store.device_states([d.id for d in devices])
        device_rows = [self._device_row(d, states.get(d.id), lang, now) for d in devices]
        activity = [s.activity_at for s in states.values() if s.activity_at is not None]
        visits = self.store.household_visits(household, CARD_VISITS)
        open_rows = [self._alert_row(a, hh, lang) for a, hh in self._open_alerts(scope) if hh == household]
        past = self.store.find_alerts(
            AlertQuery(state="resolved", devices=[d.id for d in devices], residents=[r.id for r in residents]),
            limit=PAST_ALERTS * 2,
        )
        mine = [a for a in past if self.reader.household_of(a) == household][:PAST_ALERTS]
        past_rows = [self._alert_row(a, household, lang) for a in mine]
        phones = scope.shows_phones
        resident_rows = []
        for r in residents:
            last = next((v.at for v in visits if r.id in v.residents), None)
            resident_rows.append(
                {
                    "id": r.id,
                    "name": r.name,
                    "lives_alone": r.lives_alone,
                    "risk_tier": r.risk_tier,
                    "risk_label": p["tiers"][r.risk_tier],
                    "covered": r.id in self.covered,
                    "plan_days": round(plan_interval(self.config, r) / 86_400, 1) if r.id in self.covered else None,
                    "last_visit": last,
                    "overdue": self.store.open_alert(f"{OVERDUE_RULE}:{r.id}") is not None,
                    "contacts": [
                        {"name": c.name, "relation": c.relation, "phone": c.phone if phones else ""} for c in r.contacts
                    ],
                }
            )
        return {
            "id": h.id,
            "label": self._label(h) if lang == "zh" else Location(h.building, h.unit, h.number or h.id).label_en(),
            "building": h.building,
            "building_name": self.site.buildings.get(h.building, h.building),
            "unit": h.unit,
            "number": h.number,
            "residents": resident_rows,
            "visitors": [
                {
                    "id": v.id,
                    "name": v.name,
                    "role": v.role,
                    "role_label": ROLE_ZH.get(v.role, v.role) if lang == "zh" else v.role,
                    "phone": v.phone if phones else "",
                }
                for v in self.site.visitors_of.get(household, [])
            ],
            "phones_hidden": not phones,
            "devices": device_rows,
            "health": self._health_counts(r["problems"] for r in device_rows),
            "last_activity": max(activity) if activity else None,
            "open_alerts": open_rows,
            "past_alerts": past_rows,
            "visits": [self._visit_row(v, lang) for v in visits],
        }

    def _visit_row(self, v: VisitRow, lang: str) -> dict[str, Any]:
        names = {r.id: r.name for r in self.site.residents_of.get(v.household, [])}
        h = self.site.households.get(v.household)
        return {
            "id": v.id,
            "at": v.at,
            "household": v.household,
            "household_label": self._label(h) if h is not None else v.household,
            "residents": list(v.residents),
            "resident_names": [names.get(r, r) for r in v.residents],
            "visitor": v.visitor,
            "visitor_name": v.visitor_name or v.visitor,
            "role": v.role,
            "role_label": ROLE_ZH.get(v.role, v.role) if lang == "zh" else v.role,
            "method": v.method,
            "method_label": METHOD_ZH.get(v.method, v.method) if lang == "zh" else v.method,
            "note": v.note,
        }

    # ------------------------------------------------------------------ buildings and the site

    def building(self, who: Identity, building: str, lang: str, now: float) -> dict[str, Any] | None:
        scope = self.scope(who)
        if not scope.building(building):
            return None
        households = [h for h in self.site.households_of.get(building, []) if scope.household(h.id)]
        public = [d for d in self.site.public_of.get(building, []) if scope.device(d)]
        ids = [d.id for h in households for d in self.site.devices_of.get(h.id, [])] + [d.id for d in public]
        states = self.store.device_states(ids)
        alerts = [(a, hh) for a, hh in self._open_alerts(scope) if a.location.building == building]
        by_household: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a, hh in alerts:
            by_household[hh].append(self._alert_row(a, hh, lang))
        every: list[dict[str, Any]] = []
        units = []
        for unit in self.site.units.get(building, []):
            rows: list[dict[str, Any]] = []
            for h in sorted((h for h in households if h.unit == unit), key=lambda h: _door_order(h.number or h.id)):
                cells = [self._device_row(d, states.get(d.id), lang, now) for d in self.site.devices_of.get(h.id, [])]
                every += cells
                rows.append(
                    {
                        "id": h.id,
                        "number": h.number or h.id,
                        "devices": cells,
                        "open_alerts": by_household.get(h.id, []),
                    }
                )
            if rows:
                unit_alerts = [a for row in rows for a in row["open_alerts"]]
                unit_alerts.sort(key=lambda a: (a["severity"], a["raised_at"]))
                units.append({"unit": unit, "households": rows, "open_alerts": unit_alerts})
        public_rows = [self._device_row(d, states.get(d.id), lang, now) for d in public]
        every += public_rows
        known = {h.id for h in households}
        elsewhere = [a for hh, rows in by_household.items() if hh not in known for a in rows]
        return {
            "id": building,
            "name": self.site.buildings[building],
            "units": units,
            "public": public_rows,
            "public_alerts": elsewhere,
            "health": self._health_counts(r["problems"] for r in every),
            "open_alerts": len(alerts),
        }

    def site_overview(self, who: Identity, lang: str, now: float) -> dict[str, Any]:
        scope = self.scope(who)
        states = self.store.device_states()
        alerts = self._open_alerts(scope)
        per_building: dict[str, Counter[int]] = defaultdict(Counter)
        sitewide: Counter[int] = Counter()
        for a, _ in alerts:
            (per_building[a.location.building] if a.location.building else sitewide)[int(a.severity)] += 1
        rows: list[dict[str, Any]] = []
        for building, name in self.site.buildings.items():
            if not scope.building(building):
                continue
            households = [h for h in self.site.households_of.get(building, []) if scope.household(h.id)]
            devices = [d for h in households for d in self.site.devices_of.get(h.id, [])]
            devices += [d for d in self.site.public_of.get(building, []) if scope.device(d)]
            health = self._health_counts(problems(d, states.get(d.id), now, self.limits) for d in devices)
            counts = per_building.get(building, Counter())
            rows.append(
                {
                    "id": building,
                    "name": name,
                    "households": len(households),
                    "health": health,
                    "open_alerts": sum(counts.values()),
                    "by_severity": {str(s): counts.get(s, 0) for s in (1, 2, 3, 4)},
                }
            )
        total: Counter[str] = Counter()
        for row in rows:
            total.update(row["health"])
        return {
            "buildings": rows,
            "health": {k: total.get(k, 0) for k in ("devices", "online", *PROBLEMS)},
            "households": sum(r["households"] for r in rows),
            "open_alerts": len(alerts),
            "sitewide_alerts": sum(sitewide.values()),
            "alerts": [self._alert_row(a, hh, lang) for a, hh in alerts[:20]],
        }

    # ------------------------------------------------------------------ devices

    def device_list(self, who: Identity, f: DeviceFilter, lang: str, now: float) -> dict[str, Any]:
        if f.problem not in ("", "any", *PROBLEMS):
            raise BadQuery(f"problem: one of any, {', '.join(PROBLEMS)}")
        scope = self.scope(who)
        states = self.store.device_states()
        text = f.text.strip().lower()
        # Problems are cheap to find for 20,000 devices; the rows (labels, places) only for the page.
        chosen: list[Device] = []
        for d in self.config.devices:
            if f.building and self.site.building_of[d.id] != f.building:
                continue
            if (f.family and d.family != f.family) or not scope.device(d):
                continue
            if f.problem:
                found = problems(d, states.get(d.id), now, self.limits)
                if not found or (f.problem != "any" and f.problem not in found):
                    continue
            if text and not self._matches(d, text):
                continue
            chosen.append(d)
        page = _page(f.page)
        start = (page - 1) * DEVICES_PER_PAGE
        return {
            "total": len(chosen),
            "page": page,
            "per_page": DEVICES_PER_PAGE,
            "more": len(chosen) > start + DEVICES_PER_PAGE,
            "devices": [
                self._device_row(d, states.get(d.id), lang, now) for d in chosen[start : start + DEVICES_PER_PAGE]
            ],
            "buildings": [(b, n) for b, n in self.site.buildings.items() if scope.building(b)],
            "families": sorted({d.family for d in self.config.devices}),
        }

    def _matches(self, d: Device, text: str) -> bool:
        loc = self.site.location_of[d.id]
        return any(text in x.lower() for x in (d.id, d.room, d.model, loc.label_zh(), loc.label_en()))

    # ------------------------------------------------------------------ history

    def history(self, who: Identity, f: HistoryFilter, lang: str) -> dict[str, Any]:
        if f.state not in ("", "open", "resolved"):
            raise BadQuery("state: open or resolved")
        if f.severity is not None and f.severity not in (1, 2, 3, 4):
            raise BadQuery("severity: 1 to 4")
        since = self._day(f.since, "from") if f.since else None
        until = self._day(f.until, "to") + 86_400 if f.until else None
        scope = self.scope(who)
        if f.building and not scope.building(f.building):
            return {"alerts": [], "page": 1, "more": False}
        query = AlertQuery(
            since=since,
            until=until,
            buildings=[f.building] if f.building else who.buildings if who.households is None else None,
            sitewide=not f.building,
            rule=f.rule,
            severity=f.severity,
            person=f.person,
            state=f.state,
            text=f.text.strip()[:100],
        )
        if who.households is not None:  # a visitor: what their households' devices and residents are about
            mine = [h for h in who.households if h in self.site.households]
            query = replace(
                query,
                devices=[d.id for h in mine for d in self.site.devices_of.get(h, [])],
                residents=[r.id for h in mine for r in self.site.residents_of.get(h, [])],
            )
        page = _page(f.page)
        wanted_from, wanted = (page - 1) * ALERTS_PER_PAGE, ALERTS_PER_PAGE + 1
        found: list[dict[str, Any]] = []
        seen, offset, chunk = 0, 0, 200
        while len(found) < wanted:
            batch = self.store.find_alerts(query, offset, chunk)
            for a in batch:
                household = self.reader.household_of(a)
                if not scope.alert(a, household):
                    continue
                if seen >= wanted_from:
                    found.append(self._alert_row(a, household, lang))
                    if len(found) == wanted:
                        break
                seen += 1
            if len(batch) < chunk:
                break
            offset += chunk
        return {"alerts": found[:ALERTS_PER_PAGE], "page": page, "more": len(found) > ALERTS_PER_PAGE}

    def _day(self, text: str, name: str) -> float:
        try:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=self.tz).timestamp()
        except ValueError:
            raise BadQuery(f"{name}: a date such as 2026-11-03, not {text[:20]!r}") from None

    # ------------------------------------------------------------------ visits

    def this_month(self, now: float) -> str:
        return datetime.fromtimestamp(now, self.tz).strftime("%Y-%m")

    def _report(self, scope: Scope, month: str, now: float) -> VisitReport:
        try:
            month_bounds(month, self.timezone)
        except ValueError as exc:
            raise BadQuery(f"month: {exc}") from None
        report = build_report(self.config, self.store, month, now, self.timezone)
        return replace(report, elders=tuple(e for e in report.elders if scope.household(e.resident.household)))

    def visits(self, who: Identity, month: str, lang: str, now: float) -> dict[str, Any]:
        scope = self.scope(who)
        report = self._report(scope, month, now)
        (_, elder_cells), _ = tables(report, "zh" if lang == "zh" else "en")
        elders = []
        for e, cells in zip(report.elders, elder_cells, strict=True):
            r = e.resident
            elders.append(
                {
                    "id": r.id,
                    "name": r.name,
                    "household": r.household,
                    "household_label": e.household_label,
                    "risk_tier": r.risk_tier,
                    "risk_label": TIER_ZH[r.risk_tier] if lang == "zh" else r.risk_tier,
                    "plan_days": round(e.interval / 86_400, 1),
                    "visits": len(e.visits),
                    "last_visit": max((v.at for v in e.visits), default=None),
                    "gaps": cells[-1],
                }
            )
        workers = []
        candidates: list[tuple[str, str, str, Sequence[str] | None, Sequence[str] | None]] = [
            (v.id, v.name, v.role, v.households, None) for v in self.config.visitors
        ] + [(s.id, s.name, s.role, None, s.buildings or None) for s in self.config.staff if _community_worker(s)]
        for person, name, role, households, buildings in candidates:
            theirs = tuple(
                e
                for e in report.elders
                if (households is not None and e.resident.household in households)
                or (
                    households is None
                    and (buildings is None or self.site.households[e.resident.household].building in buildings)
                )
            )
            if not theirs:
                continue
            sub = replace(report, elders=theirs)
            made = {v.id for e in report.elders for v in e.visits if v.visitor == person}
            workers.append(
                {
                    "id": person,
                    "name": name,
                    "role": role,
                    "role_label": ROLE_ZH.get(role, role) if lang == "zh" else role,
                    "elders": len(theirs),
                    "visited": sub.visited,
                    "rate": sub.rate,
                    "visits_made": len(made),
                }
            )
        seen: set[int] = set()
        records = []
        for e in report.elders:
            for v in e.visits:
                if v.id not in seen:
                    seen.add(v.id)
                    records.append(self._visit_row(v, lang))
        records.sort(key=lambda v: (-v["at"], -v["id"]))
        return {
            "month": report.month,
            "start": report.start,
            "end": report.end,
            "due": len(report.elders),
            "visited": report.visited,
            "rate": report.rate,
            "missed": [e for e in elders if not e["visits"]],
            "workers": workers,
            "elders": elders,
            "records": records,
        }

    def visits_csv(self, who: Identity, month: str, part: str, lang: str, now: float) -> tuple[str, str]:
        """(file name, CSV text with a BOM for Excel): the report's own CSV, cut to the scope."""
        if part not in ("elders", "visits"):
            raise BadQuery("part: elders or visits")
        report = self._report(self.scope(who), month, now)
        elders, visits = render_csv(report, "zh" if lang == "zh" else "en")
        name = f"visit-report-{report.month}.csv" if part == "elders" else f"visits-{report.month}.csv"
        return name, "\ufeff" + (elders if part == "elders" else visits)

    def visits_print(self, who: Identity, month: str, lang: str, now: float) -> dict[str, Any]:
        """The report as tables of text (the CSV's), for the print page."""
        report = self._report(self.scope(who), month, now)
        (head, rows), (vhead, vrows) = tables(report, "zh" if lang == "zh" else "en")
        return {
            "month": report.month,
            "due": len(report.elders),
            "visited": report.visited,
            "rate": report.rate,
            "missed": [f"{e.resident.name}（{e.household_label}）" for e in report.elders if not e.visits],
            "head": head,
            "rows": rows,
            "vhead": vhead,
            "vrows": vrows,
        }


def _community_worker(s: Staff) -> bool:
    return s.role == "community_worker"


def _page(value: int) -> int:
    return min(max(1, value), MAX_PAGE)


def _door_order(number: str) -> tuple[int, str]:
    digits = "".join(c for c in number if c.isdigit())
    return (int(digits) if digits else 0, number)


def local_time(t: float | None, tz: str) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%d %H:%M")


def month_before(month: str) -> str:
    first = datetime.strptime(month, "%Y-%m")
    return (first - timedelta(days=1)).strftime("%Y-%m")


def month_after(month: str) -> str:
    first = datetime.strptime(month, "%Y-%m")
    return (first + timedelta(days=32)).strftime("%Y-%m")
