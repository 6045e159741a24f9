"""The alert path's shadow engine: what events in test mode would have raised (docs/installer.md).

The real engine lets a test event calm but never alarm (edge_rules/engine.py). To show the
installer what a press *would* have done — 二级 火警 for a detector, 一级 紧急呼叫 for a button,
确认火警 when two detectors in a building were tested within five minutes — a second engine
takes test events as real (``tests_are_real``) and its decisions that rest on a test event
are recorded in the store's ``would_have`` table instead of becoming alerts.

The shadow starts at the first test event, from a copy of the real engine's state (so a real
alarm a minute earlier counts in it, as it would have), sees every event from then on, and is
dropped an hour after the last test event (a fall's no-recovery escalation and a door held
open are still recorded). It lives in memory: after a restart it starts again at the next test
event, and the alert path's catch-up replays what the crash lost; a replayed decision adds no
second row (``WouldHave.key``).

What is recorded: raises, and updates that make an alert more severe (a fall's escalation),
whose evidence holds a test event. An absence (no activity, device silent) is not a test
press's doing — its evidence is only the last sign of life — and the real engine decides it
the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from edge_rules import Context, Decision, Engine, RuleSet
from gateway.clock import Clock
from gateway.models import TEST, TEST_MODE, Event
from gateway.store import Store, WouldHave

LINGER = 3600.0  # seconds after the last test event the shadow keeps running


class Shadow:
    def __init__(self, rules: RuleSet, clock: Clock, context: Context, store: Store) -> None:
        self.rules = rules
        self.clock = clock
        self.context = context
        self.store = store
        self.engine: Engine | None = None
        self._types = {r.id: r.type for r in rules.rules}
        self._tests: dict[int, int | None] = {}  # seq of a test event → its test mode
        self._last_test = 0.0

    def feed(self, events: Sequence[Event], real: Engine) -> None:
        """Before ``real`` sees ``events``: the shadow starts from its state at the first test."""
        if self.engine is None:
            if not any(e.values.get(TEST) is True for e in events):
                return
            state = json.loads(json.dumps(real.export()))
            self.engine = Engine(self.rules, self.clock, self.context, state=state, tests_are_real=True)
        rows: list[WouldHave] = []
        for ev in events:
            if ev.values.get(TEST) is True:
                mode = ev.values.get(TEST_MODE)
                self._tests[ev.seq] = mode if isinstance(mode, int) and not isinstance(mode, bool) else None
                self._last_test = max(self._last_test, ev.received_at)
            rows += self._record(self.engine.feed(ev))
        self.store.add_would_have(rows)

    def advance(self, now: float) -> None:
        if self.engine is None:
            return
        self.store.add_would_have(self._record(self.engine.advance(now)))
        if now - self._last_test > LINGER:
            self.engine = None
            self._tests.clear()

    def next_deadline(self) -> float | None:
        return None if self.engine is None else self.engine.next_deadline()

    def _record(self, decisions: Iterable[Decision]) -> list[WouldHave]:
        out = []
        for d in decisions:
            worse = d.action == "update" and d.previous_severity is not None and d.severity < d.previous_severity
            if not (d.action == "raise" or worse) or self._types.get(d.rule) == "absence":
                continue
            tests = [seq for seq in d.evidence if seq in self._tests]
            if not tests:
                continue  # the real engine decides this one itself
            out.append(
                WouldHave(
                    key=f"{d.dedup_key}#{d.rule}#{d.action}#{tests[0]}",
                    test_mode=self._tests[tests[-1]],
                    device_id=d.subject.device,
                    at=d.at,
                    rule=d.rule,
                    action=d.action,
                    severity=int(d.severity),
                    message_zh=d.message_zh,
                    message_en=d.message_en,
                    evidence=d.evidence,
                )
            )
        return out
