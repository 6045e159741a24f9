"""The alert path: stored events → rule engine (edge_rules) → alerts, durably.

The engine decides (raise / update / resolve, see edge_rules/README.md); this layer keeps the
alert lifecycle and makes it durable:

- It is driven from the store by a cursor. Alert changes, their outbound messages, the rule
  engine's changed state and the cursor are saved in one transaction, so an event accepted
  just before a crash still raises its alert after it, and every timer resumes where it was.
  Batches that change no alert only move cursor and engine state in memory; ``checkpoint``
  saves them every few seconds (replaying them after a crash is harmless: the engine is
  deterministic and they decide nothing again).
- One open alert per dedup key (the engine's). An update folds into it (count, last seen,
  evidence): ``escalated`` / ``downgraded`` when its severity changes, ``repeated`` after
  ``repeat_window`` of quiet (notify again), else ``updated``.
- Every transition is queued in the outbox for MQTT: ``<prefix>/alerts/events`` (a stream of
  transitions) and ``<prefix>/alerts/open/<id>`` (retained; emptied on resolve).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from edge_rules import Context, Decision, DeviceInfo, Engine, ResidentInfo, RuleSet
from gateway.clock import Clock
from gateway.errors import StoreError
from gateway.models import Alert, AlertState, Event
from gateway.registry import Registry
from gateway.store import Store, VisitRow

log = logging.getLogger("sensegate.alerts")

CURSOR = "alerts"
MQTT_CHANNEL = "mqtt"
MAX_EVIDENCE = 20


@dataclass(frozen=True, slots=True)
class Transition:
    kind: str  # "raised" | "updated" | "repeated" | "escalated" | "downgraded" | "resolved"
    alert: Alert


def rule_context(registry: Registry) -> Context:
    """What the engine needs to know about the site, from the registry."""
    return Context(
        DeviceInfo(
            e.id,
            e.family,
            household=e.config.household,
            building=e.location.building,
            location=e.location,
            residents=tuple(ResidentInfo(r.id, r.name, r.lives_alone, r.risk_tier) for r in e.residents),
            report_interval=e.config.report_interval,
        )
        for e in registry.devices.values()
    )


class AlertPath:
    def __init__(
        self,
        registry: Registry,
        store: Store,
        clock: Clock,
        topic_prefix: str,
        rules: RuleSet,
        repeat_window: float = 600.0,
        notify: Callable[[Transition], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.prefix = topic_prefix
        self.rules = rules
        self.repeat_window = repeat_window
        self.notify = notify
        self.context = rule_context(registry)
        self._load()

    def _load(self) -> None:
        """(Re)build engine and cursor from what the store holds."""
        self.engine = Engine(self.rules, self.clock, self.context, state=self.store.rule_state())
        self.cursor = self.store.cursor(CURSOR)
        self._saved_cursor = self.cursor
        self._stale = False

    # ------------------------------------------------------------------ driving

    def catch_up(self) -> int:
        """Handle every stored event the alert path has not seen, then every deadline that
        passed meanwhile (after a crash or a power cut). Returns the number of events."""
        handled = 0
        while True:
            events = self.store.events_after(self.cursor, limit=1000)
            if not events:
                break
            self._handle(events)
            handled += len(events)
        self.tick()
        self.checkpoint()
        return handled

    def process(self, events: Sequence[Event]) -> list[Transition]:
        """Feed newly stored events to the engine; save what changed."""
        if self._stale:
            self.catch_up()  # the batch is in the store: catching up includes it
            return []
        return self._handle(events)

    def tick(self) -> list[Transition]:
        """Fire every rule deadline that has passed (absence, held, not-followed-by …)."""
        if self._stale:
            self.catch_up()
            return []
        decisions = self.engine.advance(self.clock.now())
        return self._commit(decisions, self.cursor) if decisions else []

    def checkpoint(self) -> None:
        """Save engine state and cursor moved by batches that changed no alert."""
        self._commit([], self.cursor)

    def close(self, dedup_key: str) -> None:
        """A person resolved the alert (later: acknowledgement and resolution by people)."""
        self.engine.close(dedup_key)
        self.checkpoint()

    def external(
        self,
        decisions: Sequence[Decision],
        *,
        close: Sequence[str] = (),
        visits: Sequence[VisitRow] = (),
        cursor: tuple[str, int] | None = None,
    ) -> list[Transition]:
        """Decisions made outside the engine (visit tracking, docs/visits.md), saved like the
        engine's: alerts, messages, the engine's state and the alert cursor in one transaction,
        with ``visits`` and another ``cursor``. ``close`` are engine dedup keys to forget in
        that same transaction (a welfare alert a visit resolved)."""
        if self._stale:
            self.catch_up()
        for key in close:
            self.engine.close(key)
        transitions = self._transitions(decisions)
        messages = [m for t in transitions for m in self._messages(t)]
        try:
            self.store.save_alerts(
                [t.alert for t in transitions],
                messages,
                cursor=(CURSOR, self.cursor),
                now=self.clock.now(),
                rule_state=self.engine.dirty(),
                visits=visits,
                more_cursors=[cursor] if cursor is not None else (),
            )
        except StoreError:
            self._stale = True
            raise
        self._saved_cursor = self.cursor
        if self.notify is not None:
            for t in transitions:
                self.notify(t)
        return transitions

    def _handle(self, events: Sequence[Event]) -> list[Transition]:
        events = [e for e in events if e.seq > self.cursor]
        if not events:
            return []
        decisions = [d for ev in events for d in self.engine.feed(ev)]
        return self._commit(decisions, events[-1].seq, quiet_ok=True)

    def _commit(self, decisions: list[Decision], cursor: int, quiet_ok: bool = False) -> list[Transition]:
        if not decisions and quiet_ok:
            self.cursor = cursor  # saved at the next checkpoint
            return []
        transitions = self._transitions(decisions)
        state = self.engine.dirty()
        if not transitions and not state and cursor == self._saved_cursor:
            return []
        messages = [m for t in transitions for m in self._messages(t)]
        try:
            self.store.save_alerts(
                [t.alert for t in transitions],
                messages,
                cursor=(CURSOR, cursor),
                now=self.clock.now(),
                rule_state=state,
            )
        except StoreError:
            # The engine has moved on but the disk has not: rebuild from the disk on next use.
            self._stale = True
            raise
        self.cursor = self._saved_cursor = cursor
        if self.notify is not None:
            for t in transitions:
                self.notify(t)
        return transitions

    # ------------------------------------------------------------------ decisions → alerts

    def _transitions(self, decisions: Sequence[Decision]) -> list[Transition]:
        changed: dict[str, Alert] = {}
        out: list[Transition] = []
        for d in decisions:
            t = self._apply(d, changed)
            if t is not None:
                changed[d.dedup_key] = t.alert
                out.append(t)
        return out

    def _open(self, key: str, changed: dict[str, Alert]) -> Alert | None:
        alert = changed.get(key) or self.store.open_alert(key)
        return None if alert is None or alert.state is AlertState.RESOLVED else alert

    def _apply(self, d: Decision, changed: dict[str, Alert]) -> Transition | None:
        current = self._open(d.dedup_key, changed)
        if d.action == "resolve":
            if current is None:
                return None
            return Transition(
                "resolved",
                replace(
                    current,
                    state=AlertState.RESOLVED,
                    resolved_at=d.at,
                    last_seen=max(current.last_seen, d.at),
                    evidence=_merge(current.evidence, d.evidence),
                    # The rule's resolution text (【火警解除】…); what was raised stays in the
                    # transition stream.
                    message_zh=d.message_zh,
                    message_en=d.message_en,
                ),
            )
        if d.action == "raise" or current is None:
            first = d.evidence[0] if d.evidence else round(d.at * 1000)
            # An event-triggered alert is located at its device (room included: 卫生间);
            # a deadline-triggered one (no activity …) at its subject.
            device = self.registry.devices.get(d.subject.device) if d.evidence else None
            location = device.location if device is not None else d.subject.location
            return Transition(
                "raised",
                Alert(
                    id=_alert_id(d.dedup_key, first),
                    dedup_key=d.dedup_key,
                    rule=d.rule,
                    severity=d.severity,
                    state=AlertState.RAISED,
                    raised_at=d.at,
                    last_seen=d.at,
                    message_zh=d.message_zh,
                    message_en=d.message_en,
                    location=location,
                    resident=",".join(d.subject.resident_ids),
                    device_id=d.subject.device,
                    count=d.count,
                    evidence=tuple(d.evidence)[-MAX_EVIDENCE:],
                ),
            )
        if d.severity < current.severity:
            kind, state = "escalated", AlertState.ESCALATED
        elif d.severity > current.severity:
            kind, state = "downgraded", current.state
        else:
            kind = "repeated" if d.at - current.last_seen >= self.repeat_window else "updated"
            state = current.state
        return Transition(
            kind,
            replace(
                current,
                rule=d.rule,
                severity=d.severity,
                state=state,
                count=max(d.count, current.count + 1),
                last_seen=max(current.last_seen, d.at),
                evidence=_merge(current.evidence, d.evidence),
                message_zh=d.message_zh,
                message_en=d.message_en,
            ),
        )

    def _messages(self, t: Transition) -> list[tuple[str, str, str, bool]]:
        body = json.dumps({"transition": t.kind, "alert": t.alert.to_dict()}, ensure_ascii=False)
        retained = "" if t.alert.state is AlertState.RESOLVED else json.dumps(t.alert.to_dict(), ensure_ascii=False)
        return [
            (MQTT_CHANNEL, f"{self.prefix}/alerts/events", body, False),
            (MQTT_CHANNEL, f"{self.prefix}/alerts/open/{t.alert.id}", retained, True),
        ]


def _merge(old: tuple[int, ...], new: Sequence[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys((*old, *new)))[-MAX_EVIDENCE:]


def _alert_id(key: str, first: int) -> str:
    # Derived from the first event (or the deadline), so replaying after a crash gives the same id.
    return hashlib.sha1(f"{key}#{first}".encode()).hexdigest()[:12]


def console_line(t: Transition) -> str:
    a = t.alert
    label = {
        "raised": "报警",
        "repeated": "重复报警",
        "updated": "更新",
        "escalated": "升级",
        "downgraded": "降级",
        "resolved": "已恢复",
    }[t.kind]
    count = f" ×{a.count}" if a.count > 1 else ""
    return f"[{a.severity.label_zh}] {label}{count} {a.message_zh} | {a.message_en} (alert {a.id})"
