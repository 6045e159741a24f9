"""The foundation's alert path: SOS, fall, smoke and gas events raise alerts.

It is deliberately small — the rule engine (edge_rules/) replaces the decision part — but it
already has the properties the later work relies on:

- It is driven from the store by a durable cursor: alerts and the cursor are saved in one
  transaction, so an event accepted just before a crash still raises its alert after it.
- One open alert per dedup key (rule + device). A repeat updates the open alert (count,
  last seen, evidence); a repeat after ``repeat_window`` of quiet also re-notifies.
- A clear event (smoke gone) auto-resolves where the rule says so. Falls and SOS are never
  auto-resolved: a person has to look.
- Every transition is queued in the outbox for MQTT: ``<prefix>/alerts/events`` (a stream of
  transitions) and ``<prefix>/alerts/open/<id>`` (retained; emptied on resolve).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gateway.clock import Clock
from gateway.models import Alert, AlertState, Event, Kind, Severity
from gateway.registry import Registry
from gateway.store import Store

log = logging.getLogger("sensegate.alerts")

CURSOR = "alerts"
MQTT_CHANNEL = "mqtt"
MAX_EVIDENCE = 20


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    severity: Severity
    zh: str  # templates: {place}, {who}
    en: str
    clears: frozenset[Kind] = frozenset()  # kinds that auto-resolve the open alert


RULES: dict[Kind, AlertRule] = {
    Kind.SOS_PRESSED: AlertRule(
        "sos",
        Severity.CRITICAL,
        "【紧急呼叫】{place}{who}按下紧急呼叫按钮，请立即处置",
        "SOS pressed at {place}{who_en}",
    ),
    Kind.FALL_DETECTED: AlertRule(
        "fall",
        Severity.CRITICAL,
        "【跌倒报警】{place}{who}检测到跌倒，请立即处置",
        "Fall detected at {place}{who_en}",
    ),
    Kind.FALL_SUSPECTED: AlertRule(
        "fall_suspected",
        Severity.SERIOUS,
        "【跌倒预警】{place}{who}疑似跌倒，请尽快确认",
        "Possible fall at {place}{who_en}",
        frozenset({Kind.FALL_CLEARED}),
    ),
    Kind.SMOKE_ALARM: AlertRule(
        "smoke",
        Severity.MAJOR,
        "【火警】{place}烟感报警，请立即核实",
        "Smoke alarm at {place}{who_en}",
        frozenset({Kind.SMOKE_CLEAR}),
    ),
    Kind.GAS_ALARM: AlertRule(
        "gas",
        Severity.MAJOR,
        "【燃气报警】{place}燃气报警，请立即核实",
        "Gas alarm at {place}{who_en}",
        frozenset({Kind.GAS_CLEAR}),
    ),
}

_CLEARED_BY: dict[Kind, list[AlertRule]] = {}
for _rule in RULES.values():
    for _kind in _rule.clears:
        _CLEARED_BY.setdefault(_kind, []).append(_rule)


@dataclass(frozen=True, slots=True)
class Transition:
    kind: str  # "raised" | "repeated" | "updated" | "resolved"
    alert: Alert


class AlertPath:
    def __init__(
        self,
        registry: Registry,
        store: Store,
        clock: Clock,
        topic_prefix: str,
        repeat_window: float = 600.0,
        notify: Callable[[Transition], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.prefix = topic_prefix
        self.repeat_window = repeat_window
        self.notify = notify
        # The last event handled. Saved with every alert change; batches that change nothing
        # only move it in memory, and ``checkpoint`` saves it now and then. Replaying such
        # events after a crash is harmless: under the same alert state they change nothing again.
        self.cursor = store.cursor(CURSOR)
        self._saved_cursor = self.cursor

    def catch_up(self) -> int:
        """Handle every stored event the alert path has not seen (after a crash). Returns count."""
        handled = 0
        while True:
            events = self.store.events_after(self.cursor, limit=1000)
            if not events:
                self.checkpoint()
                return handled
            self.process(events)
            handled += len(events)

    def checkpoint(self) -> None:
        if self.cursor != self._saved_cursor:
            self.store.save_alerts([], [], cursor=(CURSOR, self.cursor), now=self.clock.now())
            self._saved_cursor = self.cursor

    def process(self, events: Sequence[Event]) -> list[Transition]:
        """Derive alert transitions from stored events; save them with the cursor atomically."""
        events = [e for e in events if e.seq > self.cursor]
        if not events:
            return []
        changed: dict[str, Alert] = {}
        transitions: list[Transition] = []
        for ev in events:
            for t in self._transitions(ev, changed):
                changed[t.alert.dedup_key] = t.alert
                transitions.append(t)
        last = events[-1].seq
        if transitions:
            messages = [m for t in transitions for m in self._messages(t)]
            self.store.save_alerts(
                [t.alert for t in transitions], messages, cursor=(CURSOR, last), now=self.clock.now()
            )
            self._saved_cursor = last
        self.cursor = last
        if self.notify is not None:
            for t in transitions:
                self.notify(t)
        return transitions

    def _open(self, key: str, changed: dict[str, Alert]) -> Alert | None:
        alert = changed.get(key) or self.store.open_alert(key)
        return None if alert is None or alert.state is AlertState.RESOLVED else alert

    def _transitions(self, ev: Event, changed: dict[str, Alert]) -> list[Transition]:
        out: list[Transition] = []
        for rule in _CLEARED_BY.get(ev.kind, ()):
            open_alert = self._open(f"{rule.name}:{ev.device_id}", changed)
            if open_alert is not None:
                resolved = replace(
                    open_alert,
                    state=AlertState.RESOLVED,
                    resolved_at=ev.event_time,
                    last_seen=ev.event_time,
                    evidence=(*open_alert.evidence, ev.seq)[-MAX_EVIDENCE:],
                )
                out.append(Transition("resolved", resolved))
        raising = RULES.get(ev.kind)
        if raising is None:
            return out
        rule = raising
        key = f"{rule.name}:{ev.device_id}"
        open_alert = self._open(key, changed)
        if open_alert is not None:
            quiet = ev.event_time - open_alert.last_seen
            updated = replace(
                open_alert,
                count=open_alert.count + 1,
                last_seen=max(open_alert.last_seen, ev.event_time),
                evidence=(*open_alert.evidence, ev.seq)[-MAX_EVIDENCE:],
            )
            out.append(Transition("repeated" if quiet >= self.repeat_window else "updated", updated))
            return out
        place, who_zh, who_en, resident = self._describe(ev)
        alert = Alert(
            id=_alert_id(key, ev.seq),
            dedup_key=key,
            rule=rule.name,
            severity=rule.severity,
            state=AlertState.RAISED,
            raised_at=ev.event_time,
            last_seen=ev.event_time,
            message_zh=rule.zh.format(place=place, who=who_zh),
            message_en=rule.en.format(place=ev.location.label_en() or ev.device_id, who_en=who_en),
            location=ev.location,
            resident=resident,
            device_id=ev.device_id,
            evidence=(ev.seq,),
        )
        out.append(Transition("raised", alert))
        return out

    def _describe(self, ev: Event) -> tuple[str, str, str, str]:
        entry = self.registry.devices.get(ev.device_id)
        residents = entry.residents if entry else ()
        place = ev.location.label_zh() or ev.device_id
        if not residents:
            return place, "", "", ""
        names = "、".join(r.name for r in residents)
        alone = len(residents) == 1 and residents[0].lives_alone
        who_zh = f" {'独居老人' if alone else '住户'}{names} "
        who_en = f" ({names}{', lives alone' if alone else ''})"
        return place, who_zh, who_en, ",".join(r.id for r in residents)

    def _messages(self, t: Transition) -> list[tuple[str, str, str, bool]]:
        body = json.dumps({"transition": t.kind, "alert": t.alert.to_dict()}, ensure_ascii=False)
        retained = "" if t.alert.state is AlertState.RESOLVED else json.dumps(t.alert.to_dict(), ensure_ascii=False)
        return [
            (MQTT_CHANNEL, f"{self.prefix}/alerts/events", body, False),
            (MQTT_CHANNEL, f"{self.prefix}/alerts/open/{t.alert.id}", retained, True),
        ]


def _alert_id(key: str, seq: int) -> str:
    # Derived from the first event, so replaying the same events after a crash gives the same id.
    return hashlib.sha1(f"{key}#{seq}".encode()).hexdigest()[:12]


def console_line(t: Transition) -> str:
    a = t.alert
    label = {"raised": "报警", "repeated": "重复报警", "updated": "更新", "resolved": "已恢复"}[t.kind]
    count = f" ×{a.count}" if a.count > 1 else ""
    return f"[{a.severity.label_zh}] {label}{count} {a.message_zh} | {a.message_en} (alert {a.id})"
