"""The alert path: stored events → rule engine (edge_rules) → alerts, durably.

The engine decides (raise / update / resolve, see edge_rules/README.md); this layer keeps the
alert lifecycle and makes it durable:

- It is driven from the store by a cursor. Alert changes, their outbound messages and the
  cursor are saved in one transaction, so an event accepted just before a crash still raises
  its alert after it. The rule engine's changed state is saved behind them, with a cursor of
  its own (``cursor.rules``): every minute (the gateway's housekeeping, written by a worker
  thread: ``checkpoint_behind``), and with whatever changed the engine other than an
  event (a deadline that fired, a person's resolve, a visit). Saving it with every alert, or
  every 64 changed entries, was half the bytes the gateway wrote (docs/performance.md). After a
  crash the engine is rebuilt from that state and fed the events after its cursor again
  (``restored_engine``): up to the alert cursor their decisions are saved already and dropped,
  after it they are decided as new. The engine is deterministic, so every timer resumes where
  it was. Batches that change no alert only move the alert cursor in memory.
- One open alert per dedup key (the engine's). An update folds into it (count, last seen,
  evidence): ``escalated`` / ``downgraded`` when its severity changes, ``repeated`` after
  ``repeat_window`` of quiet (notify again), else ``updated``.
- Every transition is queued in the outbox for MQTT: ``<prefix>/alerts/events`` (a stream of
  transitions) and ``<prefix>/alerts/open/<id>`` (retained; emptied on resolve).
- Events from devices in test mode (``values["test"]``, marked by the store) raise nothing:
  the engine lets them calm, never alarm; a shadow engine records what they would have raised
  (gateway/alerts/shadow.py, docs/installer.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edge_rules import Context, Decision, DeviceInfo, Engine, ResidentInfo, RuleSet
from gateway.alerts.shadow import Shadow
from gateway.clock import Clock, yield_interpreter
from gateway.errors import StoreError, StoreFullError
from gateway.models import RETAINED, Alert, AlertState, Event
from gateway.site.people import People, unknown_person
from gateway.site.registry import DeviceEntry, Registry
from gateway.store import LogRow, OutboxMessage, Store, VisitRow
from gateway.store.alerts import rule_state_rows

if TYPE_CHECKING:
    from gateway.alerts.publisher import Saved

log = logging.getLogger("sensegate.alerts")

CURSOR = "alerts"
STATE_CURSOR = "rules"  # the last event the saved engine state (``rule_state``) includes
# Entries turned into dicts at a time as a checkpoint is written behind: 10,000 at once were
# some 5 MiB of dicts, alive together only to be serialised; 64 take ~0.2 ms, after which the
# worker lets other threads have the interpreter (a minute's entries are ~50 ms of work).
STATE_CHUNK = 64
TOKEN_ACTOR = "token:"  # the actor an API token acts as: token:<name>
MQTT_CHANNEL = "mqtt"
MAX_EVIDENCE = 20
# Added to an alert raised by a state found in a retained MQTT message on (re)connect
# (gateway/ingest/retained.py): the person called out should know it may not have begun just now.
RETAINED_ZH = "（网关重新连接时发现的状态，可能始于网关离线期间）"
RETAINED_EN = " (state found when the gateway reconnected; it may have begun while the gateway was offline)"


@dataclass(frozen=True, slots=True)
class Transition:
    # From rules: raised / updated / repeated / escalated / downgraded / resolved.
    # From people and the notifier: notified / escalated (a ladder tier) / acknowledged / resolved.
    kind: str
    alert: Alert
    actor: str = ""  # "rule:<id>", a person id, "token:<name>" (an API token) or "system"
    via: str = ""  # how a person's action arrived: cli / mqtt / console / api / a channel id
    detail: tuple[tuple[str, object], ...] = ()

    def log_row(self, at: float) -> LogRow:
        return LogRow(self.alert.id, at, self.kind, self.actor or "system", self.via, dict(self.detail))


class LifecycleError(ValueError):
    """A person's action that cannot apply; the message says why in words, ``reason`` in a
    stable tag: ``no_alert``, ``ambiguous``, ``already_resolved``, ``unknown_person``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class UnknownPersonError(LifecycleError):
    """The person named is not one the site config knows (gateway.site.people); ``suggestions``
    are the ids closest to what was given."""

    def __init__(self, person: str, suggestions: list[str]) -> None:
        self.person = person
        self.suggestions = suggestions
        super().__init__("unknown_person", unknown_person(person, suggestions))


def rule_context(registry: Registry) -> Context:
    """What the engine needs to know about the site, from the registry. A household's residents
    are one tuple shared by all its devices (43,000 copies at 5,000 households otherwise)."""
    shared: dict[tuple[str, ...], tuple[ResidentInfo, ...]] = {}

    def residents(entry: DeviceEntry) -> tuple[ResidentInfo, ...]:
        key = tuple(r.id for r in entry.residents)
        found = shared.get(key)
        if found is None:
            found = shared[key] = tuple(
                ResidentInfo(r.id, r.name, r.lives_alone, r.risk_tier, tuple(r.thresholds.items()))
                for r in entry.residents
            )
        return found

    return Context(
        DeviceInfo(
            e.id,
            e.family,
            household=e.config.household,
            building=e.location.building,
            location=e.location,
            residents=residents(e),
            report_interval=e.config.report_interval,
        )
        for e in registry.devices.values()
    )


def restored_engine(rules: RuleSet, clock: Clock | None, context: Context, store: Store) -> tuple[Engine, int, int]:
    """The engine as the alert path left it, with the two cursors (state, alerts): its saved
    state, then the events after the state's cursor up to the alert cursor fed again. Their
    decisions changed the alerts saved already (or nothing), so they are dropped."""
    engine = Engine(rules, clock, context, state=store.rule_state())
    at, cursor = store.cursor(STATE_CURSOR), store.cursor(CURSOR)
    fed = at
    while fed < cursor and (events := store.events_after(fed, limit=1000)):
        for ev in events:
            if ev.seq > cursor:
                break
            engine.feed(ev)
        fed = events[-1].seq
    return engine, at, cursor


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
        *,
        flap_threshold: int = 3,
        flap_window: float = 600.0,
        on_outbox: Callable[[list[OutboxMessage]], None] | None = None,
        send_early: Callable[[Sequence[tuple[str, str, str, bool]]], Saved | None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.prefix = topic_prefix
        self.rules = rules
        self.repeat_window = repeat_window
        self.notify = notify
        # The outbox messages a save queued, handed straight to the publisher: it publishes them
        # without reading them back (gateway/alerts/publisher.py).
        self.on_outbox = on_outbox
        # A rules' save (not fsync'd) hands its messages over before its commit instead: the
        # alert is on the wire while the transaction is written (publisher.py ``early``).
        self.send_early = send_early
        self.flap_threshold = flap_threshold
        self.flap_window = flap_window
        self.context = rule_context(registry)
        self.people = People(registry.config)
        # Held while the engine's state is written, from taking its changed entries to the
        # commit (``checkpoint_behind``: by a worker thread), so that state written later is
        # written after it.
        self._state_lock = threading.Lock()
        # Set while the loop waits for that lock: the checkpoint holding it stops letting other
        # threads go first, so the loop waits for its work, not for its share of the interpreter
        # (a busy loop left it ~0.2 ms in 5: seconds for a minute's entries at 6k msg/s).
        self._hurry = False
        self._load()

    def _load(self) -> None:
        """(Re)build engine and cursor from what the store holds."""
        self._take_state_lock()  # none being written behind: its engine is gone
        try:
            self.engine, self._state_cursor, self.cursor = restored_engine(
                self.rules, self.clock, self.context, self.store
            )
        finally:
            self._state_lock.release()
        self.shadow = Shadow(self.rules, self.clock, self.context, self.store)  # "would have raised"
        self._saved_cursor = self.cursor
        self._stale = False
        self._batch_raises: dict[str, int] = {}
        # Flapping alerts waiting to settle: alert id → when they resolve if nothing recurs.
        self._settling = {
            a.id: a.settle_at for a in self.store.alerts(open_only=True, limit=100_000) if a.settle_at is not None
        }

    # ------------------------------------------------------------------ driving

    @property
    def replay_from(self) -> int:
        """The saved engine state's cursor: a restart feeds the events after it again, so none
        of them may be evicted (gateway/store/disk.py)."""
        return self._state_cursor

    def catch_up(self) -> int:
        """Handle every stored event the alert path has not seen, then every deadline that
        passed meanwhile (after a crash or a power cut). Returns the number of events."""
        if self._stale:
            self._load()
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
        """Feed newly stored events to the engine; save what changed.

        Events that do not follow the cursor (another writer committed in between: the serial
        writer, a check-in from the CLI) are read from the store instead, in order, so none
        is skipped whichever writer's callback comes first."""
        fresh = [e for e in events if e.seq > self.cursor]
        if self._stale or (fresh and fresh[0].seq != self.cursor + 1):
            self.catch_up()  # the batch is in the store: catching up includes it
            return []
        return self._handle(fresh)

    def tick(self) -> list[Transition]:
        """Fire every rule deadline that has passed (absence, held, not-followed-by …)."""
        if self._stale:
            self.catch_up()
            return []
        now = self.clock.now()
        decisions = self.engine.advance(now)
        self.shadow.advance(now)
        # A deadline that fired is not among the events a restart feeds again: its state is saved.
        transitions = self._commit(decisions, self.cursor, state=True) if decisions else []
        settled = [a for a, at in self._settling.items() if at <= now]
        if settled:
            transitions += self._settle(settled)
        return transitions

    def next_deadline(self) -> float | None:
        """The next rule deadline (the shadow engine's too) or flapping alert to settle."""
        settle = min(self._settling.values(), default=None)
        due = [d for d in (self.engine.next_deadline(), self.shadow.next_deadline(), settle) if d is not None]
        return min(due, default=None)

    def _settle(self, alert_ids: Sequence[str]) -> list[Transition]:
        """Resolve flapping alerts that stayed clear for the flap window."""
        out = []
        for alert_id in alert_ids:
            alert = self.store.alert(alert_id)
            self._settling.pop(alert_id, None)
            if alert is None or not alert.is_open or alert.settle_at is None:
                continue
            done = replace(
                alert,
                state=AlertState.RESOLVED,
                resolved_at=alert.settle_at,
                resolved_by=f"rule:{alert.rule}",
                message_zh=f"{alert.settle_zh}（反复报警{alert.count}次后已稳定）",
                message_en=f"{alert.settle_en} (stable again after {alert.count} alarms)",
                settle_at=None,
            )
            out.append(Transition("resolved", done, f"rule:{alert.rule}", "", (("flapping", True),)))
        return self._save(out, durable=False) if out else []

    def checkpoint_behind(self) -> Callable[[], None] | None:
        """``checkpoint``, its state written by a worker thread: at a busy site ten seconds of
        changed entries are some 10,000 (a minute's, 20,000 or more), whose conversion and
        write took 110–145 ms on the event loop. On the loop this moves the alert cursor to
        where the engine is and takes the changed entries; it returns what the worker runs
        (None: nothing to save, or the last one is still being written). A write that fails
        leaves the store as it was, and its entries are changed ones again: the next save of
        the state takes them."""
        if self._stale:
            self.catch_up()
            return None
        if self._all_saved(self.cursor):
            return None
        if not self._state_lock.acquire(blocking=False):
            return None
        try:
            if self.cursor != self._saved_cursor:
                self._save([], durable=False)  # the alert cursor never trails the state's
            taken, position = self.engine.take_dirty(), self.cursor
        except BaseException:
            self._state_lock.release()
            raise

        def write() -> None:
            try:
                rows: list[tuple[str, str | None]] = []
                for i in range(0, len(taken), STATE_CHUNK):  # the store's form, a chunk at a time
                    rows += rule_state_rows(self.engine.stored(taken[i : i + STATE_CHUNK]))
                    self._give_way()  # the ingest's commits and the loop go on meanwhile
                # A busy minute's entries go in many short transactions (store/alerts.py), an
                # alarm's commit between any two of them.
                self.store.save_rule_state(rows, (STATE_CURSOR, position), between=self._give_way)
                self._state_cursor = position
            except BaseException as exc:
                self.engine.mark_dirty(k for k, _ in taken)  # before any later save of the state
                if not isinstance(exc, StoreError):
                    raise
                log.warning("saving the rules' state failed (saved with the next checkpoint): %s", exc)
            finally:
                self._state_lock.release()

        return write

    def _give_way(self) -> None:
        """A checkpoint written behind lets waiting threads have the interpreter, unless the
        loop waits for it to end (``_hurry``)."""
        if not self._hurry:
            yield_interpreter()

    def _take_state_lock(self) -> None:
        """Take the state lock on the loop (``_hurry`` a checkpoint that holds it)."""
        if not self._state_lock.acquire(blocking=False):
            self._hurry = True
            self._state_lock.acquire()
        self._hurry = False

    def _all_saved(self, cursor: int) -> bool:
        """Whether the store holds the engine's state and both cursors at ``cursor``."""
        return not self.engine.has_dirty() and cursor == self._saved_cursor == self._state_cursor

    def checkpoint(self, durable: bool = False) -> None:
        """Save the engine's state and both cursors where the engine is (``durable``: with an
        fsync, as the gateway stops)."""
        if self._stale:  # a save failed: the engine is ahead of the cursor; catching up saves
            self.catch_up()
            return
        self._commit([], self.cursor, durable=durable, state=True)

    # ------------------------------------------------------------------ people and the notifier

    def find(self, alert_id: str) -> Alert:
        """An alert by id or by a unique prefix of it (people type the short id from a message)."""
        alert = self.store.alert(alert_id)
        if alert is None and len(alert_id) >= 4:
            matches = self.store.alerts_by_prefix(alert_id)
            if len(matches) > 1:
                raise LifecycleError(
                    "ambiguous", f"alert id {alert_id!r} is ambiguous: {', '.join(a.id for a in matches[:5])}"
                )
            alert = matches[0] if matches else None
        if alert is None:
            raise LifecycleError("no_alert", f"no alert {alert_id!r}")
        return alert

    def check_person(self, actor: str) -> None:
        """Refuse a person the site config does not name, with the ids closest to it. An
        integration acts as ``token:<name>`` while its API token is not revoked (the console
        authenticated it; claims from the CLI and MQTT cannot name a token, see
        gateway.alerts.commands)."""
        if actor.startswith(TOKEN_ACTOR):
            token = self.store.api_token(actor[len(TOKEN_ACTOR) :])
            if token is None or not token.active:
                raise UnknownPersonError(actor, [])
            return
        if actor not in self.people:
            raise UnknownPersonError(actor, self.people.close_matches(actor))

    def acknowledge(self, alert_id: str, actor: str, via: str, note: str = "") -> Transition:
        """A person takes responsibility: the ladder stops. Acknowledging twice is harmless (the
        first one stands). ``actor`` must be a person the site knows (``UnknownPersonError``):
        an acknowledgement in the name of nobody would stop the ladder with nobody on the way."""
        self.check_person(actor)
        alert = self.find(alert_id)
        if not alert.is_open:
            raise LifecycleError("already_resolved", f"alert {alert.id} is already resolved")
        if alert.state is AlertState.ACKNOWLEDGED:
            return Transition("acknowledged", alert, actor, via, (("already", True),))
        at = self.clock.now()
        acked = replace(alert, state=AlertState.ACKNOWLEDGED, acked_by=actor, acked_at=at, acked_via=via)
        detail = (("note", note),) if note else ()
        return self._save([Transition("acknowledged", acked, actor, via, detail)])[0]

    def resolve(self, alert_id: str, actor: str, via: str, note: str = "") -> Transition:
        """A person closes the alert with a note (处置记录); the rule forgets it in the same
        transaction, so the next event raises a new alert. ``actor`` as for ``acknowledge`` (a
        rule's own resolve does not come this way)."""
        self.check_person(actor)
        alert = self.find(alert_id)
        if not alert.is_open:
            raise LifecycleError("already_resolved", f"alert {alert.id} is already resolved")
        at = self.clock.now()
        done = replace(
            alert,
            state=AlertState.RESOLVED,
            resolved_at=at,
            resolved_by=actor,
            resolve_note=note,
            acked_by=alert.acked_by or actor,
            acked_at=alert.acked_at if alert.acked_at is not None else at,
            acked_via=alert.acked_via or via,
        )
        if self._stale:
            self.catch_up()
        self.engine.close(alert.dedup_key)
        return self._save([Transition("resolved", done, actor, via, (("note", note),))], state=True)[0]

    def mark(self, alert_id: str, kind: str, detail: tuple[tuple[str, object], ...] = ()) -> Transition | None:
        """The notifier's news: ``notified`` (a channel delivered the first message) or
        ``escalated`` (nobody acknowledged: the next tier was paged). None if it changes nothing."""
        alert = self.store.alert(alert_id)
        if alert is None or not alert.is_open or alert.state is AlertState.ACKNOWLEDGED:
            return None
        at = self.clock.now()
        if kind == "notified":
            if alert.notified_at is not None:
                return None
            state = AlertState.NOTIFIED if alert.state is AlertState.RAISED else alert.state
            changed = replace(alert, state=state, notified_at=at)
        else:
            changed = replace(alert, state=AlertState.ESCALATED)
        return self._save([Transition(kind, changed, "system", "", detail)])[0]

    def close(self, dedup_key: str) -> None:
        """Forget an alert in the engine only (the rule may raise it again)."""
        self.engine.close(dedup_key)
        self.checkpoint()

    def _save(
        self,
        transitions: list[Transition],
        cursor: int | None = None,
        *,
        visits: Sequence[VisitRow] = (),
        more_cursors: Sequence[tuple[str, int]] = (),
        durable: bool = True,
        state: bool = False,
    ) -> list[Transition]:
        """Alerts, their messages and audit lines and the cursor (default: where it is) in one
        transaction, with ``state`` the engine's changed state and its cursor too; then tell
        ``notify``.

        ``durable=False`` for what the rules decided from stored events: no fsync of its own
        (gateway/store/base.py ``_tx``). A power cut can lose it only with the commits after it,
        and the alert path then replays the same events to the same alerts, under the same ids
        (``_alert_id``). A person's action is always saved with its fsync: it is answered as done."""
        at = self.clock.now()
        position = self.cursor if cursor is None else cursor
        messages = [m for t in transitions for m in self._messages(t)]
        # Replayed to the same messages if the save is lost, so they need not wait for it.
        early = self.send_early(messages) if messages and not durable and self.send_early is not None else None
        queued: list[OutboxMessage] | None = None
        if state:
            self._take_state_lock()  # after a state being written behind
        try:
            save = functools.partial(
                self.store.save_alerts,
                [t.alert for t in transitions],
                messages,
                cursor=(CURSOR, position),
                now=at,
                rule_state=self.engine.dirty() if state else (),
                visits=visits,
                more_cursors=[*more_cursors, (STATE_CURSOR, position)] if state else more_cursors,
                log=[t.log_row(at) for t in transitions],
                durable=durable,
            )
            try:
                queued = save()
            except StoreFullError:
                queued = save()  # the store has made room (docs/store.md, "A full disk"): an alert goes in
        except StoreError:
            # The engine has moved on but the disk has not: rebuild from the disk on next use.
            self._stale = True
            raise
        finally:
            if state:
                self._state_lock.release()
            if early is not None:
                early(queued)  # None: the save failed
        self.cursor = self._saved_cursor = position
        if state:
            self._state_cursor = position
        if early is None and self.on_outbox is not None and queued:
            self.on_outbox(queued)
        if self.notify is not None:
            for t in transitions:
                self.notify(t)
        return transitions

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
        more = [cursor] if cursor is not None else []
        return self._save(transitions, visits=visits, more_cursors=more, state=bool(close))

    def _handle(self, events: Sequence[Event]) -> list[Transition]:
        events = [e for e in events if e.seq > self.cursor]
        if not events:
            return []
        self.shadow.feed(events, self.engine)  # first: it starts from the engine's state before them
        decisions = [d for ev in events for d in self.engine.feed(ev)]
        retained = frozenset(e.seq for e in events if e.values.get(RETAINED) is True)
        return self._commit(decisions, events[-1].seq, quiet_ok=True, retained=retained)

    def _commit(
        self,
        decisions: list[Decision],
        cursor: int,
        quiet_ok: bool = False,
        retained: frozenset[int] = frozenset(),
        durable: bool = False,
        state: bool = False,
    ) -> list[Transition]:
        transitions = self._transitions(decisions, retained) if decisions else []
        if not transitions and quiet_ok:
            # Decisions that changed no alert (a door closing resolves nothing open) are
            # replayed to the same end after a crash: a save per batch would buy nothing.
            self.cursor = cursor  # saved at the next checkpoint
            return []
        if not transitions and self._all_saved(cursor):
            return []
        return self._save(transitions, cursor, durable=durable, state=state)

    # ------------------------------------------------------------------ decisions → alerts

    def _raised_recently(self, d: Decision, changed: dict[str, Alert]) -> int:
        """Alerts raised under this key within the flap window, this batch's included."""
        stored = self.store.raised_since(d.dedup_key, d.at - self.flap_window)
        return stored + self._batch_raises.get(d.dedup_key, 0)

    def _transitions(self, decisions: Sequence[Decision], retained: frozenset[int] = frozenset()) -> list[Transition]:
        """``retained``: seqs of events from retained MQTT messages: the audit line says so, and
        an alert they raise says so in its text."""
        changed: dict[str, Alert] = {}
        out: list[Transition] = []
        self._batch_raises = {}
        for d in decisions:
            t = self._apply(d, changed)
            if t is not None:
                detail: tuple[tuple[str, object], ...] = (("events", list(d.evidence)),)
                if retained.intersection(d.evidence):
                    detail += ((RETAINED, True),)
                    if t.kind == "raised":
                        a = t.alert
                        t = replace(
                            t,
                            alert=replace(
                                a, message_zh=a.message_zh + RETAINED_ZH, message_en=a.message_en + RETAINED_EN
                            ),
                        )
                t = replace(t, actor=f"rule:{d.rule}", detail=detail)
                changed[d.dedup_key] = t.alert
                out.append(t)
                if t.kind == "raised" and self.store.alert(t.alert.id) is None:
                    self._batch_raises[d.dedup_key] = self._batch_raises.get(d.dedup_key, 0) + 1
                if t.alert.settle_at is not None and t.alert.is_open:
                    self._settling[t.alert.id] = t.alert.settle_at
                else:
                    self._settling.pop(t.alert.id, None)
        return out

    def _open(self, key: str, changed: dict[str, Alert]) -> Alert | None:
        alert = changed.get(key) or self.store.open_alert(key)
        return None if alert is None or alert.state is AlertState.RESOLVED else alert

    def _apply(self, d: Decision, changed: dict[str, Alert]) -> Transition | None:
        current = self._open(d.dedup_key, changed)
        if d.action == "resolve":
            if current is None:
                return None
            if current.flapping or self._raised_recently(d, changed) >= self.flap_threshold:
                # 抖动: keep it open, visibly, until the condition stays clear for the window.
                return Transition(
                    "updated" if current.flapping else "flapping",
                    replace(
                        current,
                        flapping=True,
                        settle_at=d.at + self.flap_window,
                        settle_zh=d.message_zh,
                        settle_en=d.message_en,
                        last_seen=max(current.last_seen, d.at),
                        evidence=_merge(current.evidence, d.evidence),
                    ),
                )
            return Transition(
                "resolved",
                replace(
                    current,
                    state=AlertState.RESOLVED,
                    resolved_at=d.at,
                    resolved_by=f"rule:{d.rule}",
                    last_seen=max(current.last_seen, d.at),
                    evidence=_merge(current.evidence, d.evidence),
                    # The rule's resolution text (【火警解除】…); what was raised stays in the
                    # transition stream.
                    message_zh=d.message_zh,
                    message_en=d.message_en,
                ),
            )
        if current is not None and current.flapping and d.action == "raise":
            # It happened again while flapping: fold it in; it is in alarm, not settling.
            return Transition(
                "updated",
                replace(
                    current,
                    count=current.count + 1,
                    last_seen=max(current.last_seen, d.at),
                    settle_at=None,
                    evidence=_merge(current.evidence, d.evidence),
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
        # A repeat of the same severity from another rule (the radar still reporting the fall
        # after no-recovery escalated it) is folded in without rewording: the wording of the
        # rule that set the severity stands.
        keep = kind in ("updated", "repeated") and d.rule != current.rule
        return Transition(
            kind,
            replace(
                current,
                rule=current.rule if keep else d.rule,
                severity=d.severity,
                state=state,
                count=max(d.count, current.count + 1),
                last_seen=max(current.last_seen, d.at),
                evidence=_merge(current.evidence, d.evidence),
                message_zh=current.message_zh if keep else d.message_zh,
                message_en=current.message_en if keep else d.message_en,
                settle_at=None,  # in alarm again (a flapping alert settles only when clear)
            ),
        )

    def _messages(self, t: Transition) -> list[tuple[str, str, str, bool]]:
        message: dict[str, object] = {"transition": t.kind, "alert": t.alert.to_dict()}
        if t.actor:
            message["actor"] = t.actor
        if t.via:
            message["via"] = t.via
        body = json.dumps(message, ensure_ascii=False)
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


TRANSITION_ZH = {
    "raised": "报警",
    "repeated": "重复报警",
    "updated": "更新",
    "escalated": "升级",
    "downgraded": "降级",
    "notified": "已通知",
    "flapping": "反复报警(抖动)",
    "acknowledged": "已确认",
    "resolved": "已恢复",
}


def console_line(t: Transition) -> str:
    a = t.alert
    label = TRANSITION_ZH.get(t.kind, t.kind)
    tier = dict(t.detail).get("tier")
    if t.kind == "escalated" and isinstance(tier, int):
        label = f"无人确认·升级至第{tier + 1}级通知"  # the ladder, not the rule, went up
    count = f" ×{a.count}" if a.count > 1 else ""
    return f"[{a.severity.label_zh}] {label}{count} {a.message_zh} | {a.message_en} (alert {a.id})"
