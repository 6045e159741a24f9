"""The rule engine: events and time in, alert decisions out. Pure and deterministic.

``feed(event)`` first fires every deadline up to the event's time, then evaluates the event
against the rules it can trigger, in rule order (edge_rules/index.py: an event no condition of a
rule can match is not shown to it; ``indexed=False`` shows it every rule, the reference the
property tests compare against). ``advance(now)`` fires every deadline ≤ now in order of
(deadline, rule order, state key). Time never goes backwards: an event older than the
engine's time is evaluated at the engine's time. "Within T" is strict: an awaited event at
exactly T is too late, a count window of 60 s holds events less than 60 s apart.

All state — the engine's time, per-rule progress (timers, windows, pending sequences, held
states) and which dedup keys are open — is a dict of JSON-able entries. ``dirty()`` hands out
what changed since its last call, so the runtime can save it in the same transaction as the
alerts and the event cursor; ``Engine(..., state=entries)`` picks up where it stopped, and
the first ``advance(now)`` fires, once and in order, every deadline that passed while down.
In memory a rule's entry is a slotted ``_Entry`` that leaves out what its key says (its rule,
type and subject: the key is ``rule:<rule>:<subject>``), with its evidence as one sequence
number or a tuple: a block has up to 100,000 pending timers, and a dict of the same fields is
three times the size (bench/bench_memory.py). ``dirty()`` and ``export()`` hand out the
store's form, a dict without what the key says either: its type, then its device only where it
is not the subject, then the rest. ``_load`` reads it back, and the fuller form written before
(with ``rule`` and ``subject``, and every ``device``) too.

A *test* event (``values["test"] is True``: a device in test mode, docs/installer.md) may calm
but never alarm: it resets absence timers (the device is alive, someone moved), ends a held
state and resolves what its clearing conditions resolve (``smoke_clear``, ``online``); it never
raises, never counts toward a count or a correlation (two detectors tested in one building are
no confirmed fire, nor is one tested and one real), never arms or completes a sequence and
never starts a held state. ``Engine(..., tests_are_real=True)`` evaluates test events like any
other: the alert path's shadow engine, which records what they would have raised.
"""

from __future__ import annotations

import heapq
import operator
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_rules.context import Context, DeviceInfo, ResidentInfo
from edge_rules.index import RuleIndex
from edge_rules.rules import (
    AbsenceRule,
    AnyRule,
    Condition,
    CorrelationRule,
    CountRule,
    HeldRule,
    MatchRule,
    RuleSet,
    SequenceRule,
    Settings,
    any_match,
    effective_duration,
)
from edge_rules.schedule import Window, format_duration_en, format_duration_zh, local_hhmm
from gateway.clock import Clock
from gateway.models import TEST, Event, Location, Scalar, Severity

State = dict[str, Any]
Action = Literal["raise", "update", "resolve"]
MAX_EVIDENCE = 20
_CLOCK_KEY = "clock"
_ALERT = "alert:"
_RULE = "rule:"
# The field a rule's entry keeps its start time under, by rule type; count and correlation
# keep a window of events instead.
_START = {"absence": "last", "sequence": "first", "held": "since"}
_WINDOW = {"count": "items", "correlation": "devices"}


def _frozen(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


@dataclass(frozen=True, slots=True)
class Subject:
    """Who or what an alert is about: ``kind`` is the rule's ``per``."""

    kind: str
    id: str
    building: str = ""
    household: str = ""
    device: str = ""
    location: Location = field(default_factory=Location)
    residents: tuple[ResidentInfo, ...] = ()

    @property
    def resident_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.residents)


@dataclass(frozen=True, slots=True)
class Decision:
    """One alert transition the engine decided on.

    ``raise``: a new alert for ``dedup_key``. ``update``: the open alert saw a repeat, or another
    rule sharing the key escalated or downgraded it (``previous_severity`` says from what).
    ``resolve``: the open alert cleared by itself.
    """

    action: Action
    rule: str
    dedup_key: str
    severity: Severity
    at: float
    message_zh: str
    message_en: str
    subject: Subject
    evidence: tuple[int, ...] = ()
    count: int = 1
    previous_severity: Severity | None = None

    def summary(self) -> tuple[str, str, str, int, float]:
        """A compact form for comparing timelines in tests and logs."""
        return (self.action, self.rule, self.dedup_key, int(self.severity), self.at)


class _Entry:
    """A rule's progress for one subject (the store's form: ``_stored``). ``start``: when it
    began (absence: the last activity, sequence: the first event, held: since when; 0 for a
    count or correlation); ``seqs``: its evidence, one sequence number or a tuple of them (an
    int alone is 48 bytes less than a tuple of one); ``fired`` None: the entry has no such
    field (count, correlation, a not_preceded_by sequence); ``window``: a count's items or a
    correlation's devices."""

    __slots__ = ("deadline", "device", "fired", "seqs", "start", "window")

    def __init__(
        self,
        device: str,
        start: float,
        seqs: int | tuple[int, ...],
        fired: bool | None,
        deadline: float | None,
        window: Any = None,
    ) -> None:
        self.device = device
        self.start = start
        self.seqs = seqs
        self.fired = fired
        self.deadline = deadline
        self.window = window

    def evidence(self) -> list[int]:
        seqs = self.seqs
        return [seqs] if isinstance(seqs, int) else list(seqs)


def _stored(kind: str, subject: str, e: _Entry) -> State:
    """An entry as the store keeps it, less what its key says (``rule:<rule>:<subject>``): a
    checkpoint writes some 20,000 of them a minute at a busy site, and the writers' lock is held
    while they are written. ``type`` stays: ``_load`` drops an entry whose rule changed type."""
    out: State = {"type": kind}
    if e.device != subject:
        out["device"] = e.device
    window = _WINDOW.get(kind)
    if window is not None:
        out[window] = e.window
    else:
        out[_START[kind]] = e.start
        out["seqs"] = e.evidence()
        if e.fired is not None:
            out["fired"] = e.fired
    out["deadline"] = e.deadline
    return out


def _restored(kind: str, subject: str, value: Mapping[str, Any]) -> _Entry:
    """``_stored``'s inverse (a field it lacks is left empty; no ``device``: the subject's)."""
    window = _WINDOW.get(kind)
    device = str(value.get("device", subject))
    if window is not None:
        return _Entry(device, 0.0, (), None, value.get("deadline"), value.get(window))
    seqs = tuple(value.get("seqs") or ())
    return _Entry(
        device,
        float(value.get(_START.get(kind, ""), 0.0)),
        seqs[0] if len(seqs) == 1 else seqs,
        value.get("fired"),
        value.get("deadline"),
    )


# A condition as the indexed engine tests it: its bit (index.py), its value comparisons and its
# schedule's compiled window — the rest of it (kind, family, place) is in the two masks.
_Test = tuple[int, tuple[tuple[str, Callable[[bool, Scalar | None], bool]], ...], Window | None]
_Tests = tuple[_Test, ...]


def _test(bit: int, cond: Condition, tz: str) -> _Test:
    where = tuple((name, cmp.compiled()) for name, cmp in cond.where.items())
    return bit, where, None if cond.schedule is None else cond.schedule.window(tz)


def _any(tests: _Tests, mask: int, values: Mapping[str, Any], t: float) -> bool:
    """``any_match`` for an event whose kind, family and device met the conditions in ``mask``."""
    for bit, where, window in tests:
        if not bit & mask:
            continue
        for name, test in where:
            if not test(name in values, values.get(name)):
                break
        else:
            if window is None or window.contains(t):
                return True
    return False


class _Device:
    """A device as the indexed engine sees it, built at its first event and kept: the subjects
    rules keep state for through it (one tuple per ``per`` and ``applies_to``: ``subjects[spec]``),
    each one's duration for each rule (window, within; by rule position) and the bits of the
    rule conditions it can meet (index.py)."""

    __slots__ = ("durations", "info", "mask", "subjects")

    def __init__(
        self,
        info: DeviceInfo,
        mask: int,
        subjects: tuple[tuple[Subject, ...], ...],
        durations: tuple[tuple[float | None, ...], ...],
    ) -> None:
        self.info = info
        self.mask = mask
        self.subjects = subjects
        self.durations = durations


class Engine:
    def __init__(
        self,
        rules: RuleSet | Sequence[AnyRule],
        clock: Clock | None = None,
        context: Context | None = None,
        *,
        state: Iterable[tuple[str, Mapping[str, Any]]] | None = None,
        settings: Settings | None = None,
        tests_are_real: bool = False,
        indexed: bool = True,
    ) -> None:
        if isinstance(rules, RuleSet):
            settings = settings or rules.settings
            rules = rules.rules
        self.settings = settings or Settings()
        self.tests_are_real = tests_are_real
        self.tz = self.settings.timezone
        self.clock = clock
        self._context = context or Context()
        self.rules: tuple[AnyRule, ...] = tuple(r for r in rules if r.enabled)
        self._index = {r.id: i for i, r in enumerate(self.rules)}
        # Rules that can see an event, by its kind and family and its device (index.py); the
        # per-device part is built at a device's first event and kept, which is sound because
        # the context cannot change under an engine (a changed site is a new Context and a new
        # Engine, as at a restart).
        self.indexed = indexed
        self._triggers = RuleIndex(self.rules)
        self._devices: dict[str, _Device] = {}
        self._durations: dict[tuple[object, ...], tuple[tuple[float | None, ...], ...]] = {}
        # The places of household, building and resident subjects: one each, not one a device.
        self._places: dict[tuple[str, ...], Location] = {}
        # Rules with the same per and applies_to have the same subjects through a device.
        specs: dict[tuple[object, ...], int] = {}
        self._spec_of: tuple[int, ...] = tuple(
            specs.setdefault((r.per, r.applies_to.lives_alone, _frozen(r.applies_to.risk_tier)), len(specs))
            for r in self.rules
        )
        self._spec_rules: tuple[AnyRule, ...] = tuple(self.rules[self._spec_of.index(i)] for i in range(len(specs)))
        self._windows: dict[str, Window | None] = {
            r.id: r.schedule.window(self.tz) if isinstance(r, AbsenceRule | HeldRule) and r.schedule else None
            for r in self.rules
        }
        # The indexed engine's tests of each rule's conditions, by field: what the two masks
        # leave of a condition (its values and schedule), for the conditions whose bit is in them.
        self._tests: tuple[dict[str, _Tests], ...] = tuple(
            {name: tuple(_test(bit, cond, self.tz) for bit, cond in group) for name, group in fields.items()}
            for fields in self._triggers.fields
        )
        self._state: dict[str, State] = {}  # the clock and the open alerts
        self._entries: dict[str, _Entry] = {}  # rule progress, by rule:<rule>:<subject>
        self._dirty: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []
        self._dedups = {r.id: _dedup_of(r) for r in self.rules}
        # Dedup keys decided on for the event being fed (not state: it lives for one feed).
        self._event_keys: set[str] | None = None
        self._now: float | None = None
        self._primed = False
        if state is not None:
            self._load(state)

    @classmethod
    def restore(
        cls,
        rules: RuleSet | Sequence[AnyRule],
        entries: Iterable[tuple[str, Mapping[str, Any]]],
        clock: Clock | None = None,
        context: Context | None = None,
    ) -> Engine:
        return cls(rules, clock, context, state=entries)

    # ------------------------------------------------------------------ public API

    @property
    def now(self) -> float | None:
        return self._now

    @property
    def context(self) -> Context:
        """The site as the engine was built with; fixed for the engine's life (read-only)."""
        return self._context

    def feed(self, event: Event) -> list[Decision]:
        t = event.received_at if self.settings.time_source == "received" else event.event_time
        heap = self._heap
        out = self._advance_to(t) if not self._primed or (heap and heap[0][0] <= t) else []
        t = max(t, self._now) if self._now is not None else t
        self._set_now(t)
        self._event_keys = set()
        calm = event.values.get(TEST) is True and not self.tests_are_real
        try:
            if self.indexed:
                device = self._devices.get(event.device_id) or self._device_of(event)
                info, subjects, durations, spec = device.info, device.subjects, device.durations, self._spec_of
                mask = device.mask & self._triggers.event_mask(event.kind, event.family)
                rules, tests = self.rules, self._tests
                for pos in self._triggers.rules(mask):
                    found = self._evaluate(
                        rules[pos], pos, event, info, t, subjects[spec[pos]], durations[pos], calm, tests[pos], mask
                    )
                    if found:
                        out.extend(found)
            else:
                info = self.context.device(event.device_id) or self._stranger(event)
                for pos, rule in enumerate(self.rules):
                    out.extend(self._evaluate(rule, pos, event, info, t, self._subjects(rule, info), calm=calm))
        finally:
            self._event_keys = None
        return out

    def rules_for(self, event: Event) -> list[AnyRule]:
        """The rules ``feed(event)`` shows the event to, in rule order (the index's choice)."""
        if not self.indexed:
            return list(self.rules)
        device = self._devices.get(event.device_id) or self._device_of(event)
        mask = device.mask & self._triggers.event_mask(event.kind, event.family)
        return [self.rules[pos] for pos in self._triggers.rules(mask)]

    def feed_all(self, events: Iterable[Event]) -> list[Decision]:
        out: list[Decision] = []
        for ev in events:
            out.extend(self.feed(ev))
        return out

    def advance(self, now: float | None = None) -> list[Decision]:
        if now is None:
            if self.clock is None:
                raise ValueError("advance() needs a time when the engine has no clock")
            now = self.clock.now()
        return self._advance_to(now)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, pos, key = heap[0]
            e = self._entries.get(key)
            if e is not None and e.deadline == deadline:
                return deadline
            heapq.heappop(heap)
            if e is not None and e.deadline is not None and e.deadline > deadline:
                heapq.heappush(heap, (e.deadline, pos, key))  # moved later (``_arm``)
        return None

    def has_dirty(self) -> bool:
        """Whether any entry changed since the last ``dirty()``."""
        return bool(self._dirty)

    def dirty(self) -> list[tuple[str, State | None]]:
        """Entries changed since the last call (None: deleted), sorted by key. Do not mutate them."""
        return self.stored(self.take_dirty())

    def take_dirty(self) -> list[tuple[str, object]]:
        """``dirty()`` as the engine holds the entries, for ``stored`` to turn into the store's
        form later, in any thread: the engine replaces an entry when it changes, never changes
        one, so what this hands out stays as it was while the engine goes on."""
        out = [(k, self._holding(k)) for k in sorted(self._dirty)]
        self._dirty.clear()
        return out

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Hand these keys out again with the next ``dirty()`` (what they were taken for was
        not saved)."""
        self._dirty.update(keys)

    def stored(self, taken: Iterable[tuple[str, object]]) -> list[tuple[str, State | None]]:
        """Entries as the engine holds them (``take_dirty``, ``_holding``), in the store's form."""
        out: list[tuple[str, State | None]] = []
        for k, e in taken:
            if isinstance(e, _Entry):
                rule, subject = _rule_and_subject(k)
                out.append((k, _stored(self.rules[self._index[rule]].type, subject, e)))
            else:  # the clock or an open alert, or None: deleted
                assert e is None or isinstance(e, dict)
                out.append((k, e))
        return out

    def export(self) -> list[tuple[str, State]]:
        """Every state entry, sorted by key (a full snapshot)."""
        out = []
        for k, entry in self.stored((k, self._holding(k)) for k in sorted([*self._state, *self._entries])):
            assert entry is not None
            out.append((k, entry))
        return out

    def close(self, dedup_key: str) -> None:
        """A person resolved the alert: forget it, so the next trigger raises a new one."""
        self._put(_ALERT + dedup_key, None)

    def is_open(self, dedup_key: str) -> bool:
        return _ALERT + dedup_key in self._state

    def open_alerts(self) -> dict[str, State]:
        return {k[len(_ALERT) :]: v for k, v in sorted(self._state.items()) if k.startswith(_ALERT)}

    def subjects(self, rule: AnyRule, device_id: str) -> list[Subject]:
        """The subjects ``rule`` keeps state for through this device (``rules explain``)."""
        info = self.context.device(device_id)
        return [] if info is None else self._subjects(rule, info)

    def timers(self) -> list[tuple[float, str, str]]:
        """Pending (deadline, rule, subject), soonest first — for ``rules explain``."""
        out = [(e.deadline, *_rule_and_subject(k)) for k, e in self._entries.items() if e.deadline is not None]
        return sorted(out)

    # ------------------------------------------------------------------ state

    def _holding(self, key: str) -> object:
        """An entry as the engine holds it: a rule's ``_Entry``, the clock's or an open alert's
        dict, or None (``stored`` makes the store's form of it)."""
        e = self._entries.get(key)
        return self._state.get(key) if e is None else e

    def _load(self, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for key, value in entries:
            value = dict(value)
            if key == _CLOCK_KEY:
                self._now = float(value["now"])
            elif key.startswith(_RULE):
                rule_id, subject = _rule_and_subject(key)
                rule = self.rules[self._index[rule_id]] if rule_id in self._index else None
                if rule is None or rule.type != value.get("type"):
                    self._dirty.add(key)  # the rule was removed or changed type: drop its state
                    continue
                e = self._entries[key] = _restored(rule.type, subject, value)
                if e.deadline is not None:
                    heapq.heappush(self._heap, (e.deadline, self._index[rule_id], key))
            elif key.startswith(_ALERT):
                self._state[key] = value
        if self._now is not None:
            self._state[_CLOCK_KEY] = {"now": self._now}

    def _put(self, key: str, value: State | None) -> None:
        """Set or (None) delete the clock or an open alert."""
        if value is None:
            if key in self._state:
                del self._state[key]
                self._dirty.add(key)
            return
        self._state[key] = value
        self._dirty.add(key)

    def _arm(self, pos: int, key: str, entry: _Entry) -> None:
        """Set the entry of the rule at ``pos`` for a subject, and its deadline."""
        old = self._entries.get(key)
        self._entries[key] = entry
        self._dirty.add(key)
        deadline = entry.deadline
        # A deadline moved later keeps its place in the heap: when that comes up, the entry is
        # pushed again at its new deadline (``_advance_to``). Most moves are later ones (an
        # absence timer put off by every event of its subject), so most cost no push; a heap
        # item always lies at or before its entry's deadline, so they fire in the same order.
        if deadline is not None and (old is None or old.deadline is None or deadline < old.deadline):
            heapq.heappush(self._heap, (deadline, pos, key))
            if len(self._heap) > 2 * len(self._entries) + 256:
                self._compact()

    def _drop(self, key: str) -> None:
        if key in self._entries:
            del self._entries[key]
            self._dirty.add(key)

    def _compact(self) -> None:
        self._heap = [
            (e.deadline, self._index[_rule_and_subject(k)[0]], k)
            for k, e in self._entries.items()
            if e.deadline is not None
        ]
        heapq.heapify(self._heap)

    def _set_now(self, t: float) -> None:
        if self._now is None or t > self._now:
            self._now = t
            self._state[_CLOCK_KEY] = {"now": t}
            self._dirty.add(_CLOCK_KEY)

    # ------------------------------------------------------------------ time

    def _advance_to(self, t: float) -> list[Decision]:
        if not self._primed:
            self._primed = True
            self._prime(t if self._now is None else max(t, self._now))
        out: list[Decision] = []
        heap = self._heap
        while heap and heap[0][0] <= t:
            deadline, idx, key = heapq.heappop(heap)
            e = self._entries.get(key)
            if e is None or e.deadline is None:
                continue  # superseded
            if e.deadline != deadline:
                if e.deadline > deadline:
                    heapq.heappush(heap, (e.deadline, idx, key))  # moved later (``_arm``)
                continue
            self._set_now(deadline)
            out.extend(self._on_deadline(self.rules[idx], idx, key, e, deadline))
        self._set_now(t)
        return out

    def _prime(self, t: float) -> None:
        """Arm absence timers for every subject that has none yet (first start, new devices)."""
        for pos, rule in enumerate(self.rules):
            if not isinstance(rule, AbsenceRule):
                continue
            for info in self.context.sorted_devices():
                if not any(c.static_match(info) for c in rule.when):
                    continue
                for subj in self._subjects(rule, info):
                    key = self._key(rule, subj)
                    if key in self._entries:
                        continue
                    duration = self._duration(rule, subj, info)
                    if duration is None:
                        continue
                    self._arm(pos, key, _Entry(info.id, t, (), False, self._deadline(rule, t, duration)))

    def _deadline(self, rule: AnyRule, t: float, duration: float) -> float | None:
        window = self._windows.get(rule.id)
        return t + duration if window is None else window.deadline(t, duration)

    def _duration(self, rule: AnyRule, subj: Subject, info: DeviceInfo | None) -> float | None:
        if (
            isinstance(rule, AbsenceRule)
            and rule.interval_multiple is not None
            and info is not None
            and info.report_interval is not None
        ):
            return rule.interval_multiple * info.report_interval
        return effective_duration(rule, subj.residents)[0]

    # ------------------------------------------------------------------ subjects

    def _subjects(self, rule: AnyRule, info: DeviceInfo) -> list[Subject]:
        residents = self._residents(rule, info)
        return [] if residents is None else self._subjects_of(rule.per, info, residents)

    @staticmethod
    def _residents(rule: AnyRule, info: DeviceInfo) -> tuple[ResidentInfo, ...] | None:
        """The device's residents the rule applies to; None: it applies to none of them."""
        residents = info.residents
        at = rule.applies_to
        if at.filters_residents:
            kept = tuple(
                r
                for r in residents
                if (at.lives_alone is None or r.lives_alone == at.lives_alone)
                and (at.risk_tier is None or r.risk_tier in at.risk_tier)
            )
            if not kept:
                return None
            residents = residents if len(kept) == len(residents) else kept  # share the tuple when all pass
        return residents

    def _subjects_of(self, per: str, info: DeviceInfo, residents: tuple[ResidentInfo, ...]) -> list[Subject]:
        loc = info.location
        building, household, device = info.building, info.household, info.id
        if per == "device":
            return [Subject("device", device, building, household, device, loc, residents)]
        if per == "household":
            if not household:
                return []
            place = self._place(loc.building, loc.unit, loc.household)
            return [Subject("household", household, building, household, device, place, residents)]
        if per == "building":
            if not building:
                return []
            return [Subject("building", building, building, household, device, self._place(loc.building), residents)]
        if per == "location":
            ident = "/".join((loc.building, loc.unit, household or loc.household, loc.room))
            return [Subject("location", ident, building, household, device, loc, residents)]
        place = self._place(loc.building, loc.unit, loc.household)
        return [Subject("resident", r.id, building, household, device, place, (r,)) for r in residents]

    def _place(self, *parts: str) -> Location:
        place = self._places.get(parts)
        if place is None:
            place = self._places[parts] = Location(*parts)
        return place

    @staticmethod
    def _stranger(event: Event) -> DeviceInfo:
        """A device the context does not know, as far as its event tells."""
        return DeviceInfo(
            id=event.device_id, family=event.family, building=event.location.building, location=event.location
        )

    def _device_of(self, event: Event) -> _Device:
        """The event's device: kept for a device of the context (which never changes), built
        afresh for each event of a device it does not know."""
        known = self.context.device(event.device_id)
        return self._view(self._stranger(event)) if known is None else self._keep(known)

    def _keep(self, info: DeviceInfo) -> _Device:
        device = self._devices[info.id] = self._view(info)
        return device

    def _view(self, info: DeviceInfo) -> _Device:
        """Subjects, durations and condition bits of a device."""
        # Rules alike but for their residents' filters (lives alone, risk tier) mostly keep the
        # same residents of a household: one subject for them (memory, and the time to make it).
        made: list[tuple[str, tuple[ResidentInfo, ...], tuple[Subject, ...]]] = []
        found: list[tuple[Subject, ...]] = []
        for rule in self._spec_rules:
            residents = self._residents(rule, info)
            if residents is None:
                found.append(())
                continue
            per = rule.per
            same = next((subj for p, r, subj in made if p == per and r is residents), None)
            if same is None:
                same = tuple(self._subjects_of(per, info, residents))
                made.append((per, residents, same))
            found.append(same)
        subjects = tuple(found)
        of = [subjects[spec] for spec in self._spec_of]  # by rule position
        mask = self._triggers.device_mask(info, (pos for pos, subj in enumerate(of) if subj))
        # The durations of the rules it can trigger (window, within; by rule position, one per
        # subject) follow from the rules, the report interval and the residents' filters, tiers
        # and own thresholds — not from who they are: devices alike share one tuple.
        alike = (
            mask,
            info.report_interval,
            tuple((r.lives_alone, r.risk_tier, r.thresholds) for r in info.residents),
        )
        durations = self._durations.get(alike)
        if durations is None:
            timed = {pos for pos in self._triggers.rules(mask) if not isinstance(self.rules[pos], MatchRule)}
            durations = self._durations[alike] = tuple(
                tuple(self._duration(self.rules[pos], s, info) for s in subj) if pos in timed else ()
                for pos, subj in enumerate(of)
            )
        return _Device(info, mask, subjects, durations)

    def _subject_again(self, rule: AnyRule, key: str, st: _Entry) -> Subject | None:
        """Rebuild the subject of a state entry from the context (at a deadline)."""
        device = st.device
        known = self.context.device(device)
        if self.indexed and known is not None:
            view = self._devices.get(device) or self._keep(known)
            subjects: Sequence[Subject] = view.subjects[self._spec_of[self._index[rule.id]]]
        else:
            subjects = self._subjects(rule, known or DeviceInfo(id=device))
        subject = _rule_and_subject(key)[1]
        return next((s for s in subjects if s.id == subject), None)

    @staticmethod
    def _key(rule: AnyRule, subj: Subject) -> str:
        return f"{_RULE}{rule.id}:{subj.id}"

    # ------------------------------------------------------------------ evaluation

    def _evaluate(
        self,
        rule: AnyRule,
        pos: int,
        ev: Event,
        info: DeviceInfo,
        t: float,
        subjects: Sequence[Subject],
        durations: Sequence[float | None] | None = None,
        calm: bool = False,
        tests: Mapping[str, _Tests] | None = None,
        mask: int = 0,
    ) -> list[Decision]:
        """``durations``: the rule's duration for each subject when known in advance (the
        indexed engine keeps them per device), else worked out here. ``calm``: a test event —
        it may reset, end and resolve, never raise, count or arm. ``tests`` and ``mask``: the
        indexed engine's compiled conditions and the bits the event and device meet; without
        them each condition is matched whole (``Condition.matches``)."""
        if not subjects:
            return []

        def hit(conds: Sequence[Condition], name: str) -> bool:
            if tests is None:
                return any_match(conds, ev, info, t, self.tz)
            return _any(tests[name], mask, ev.values, t)

        out: list[Decision] = []
        seq = ev.seq
        clears = rule.auto_resolve
        if isinstance(clears, list) and hit(clears, "auto_resolve"):
            for s in subjects:
                out.extend(self._resolve(rule, s, t, [seq]))
        if calm and rule.type != "absence" and rule.type != "held":
            return out
        if rule.type == "match":
            if hit(rule.when, "when"):
                for s in subjects:
                    out.extend(self._emit(rule, s, t, [seq], count=1))
        elif rule.type == "absence":
            if hit(rule.when, "when"):
                durations = durations or [self._duration(rule, s, info) for s in subjects]
                entries = self._entries
                for s, duration in zip(subjects, durations, strict=True):
                    key = self._key(rule, s)
                    st = entries.get(key)
                    if st is not None and st.fired and rule.auto_resolve is True:
                        out.extend(self._resolve(rule, s, t, [seq]))
                    if duration is None:
                        continue
                    self._arm(pos, key, _Entry(info.id, t, seq, False, self._deadline(rule, t, duration)))
        elif rule.type == "count":
            if hit(rule.when, "when"):
                durations = durations or [self._duration(rule, s, info) for s in subjects]
                for s, duration in zip(subjects, durations, strict=True):
                    out.extend(self._count(rule, pos, s, info, t, seq, duration))
        elif rule.type == "correlation":
            if hit(rule.when, "when"):
                durations = durations or [self._duration(rule, s, info) for s in subjects]
                for s, duration in zip(subjects, durations, strict=True):
                    out.extend(self._correlate(rule, pos, s, info, t, seq, duration))
        elif rule.type == "sequence":
            is_a = hit(rule.first, "first")
            is_b = hit(rule.then, "then")
            if is_a or is_b:
                durations = durations or [self._duration(rule, s, info) for s in subjects]
                for s, duration in zip(subjects, durations, strict=True):
                    out.extend(self._sequence(rule, pos, s, info, t, seq, is_a, is_b, duration))
        elif rule.type == "held":
            is_start = not calm and hit(rule.start, "start")
            is_end = hit(rule.end, "end")
            if is_start or is_end:
                durations = durations or [self._duration(rule, s, info) for s in subjects]
                for s, duration in zip(subjects, durations, strict=True):
                    out.extend(self._held(rule, pos, s, info, t, seq, is_start, is_end, duration))
        return out

    def _count(
        self, rule: CountRule, pos: int, s: Subject, info: DeviceInfo, t: float, seq: int, duration: float | None
    ) -> list[Decision]:
        key = self._key(rule, s)
        window = duration or rule.window
        st = self._entries.get(key)
        items = [x for x in (st.window if st else []) if x[0] > t - window] + [[t, seq]]
        items = items[-max(rule.count, MAX_EVIDENCE) :]
        self._arm(pos, key, _Entry(info.id, 0.0, (), None, t + window, items))
        if len(items) < rule.count:
            return []
        return self._emit(rule, s, t, [x[1] for x in items], count=len(items), duration=window)

    def _correlate(
        self,
        rule: CorrelationRule,
        pos: int,
        s: Subject,
        info: DeviceInfo,
        t: float,
        seq: int,
        duration: float | None,
    ) -> list[Decision]:
        key = self._key(rule, s)
        window = duration or rule.window
        st = self._entries.get(key)
        seen: dict[str, list[Any]] = {d: v for d, v in (st.window if st else {}).items() if v[0] > t - window}
        seen[info.id] = [t, seq]
        seen = dict(sorted(seen.items()))
        self._arm(pos, key, _Entry(info.id, 0.0, (), None, t + window, seen))
        if len(seen) < rule.devices:
            return []
        evidence = sorted(v[1] for v in seen.values())
        return self._emit(rule, s, t, evidence, count=len(seen), duration=window)

    def _sequence(
        self,
        rule: SequenceRule,
        pos: int,
        s: Subject,
        info: DeviceInfo,
        t: float,
        seq: int,
        is_a: bool,
        is_b: bool,
        duration: float | None,
    ) -> list[Decision]:
        key = self._key(rule, s)
        st = self._entries.get(key)
        within = duration or rule.within
        gap = rule.min_gap or 0.0
        out: list[Decision] = []
        if rule.mode == "not_preceded_by":
            if is_a:
                self._arm(pos, key, _Entry(info.id, t, seq, None, t + within))
            elif is_b and (st is None or t - st.start >= within):
                out.extend(self._emit(rule, s, t, [seq], count=1, duration=within))
            return out
        consumed = False
        if st is not None and is_b and t - st.start >= gap:
            consumed = True
            self._drop(key)
            evidence = [*st.evidence(), seq]
            if rule.mode == "followed_by":
                if t - st.start < within:
                    out.extend(self._emit(rule, s, t, evidence, count=1, duration=within))
                else:
                    consumed = False
            elif st.fired and rule.auto_resolve is True:
                out.extend(self._resolve(rule, s, t, evidence))
            st = None
        if is_a and not consumed and st is None:
            self._arm(pos, key, _Entry(info.id, t, seq, False, t + within))
        return out

    def _held(
        self,
        rule: HeldRule,
        pos: int,
        s: Subject,
        info: DeviceInfo,
        t: float,
        seq: int,
        is_start: bool,
        is_end: bool,
        duration: float | None,
    ) -> list[Decision]:
        key = self._key(rule, s)
        st = self._entries.get(key)
        if st is not None and is_end:
            self._drop(key)
            if st.fired and rule.auto_resolve is True:
                return self._resolve(rule, s, t, [*st.evidence(), seq])
            return []
        if st is None and is_start and not is_end:
            deadline = self._deadline(rule, t, duration or rule.duration)
            self._arm(pos, key, _Entry(info.id, t, seq, False, deadline))
        return []

    def _on_deadline(self, rule: AnyRule, pos: int, key: str, st: _Entry, at: float) -> list[Decision]:
        if isinstance(rule, CountRule | CorrelationRule) or (
            isinstance(rule, SequenceRule) and rule.mode in ("followed_by", "not_preceded_by")
        ):
            self._drop(key)  # the window expired: nothing to decide
            return []
        subj = self._subject_again(rule, key, st)
        if subj is None:
            self._drop(key)  # the subject no longer exists or no longer qualifies
            return []
        info = self.context.device(st.device)
        duration = self._duration(rule, subj, info)
        out = self._emit(rule, subj, at, st.evidence(), count=1, duration=duration)
        if isinstance(rule, SequenceRule) and rule.auto_resolve is not True:
            self._drop(key)
        else:
            self._arm(pos, key, _Entry(st.device, st.start, st.seqs, True, None, st.window))
        return out

    # ------------------------------------------------------------------ alerts

    def _emit(
        self,
        rule: AnyRule,
        s: Subject,
        at: float,
        evidence: Sequence[int],
        *,
        count: int,
        duration: float | None = None,
    ) -> list[Decision]:
        dedup = self._dedup(rule, s)
        akey = _ALERT + dedup
        current = self._state.get(akey)
        if self._event_keys is not None:
            # One event, one decision per alert: when several rules share a dedup key (a pack's
            # generic rule and a more specific one), the first to match words the alert and a
            # later one adds nothing — unless it makes the alert more severe.
            if dedup in self._event_keys and current is not None and rule.severity >= current["severity"]:
                return []
            self._event_keys.add(dedup)
        evidence = tuple(e for e in evidence if e)[-MAX_EVIDENCE:]
        if current is None:
            severity = Severity(rule.severity)
            self._put(akey, {"rule": rule.id, "severity": int(severity), "raised_at": at, "count": 1, "subject": s.id})
            return [self._decision("raise", rule, s, dedup, severity, at, evidence, count, duration, None)]
        previous = Severity(current["severity"])
        if rule.on_repeat == "ignore" and Severity(rule.severity) >= previous:
            return []  # folded silently unless it makes the alert more severe
        severity = Severity(rule.severity) if rule.downgrade else min(previous, Severity(rule.severity))
        total = int(current["count"]) + 1
        self._put(akey, {**current, "severity": int(severity), "count": total})
        return [self._decision("update", rule, s, dedup, severity, at, evidence, max(count, total), duration, previous)]

    def _resolve(self, rule: AnyRule, s: Subject, at: float, evidence: Sequence[int]) -> list[Decision]:
        dedup = self._dedup(rule, s)
        current = self._state.get(_ALERT + dedup)
        if current is None:
            return []
        self._put(_ALERT + dedup, None)
        ev = tuple(e for e in evidence if e)[-MAX_EVIDENCE:]
        severity = Severity(current["severity"])
        return [self._decision("resolve", rule, s, dedup, severity, at, ev, int(current["count"]), None, None)]

    def _dedup(self, rule: AnyRule, s: Subject) -> str:
        return self._dedups[rule.id](s)

    def _decision(
        self,
        action: Action,
        rule: AnyRule,
        s: Subject,
        dedup: str,
        severity: Severity,
        at: float,
        evidence: tuple[int, ...],
        count: int,
        duration: float | None,
        previous: Severity | None,
    ) -> Decision:
        template = rule.resolved_message if action == "resolve" and rule.resolved_message else rule.message
        values = self._values(rule, s, at, count, duration, severity)
        return Decision(
            action,
            rule.id,
            dedup,
            severity,
            at,
            template.zh.format_map(values),
            template.en.format_map(values),
            s,
            evidence,
            count,
            previous,
        )

    def _values(
        self, rule: AnyRule, s: Subject, at: float, count: int, duration: float | None, severity: Severity
    ) -> dict[str, str]:
        names = "、".join(r.name or r.id for r in s.residents)
        alone = bool(s.residents) and all(r.lives_alone for r in s.residents)
        if not names:
            who, who_en = "", ""
        elif alone:
            who, who_en = f"独居老人{names}", f" ({names}, lives alone)"
        else:
            who, who_en = f"住户{names}", f" ({names})"
        if duration is None:
            duration = effective_duration(rule, s.residents)[0]
        # "where": the place plus the room of the device that triggered it (卫生间, 入户门) —
        # a household-level alert about a fall must still say which room to go to.
        info = self.context.device(s.device) if s.device else None
        room = s.location.room or (info.location.room if info is not None else "")
        spot = Location(s.location.building, s.location.unit, s.location.household, room)
        return {
            "rule": rule.id,
            "subject": s.id,
            "place": s.location.label_zh() or s.id,
            "place_en": s.location.label_en() or s.id,
            "room": room,
            "where": spot.label_zh() or s.id,
            "where_en": spot.label_en() or s.id,
            "who": who,
            "who_en": who_en,
            "names": names,
            "count": str(count),
            "duration": format_duration_zh(duration) if duration else "",
            "duration_en": format_duration_en(duration) if duration else "",
            "time": local_hhmm(at, self.tz),
            "device": s.device,
            "building": s.building,
            "household": s.household,
            "severity_zh": severity.label_zh,
            "severity_en": severity.label_en,
        }


# A dedup template's placeholders (rules.DEDUP_FIELDS, but the rule's own id) by Subject field.
_DEDUP_FIELDS = {"subject": "id", "per": "kind", "device": "device", "building": "building", "household": "household"}


def _dedup_of(rule: AnyRule) -> Callable[[Subject], str]:
    """A rule's dedup template as a function of the subject: a %-format of the subject's
    fields (str.format with six keywords cost a resolve more than the rest of it, and an
    event's auto-resolve is tried for every subject); the same text, as the fields are str."""
    template = rule.dedup
    text: list[str] = []
    fields: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        text.append(literal.replace("%", "%%"))
        if name is None:
            continue
        if spec or conversion or (name != "rule" and name not in _DEDUP_FIELDS):
            return lambda s: template.format(
                rule=rule.id, subject=s.id, per=s.kind, device=s.device, building=s.building, household=s.household
            )
        if name == "rule":
            text.append(rule.id.replace("%", "%%"))
        else:
            text.append("%s")
            fields.append(_DEDUP_FIELDS[name])
    form = "".join(text)
    if not fields:
        const = form % ()
        return lambda s: const
    get = operator.attrgetter(*fields)
    if len(fields) == 1:
        return lambda s: form % (get(s),)
    return lambda s: form % get(s)


def _rule_and_subject(key: str) -> tuple[str, str]:
    """``rule:<rule>:<subject>`` → (rule, subject); a rule id has no ``:``, a subject may."""
    rule, _, subject = key[len(_RULE) :].partition(":")
    return rule, subject
