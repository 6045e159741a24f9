"""Visit tracking (探访): records, plans, the overdue alert. See docs/visits.md.

A visit (探访记录) is recorded when a registered visitor is seen at an elder's household:

- an ``access_granted`` event whose ``values.credential`` is a visitor's, at a door device of
  the household — or at a building's public door, for the households the visitor looks after
  in that building (``[visits] building_door_counts``);
- an explicit check-in: MQTT ``<topic_prefix>/visits/checkin`` (decoded by the registry into
  a ``visit`` event, stored before the PUBACK like every event) or ``sensegate visits checkin``
  (the event and its record written in one transaction).

The ``VisitTracker`` reads stored events after its own cursor, exactly like the alert path,
and saves the records it derives, the alerts a visit resolves and its cursor in one
transaction (``AlertPath.external``): a crash replays the events and a repeat is ignored
(one record per event and household).

Plans are a small scheduler whose whole state is in the store: a resident's next visit is
due at (latest recorded visit, or the time the plan started for them) + their interval. The
start time is written once (``meta``), so a restart never resets a plan; the deadline is
recomputed from the ``visits`` table, so a visit recorded by the CLI while the gateway was
down counts. An overdue visit raises ``visit_overdue:<resident>`` (逾期未探访) through the alert
path; a visit resolves it and closes the household's open welfare-check alerts
(``no_activity``, ``door_not_opened_24h``, ``door_not_opened_48h``) in the engine as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from edge_rules import Decision, ResidentInfo, RuleSet, Subject
from edge_rules.schedule import zone
from gateway.alerts.path import AlertPath, Transition, _alert_id
from gateway.care.checkin import ROLE_ZH, covered_residents, plan_interval
from gateway.clock import Clock
from gateway.models import Event, Kind, Severity
from gateway.site.checkin import CHECKIN_DEVICE, household_location
from gateway.site.config import Resident, SiteConfig, Visitor
from gateway.store import Store, VisitRow

CURSOR = "visits"
OVERDUE_RULE = "visit_overdue"
RESOLVE_RULE = "visit_recorded"
WELFARE_RULES = ("no_activity", "door_not_opened_24h", "door_not_opened_48h")
SINCE_KEY = "visits.since."


@dataclass(frozen=True, slots=True)
class Due:
    resident: Resident
    interval: float
    last_visit: float | None
    due: float


class VisitTracker:
    def __init__(self, config: SiteConfig, store: Store, clock: Clock, alerts: AlertPath, rules: RuleSet) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.tz = rules.settings.timezone
        self.households = {h.id: h for h in config.households}
        self.visitors = {v.id: v for v in config.visitors}
        self.by_credential: dict[str, Visitor] = {c: v for v in config.visitors for c in v.credentials}
        self.covered = covered_residents(config)
        self.devices = {d.id: d for d in config.devices}
        # Dedup keys of the welfare rules per household, as the engine words them.
        self._welfare = [r for r in rules.rules if r.id in WELFARE_RULES and r.enabled]
        self.cursor = store.cursor(CURSOR)
        self._since: dict[str, float] = {}  # plan start per resident, as stored
        self._next: float | None = None  # the next plan deadline; None: to be computed

    # ------------------------------------------------------------------ driving

    def catch_up(self) -> list[Transition]:
        """Handle stored events after the cursor, then the plans (start-up, or after a gap)."""
        out: list[Transition] = []
        while True:
            events = self.store.events_after(self.cursor, limit=1000)
            if not events:
                break
            out.extend(self._handle(events))
        out.extend(self.tick())
        return out

    def process(self, events: Sequence[Event] = ()) -> list[Transition]:
        """Newly stored events. When they do not follow the cursor (a check-in the CLI wrote
        in between, or nothing given), read what is missing from the store."""
        events = [e for e in events if e.seq > self.cursor]
        if not events or events[0].seq != self.cursor + 1:
            return self.catch_up()
        return [*self._handle(events), *self.tick()]

    def checkpoint(self, durable: bool = False) -> None:
        """Save the cursor moved by events that recorded no visit. Replaying quiet events is
        harmless: no fsync for the cursor alone (store/base.py ``_tx``) but as the gateway stops."""
        if self.store.cursor(CURSOR) != self.cursor:
            self.store.save_alerts([], [], more_cursors=[(CURSOR, self.cursor)], durable=durable)

    def _handle(self, events: Sequence[Event]) -> list[Transition]:
        visits = [v for ev in events for v in self.visits_from(ev)]
        last = events[-1].seq
        if not visits:
            self.cursor = last
            # Saved with the next visit or alert; replaying quiet events after a crash is harmless.
            return []
        decisions, close = self._resolutions(visits)
        out = self.alerts.external(decisions, close=close, visits=visits, cursor=(CURSOR, last))
        self.cursor = last
        self._next = None  # deadlines moved
        return out

    def visits_from(self, ev: Event) -> list[VisitRow]:
        if ev.kind is Kind.VISIT and ev.device_id == CHECKIN_DEVICE and ev.source in ("mqtt", "cli"):
            household, visitor = str(ev.values.get("household", "")), str(ev.values.get("visitor", ""))
            who = self.visitors.get(visitor)
            if household not in self.households or who is None:
                return []
            covered = tuple(r.id for r in self.covered if r.household == household)
            method = str(ev.values.get("method", "mqtt"))
            note = str(ev.values.get("note", ""))
            return [VisitRow(household, covered, visitor, ev.event_time, method, note, ev.seq, who.name, who.role, "")]
        if ev.kind is not Kind.ACCESS_GRANTED:
            return []
        who = self.by_credential.get(str(ev.values.get("credential", "")))
        device = self.devices.get(ev.device_id)
        if who is None or device is None:
            return []
        if device.household:
            houses = [device.household]
        elif device.building and self.config.visits.building_door_counts:
            houses = [h for h in who.households if self.households[h].building == device.building]
        else:
            houses = []
        out = []
        for h in houses:
            covered = tuple(r.id for r in self.covered if r.household == h)
            if covered:
                out.append(
                    VisitRow(h, covered, who.id, ev.event_time, "access", "", ev.seq, who.name, who.role, ev.device_id)
                )
        return out

    # ------------------------------------------------------------------ plans

    def plan(self) -> list[Due]:
        """Each covered resident's next due visit (starting their plan now if it has not started)."""
        now = self.clock.now()
        new = [r for r in self.covered if r.id not in self._since]
        if new:
            self.store.set_meta_default({SINCE_KEY + r.id: repr(now) for r in new})
            self._since.update({r.id: float(self.store.meta(SINCE_KEY + r.id) or now) for r in new})
        last = self.store.last_visits()
        out = []
        for r in self.covered:
            since = self._since[r.id]
            interval = plan_interval(self.config, r)
            seen = last.get(r.id)
            out.append(Due(r, interval, seen, max(since, seen or since) + interval))
        return out

    def next_deadline(self) -> float | None:
        """When the next visit comes due (None: no plan pending)."""
        if self._next is None:
            self.tick()
        return None if self._next is None or math.isinf(self._next) else self._next

    def tick(self) -> list[Transition]:
        """Raise 逾期未探访 for every plan whose visit came due without one."""
        now = self.clock.now()
        if self._next is not None and now < self._next:
            return []
        decisions = []
        upcoming = math.inf
        for d in self.plan():
            key = f"{OVERDUE_RULE}:{d.resident.id}"
            if d.due > now:
                upcoming = min(upcoming, d.due)
            elif self.store.open_alert(key) is None and self.store.alert(_alert_id(key, round(d.due * 1000))) is None:
                # (An alert with this id was raised for this deadline already, maybe closed by a person.)
                decisions.append(self._overdue(d, key))
        out = self.alerts.external(decisions) if decisions else []
        self._next = upcoming
        return out

    # ------------------------------------------------------------------ decisions

    def _subject(self, household: str, residents: Sequence[Resident], kind: str, ident: str) -> Subject:
        h = self.households[household]
        infos = tuple(ResidentInfo(r.id, r.name, r.lives_alone, r.risk_tier) for r in residents)
        return Subject(kind, ident, h.building, household, "", household_location(h), infos)

    def _overdue(self, d: Due, key: str) -> Decision:
        r = d.resident
        subject = self._subject(r.household, [r], "resident", r.id)
        place, place_en = subject.location.label_zh(), subject.location.label_en()
        every = _days(d.interval)
        last_zh = f"上次探访{self._date(d.last_visit)}" if d.last_visit is not None else "尚无探访记录"
        last_en = f"last visit {self._date(d.last_visit)}" if d.last_visit is not None else "no visit recorded"
        alone = "独居老人" if r.lives_alone else "老人"
        return Decision(
            "raise",
            OVERDUE_RULE,
            key,
            Severity(self.config.visits.overdue_severity),
            d.due,
            f"【逾期未探访】{place} {alone}{r.name}超过{every}天未获探访（{last_zh}），请社区工作人员尽快上门探访",
            f"Visit overdue: {place_en} ({r.name}) not visited within the {every}-day plan ({last_en})",
            subject,
        )

    def _resolutions(self, visits: Sequence[VisitRow]) -> tuple[list[Decision], list[str]]:
        decisions: list[Decision] = []
        close: list[str] = []
        residents = {r.id: r for r in self.config.residents}
        for v in visits:
            role = ROLE_ZH.get(v.role, v.role)
            text_zh = f"由{role}{v.visitor_name or v.visitor}于{self._date(v.at)} {self._hhmm(v.at)}上门探访"
            text_en = f"visited by {v.visitor_name or v.visitor} ({v.role}) at {self._date(v.at)} {self._hhmm(v.at)}"
            covered = [residents[r] for r in v.residents if r in residents]
            for r in covered:
                key = f"{OVERDUE_RULE}:{r.id}"
                s = self._subject(v.household, [r], "resident", r.id)
                decisions.append(
                    self._resolve(key, s, v, f"【已探访】{s.location.label_zh()} {r.name}{text_zh}", text_en)
                )
            household = self._subject(v.household, covered, "household", v.household)
            for rule in self._welfare:
                key = rule.dedup.format(
                    rule=rule.id,
                    subject=v.household,
                    per="household",
                    device="",
                    building=household.building,
                    household=v.household,
                )
                if self.alerts.engine.is_open(key) or self.store.open_alert(key) is not None:
                    close.append(key)
                    decisions.append(
                        self._resolve(
                            key,
                            household,
                            v,
                            f"【已探访】{household.location.label_zh()} {text_zh}，已上门确认",
                            text_en,
                        )
                    )
        return decisions, close

    def _resolve(self, key: str, s: Subject, v: VisitRow, zh: str, en: str) -> Decision:
        return Decision(
            "resolve", RESOLVE_RULE, key, Severity(4), v.at, zh, f"Visit recorded: {s.location.label_en()} {en}", s
        )

    def _date(self, t: float) -> str:
        return datetime.fromtimestamp(t, zone(self.tz)).strftime("%Y-%m-%d")

    def _hhmm(self, t: float) -> str:
        return datetime.fromtimestamp(t, zone(self.tz)).strftime("%H:%M")


def _days(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:g}" if days == int(days) else f"{days:.1f}"
