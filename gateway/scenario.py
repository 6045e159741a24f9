"""Scenario runner: a site, a script of steps at virtual times, the alerts, pages and visits expected.

``sensegate scenario run FILE`` loads a scenario TOML (format: scenarios/README.md), runs the
real store, alert path (gateway/alerts/path.py), visit tracker and notifier with the site's
rules on a virtual clock — a simulated week in well under a second — prints the alert
timeline, what people did and were paged, and a verdict.

A step is an event as the rules see it (stored with ``Store.append``), or a wire message fed
through the gateway's own ingest (``gateway.scenario_wire``), either way handed to the alert
path and the visit tracker as the runtime does; or a person's acknowledgement or resolution
(``AlertPath.acknowledge`` / ``resolve``); or an installer's test-mode command
(``gateway.testmode.service``, whose supervisor ticks with the rules). Between steps the clock stops at every rule and
visit deadline (then ``tick()``) and at every time the notifier's tasks sleep until, so
ladders climb and channels deliver — to recording twins, never out — at their own times. A
``restart`` step stops the gateway cleanly (``restart = true``) or abandons its store as a
SIGKILL or a power cut would (``restart = "kill"``), is ``down`` for a while, and boots a new
one on the same file: ``catch_up()``, then the MQTT messages the broker held meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TextIO

from edge_rules.schedule import parse_duration
from gateway.alerts.channels.base import Notification
from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath, LifecycleError, Transition
from gateway.care.visits import VisitTracker
from gateway.clock import VirtualClock
from gateway.errors import ConfigError, SenseGateError
from gateway.models import Event, Kind, Location
from gateway.scenario_expect import (
    TRANSITIONS,
    TZ,
    Expect,
    Expectations,
    Records,
    Seen,
    at_time,
    day_time,
    only,
    records,
    req,
    seen,
    tables,
    verdict,
)
from gateway.scenario_wire import WIRE_KEYS, Broker, MqttStep, Wire, WireStep, parse_wire
from gateway.site.config import SiteConfig, load_config, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.testmode.service import TestModes

__all__ = ["TRANSITIONS", "Result", "Scenario", "ScenarioError", "Seen", "load_scenario", "run_files", "run_scenario"]

SITE_KEYS = ("gateway", "buildings", "households", "residents", "devices", "rules", "alerts", "staff", "visitors",
             "visits", "roster", "channels", "ladders", "routes", "notify", "modbus_buses", "osdp_buses",
             "modbus_profiles", "test_mode")  # fmt: skip
CHECKPOINT_EVERY = 10.0  # the runtime's housekeeping saves quiet cursors this often (seconds)


class ScenarioError(SenseGateError):
    """The scenario file itself is wrong (exit 2), as opposed to a failed expectation."""


@dataclass(frozen=True, slots=True)
class Person:
    action: str  # "ack" | "resolve"
    rule: str  # the open alert's rule
    by: str
    household: str = ""
    device: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    device: str = ""
    kind: Kind | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    restart: str = ""  # "clean" | "kill"
    down: float = 0.0  # restart: seconds the gateway stays down before booting
    wire: WireStep | None = None
    person: Person | None = None
    while_down: bool = False  # an MQTT message published while the gateway is down
    held: tuple[MqttStep, ...] = ()  # restart: what the broker delivers at boot
    command: Mapping[str, Any] | None = None  # a test-mode command (gateway.testmode.service)


@dataclass(slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    config: SiteConfig
    start: float
    end: float
    steps: list[Step]
    checks: Expectations

    @property
    def expect(self) -> list[Expect]:
        return self.checks.expect

    @property
    def expect_not(self) -> list[Expect]:
        return self.checks.expect_not


@dataclass(slots=True)
class Result:
    scenario: Scenario
    timeline: list[Seen]
    failures: list[str]
    records: Records = field(default_factory=dict)  # "page", "trail", "visit" (gateway.scenario_expect)

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        s = self.scenario
        lines = [f"== {s.path.name}: {s.name}"]
        if s.description:
            lines.append(f"   {s.description}")
        if not self.timeline:
            lines.append("   (no alert)")
        shown = [(t.at, f"{t.kind:<10} {t.rule:<24} 级{t.severity}  {t.message_zh}") for t in self.timeline]
        for r in self.records.get("trail", []):  # what people did
            if r["action"] in ("acknowledged", "resolved") and not str(r["by"]).startswith("rule:"):
                shown.append((r["at"], f"{r['action']:<10} {'/'.join(r['rule']):<24} by {r['by']}"))
        for p in self.records.get("page", []):  # what the channels delivered
            tier = f"tier {p['tier']}" if p["tier"] else "notice"
            shown.append((p["at"], f"{'page':<10} {p['rule']:<24} {tier} {p['kind']} via {p['channel']} → "
                                   f"{', '.join(p['to']) or '(group)'}"))  # fmt: skip
        for w in self.records.get("would_have", []):  # what test events would have raised
            shown.append((w["at"], f"{'would-have':<10} {w['rule']:<24} 级{w['severity']}  {w['device']} (测试模式)"))
        lines.extend(f"   {day_time(s.start, at)}  {text}" for at, text in sorted(shown, key=lambda x: x[0]))
        lines.extend(f"   MISMATCH: {f}" for f in self.failures)
        lines.append(f"   {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- loading


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file. Raises ``ScenarioError`` (or ``ConfigError`` for its site)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    try:
        return _parse(p, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None


def _parse(p: Path, data: dict[str, Any]) -> Scenario:
    unknown = sorted(
        set(data) - {"name", "description", "site", "start", "end", "script", *SITE_KEYS, *Expectations.KEYS}
    )
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    config = _site(p, data)
    start = _start(data.get("start"))
    end = at_time(str(data.get("end", "day 7 00:00")), start, start)
    steps = _steps(data, Registry(config), start)
    if steps and steps[-1].at > end:
        raise ValueError(f"end: the script runs past the end ({day_time(start, end)})")
    checks = Expectations.parse(data, start)
    return Scenario(
        p, str(data.get("name", p.stem)), str(data.get("description", "")), config, start, end, steps, checks
    )


def _steps(data: dict[str, Any], registry: Registry, start: float) -> list[Step]:
    steps: list[Step] = []
    previous = start
    for i, raw in enumerate(tables(data, "script")):
        where = f"script[{i}]"
        at = at_time(req(raw, "at", where), start, previous)
        if at < start:
            raise ValueError(f"{where}.at: before the start")
        previous = at
        if "restart" in raw:
            only(raw, {"at", "restart", "down"}, where)
            how = {True: "clean", "kill": "kill"}.get(raw["restart"])
            if how is None:
                raise ValueError(f'{where}.restart: true (a clean stop) or "kill" (SIGKILL, power cut)')
            steps.append(Step(at, restart=how, down=parse_duration(raw["down"]) if "down" in raw else 0.0))
            continue
        if "ack" in raw or "resolve" in raw:
            only(raw, {"at", "ack", "resolve", "every", "until"}, where)
            action = "ack" if "ack" in raw else "resolve"
            table = raw[action]
            if ("ack" in raw and "resolve" in raw) or not isinstance(table, dict):
                raise ValueError(f"{where}: one ack = {{…}} or resolve = {{…}} table")
            only(table, {"alert_rule", "by", "household", "device", "note"}, f"{where}.{action}")
            rule, by = req(table, "alert_rule", f"{where}.{action}"), req(table, "by", f"{where}.{action}")
            extra = {k: str(table.get(k, "")) for k in ("household", "device", "note")}
            person = Person(action, rule, by, **extra)
            steps.extend(Step(t, person=person) for t in _times(raw, at, start))
            continue
        if "testmode" in raw:
            only(raw, {"at", "testmode"}, where)
            steps.append(Step(at, command=_testmode(raw["testmode"], f"{where}.testmode")))
            continue
        wire = [k for k in WIRE_KEYS if k in raw]
        if wire:
            only(raw, {"at", wire[0], "every", "until", "while_down"}, where)
            if raw.get("while_down") and wire[0] != "mqtt":
                raise ValueError(f"{where}.while_down: only the broker keeps messages while the gateway is down")
            message = parse_wire(wire[0], raw[wire[0]], where, registry)
            steps.extend(Step(t, wire=message, while_down=bool(raw.get("while_down"))) for t in _times(raw, at, start))
            continue
        only(raw, {"at", "device", "kind", "values", "every", "until"}, where)
        device = req(raw, "device", where)
        if device not in registry.devices:
            raise ValueError(f"{where}.device: no device {device!r} in the site")
        try:
            kind = Kind(req(raw, "kind", where))
        except ValueError:
            raise ValueError(f"{where}.kind: expected one of {[k.value for k in Kind]}") from None
        values = raw.get("values", {})
        if not isinstance(values, dict):
            raise ValueError(f"{where}.values: expected a table")
        steps.extend(Step(t, device, kind, values) for t in _times(raw, at, start))
    steps.sort(key=lambda s: s.at)  # stable: same-time steps keep the file's order
    return _hold(steps, start)


def _testmode(raw: object, where: str) -> dict[str, Any]:
    """``{start = "building", target = "3", by = "s-zhou", for = "1h"}``, ``{end = "building",
    target = "3", by = …}``; ``commission = true`` with start: a walk test."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table")
    only(raw, {"start", "end", "target", "by", "for", "note", "commission"}, where)
    if ("start" in raw) == ("end" in raw):
        raise ValueError(f'{where}: start = "<scope>" or end = "<scope>"')
    scope = str(raw.get("start", raw.get("end")))
    command: dict[str, Any] = {"scope": scope, "target": str(raw.get("target", "")), "by": req(raw, "by", where)}
    command["via"] = "scenario"
    if "start" in raw:
        command["action"] = "commission_start" if raw.get("commission") else "testmode_start"
        command["note"] = str(raw.get("note", ""))
        if "for" in raw:
            command["for"] = parse_duration(raw["for"])
    else:
        command["action"] = "testmode_end"
    return command


def _times(raw: dict[str, Any], at: float, start: float) -> list[float]:
    """The step's time, and its repeats: ``every = "1h"`` up to ``until``."""
    times = [at]
    if "every" in raw:
        every = parse_duration(raw["every"])
        until = at_time(req(raw, "until", "every … until"), start, at)
        while times[-1] + every <= until:
            times.append(times[-1] + every)
    return times


def _hold(steps: list[Step], start: float) -> list[Step]:
    """Attach each ``while_down`` message to the restart whose down time it falls in (the
    broker delivers it at boot); nothing else may happen while the gateway is down."""
    out: list[Step] = []
    down: tuple[int, float, float] | None = None  # (index in out, from, until)
    for s in steps:
        if down is not None and s.at >= down[2]:
            down = None
        if down is not None:
            if not s.while_down:
                raise ValueError(
                    f"script: the step at {day_time(start, s.at)} falls while the gateway is down "
                    "(only MQTT messages marked while_down can)"
                )
            assert isinstance(s.wire, MqttStep)
            r = out[down[0]]
            out[down[0]] = Step(r.at, restart=r.restart, down=r.down, held=(*r.held, s.wire))
            continue
        if s.while_down:
            raise ValueError(
                f"script: the while_down message at {day_time(start, s.at)} falls outside every restart's down time"
            )
        out.append(s)
        if s.restart and s.down > 0:
            down = (len(out) - 1, s.at, s.at + s.down)
    return out


def _site(p: Path, data: dict[str, Any]) -> SiteConfig:
    inline = {k: data[k] for k in SITE_KEYS if k in data}
    if "site" in data:
        if inline:
            raise ValueError(f'either site = "…" or inline {list(inline)}, not both')
        return load_config(p.parent / str(data["site"]))
    if "devices" not in inline:
        raise ValueError('no site: give site = "site.toml" or inline [[devices]]')
    inline.setdefault("gateway", {"id": "scenario"})
    devices = []
    for d in inline["devices"]:
        d = dict(d)
        if not any(k in d for k in ("mqtt", "serial", "modbus", "osdp")):
            d["mqtt"] = {"format": "native"}
        d.setdefault("model", "scenario")
        devices.append(d)
    inline["devices"] = devices
    return parse_config(inline, file=str(p), base_dir=p.resolve().parent, environ={})


def _start(value: object) -> float:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime.combine(value, time())
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value)
    else:
        raise ValueError("start: expected a local date-time, e.g. start = 2026-03-02T08:00:00")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=TZ)
    return dt.timestamp()


# ---------------------------------------------------------------------- running


class RecordingChannel:
    """A channel twin: it takes every notification and sends nothing anywhere."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Notification] = []

    async def open(self) -> None:
        return None

    async def send(self, note: Notification) -> None:
        self.sent.append(note)

    async def close(self) -> None:
        return None


async def _settle() -> None:
    for _ in range(30):  # let woken tasks run to their next wait
        await asyncio.sleep(0)


class _Run:
    """One run: the gateway's parts on one store file, booted again after every restart."""

    def __init__(self, scenario: Scenario, db: Path) -> None:
        self.s = scenario
        self.db = db
        self.config = scenario.config
        self.registry = Registry(self.config)
        self.rules = site_rules(self.config)
        self.clock = VirtualClock(scenario.start)
        self.seen: list[Transition] = []
        self.failures: list[str] = []
        self.twins = {c.id: RecordingChannel(c.id) for c in self.config.channels}
        self.broker = Broker()
        self.abandoned: list[Store] = []  # killed: never closed while the run goes on
        self.tasks: list[asyncio.Task[None]] = []

    async def boot(self) -> None:
        self.store = Store(self.db, synchronous="normal")
        self.alerts = AlertPath(
            self.registry, self.store, self.clock, self.config.topic_prefix, self.rules,
            self.config.alerts.repeat_window, self._on_transition,
            flap_threshold=self.config.alerts.flap_threshold, flap_window=self.config.alerts.flap_window,
        )  # fmt: skip
        self.visits = VisitTracker(self.config, self.store, self.clock, self.alerts, self.rules)
        self.notifier = Notifier(
            self.config, self.store, self.clock, self.alerts, self.twins, timezone=self.rules.settings.timezone
        )
        self.wire = Wire(self.config, self.registry, self.store, self.clock, self._on_stored, self.broker)
        tz = self.rules.settings.timezone
        self.testmodes = TestModes(self.config, self.registry, self.store, self.clock, self.alerts, timezone=tz)
        self.alerts.catch_up()
        self.visits.catch_up()
        self.checkpointed = self.clock.now()
        self.tasks = [asyncio.create_task(self.notifier.run_ladders())]
        self.tasks += [asyncio.create_task(self.notifier.run_channel(n)) for n in self.twins]
        await _settle()

    async def stop(self, kill: bool) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if kill:
            self.abandoned.append(self.store)  # no checkpoint, no close: as the process died
        else:
            self.alerts.checkpoint()
            self.visits.checkpoint()
            self.store.close()

    def _on_transition(self, t: Transition) -> None:
        self.seen.append(t)
        self.notifier.on_transition(t)

    async def _on_stored(self, events: list[Event]) -> None:
        self.alerts.process(events)
        self.visits.process(events)

    async def advance_to(self, target: float) -> None:
        """Move the clock to ``target``, stopping at every rule, visit and notifier deadline."""
        while True:
            now = self.clock.now()
            due = [self.alerts.next_deadline(), self.visits.next_deadline(), self.clock.next_wake()]
            due.append(self.testmodes.next_deadline())
            stop = min([target, *(d for d in due if d is not None and d > now)])
            if stop > now:
                await self.clock.advance(stop - now)
            await _settle()
            self.alerts.tick()
            self.visits.tick()
            self.testmodes.tick()
            await _settle()
            if self.clock.now() - self.checkpointed >= CHECKPOINT_EVERY:
                self.alerts.checkpoint()
                self.visits.checkpoint()
                self.checkpointed = self.clock.now()
            if stop >= target:
                return

    async def step(self, step: Step) -> None:
        await self.advance_to(step.at)
        if step.restart:
            await self.stop(kill=step.restart == "kill")
            self.clock.set(step.at + step.down)  # nothing runs while it is down
            await self.boot()
            if step.held:
                await self.wire.deliver(list(step.held))
        elif step.person is not None:
            self._person(step.person)
        elif step.command is not None:
            result = self.testmodes.apply(step.command)
            if not result["ok"]:
                when = day_time(self.s.start, self.clock.now())
                self.failures.append(f"{step.command['action']} at {when}: {result['error']}")
        elif step.wire is not None:
            await self.wire.feed(step.wire)
        else:
            assert step.kind is not None
            entry = self.registry.devices[step.device]
            event = Event(
                device_id=entry.id, family=entry.family, kind=step.kind, event_time=step.at, received_at=step.at,
                model=entry.model, location=entry.location, values=dict(step.values), source="scenario",
            )  # fmt: skip
            await self._on_stored(self.store.append([event], {}, now=step.at))
        await _settle()

    def _person(self, p: Person) -> None:
        when = day_time(self.s.start, self.clock.now())
        found = [
            a
            for a in self.store.alerts(open_only=True, limit=100_000)
            if a.rule == p.rule
            and (not p.device or a.device_id == p.device)
            and (not p.household or self.household_id(a.location) == p.household)
        ]
        if len(found) != 1:
            self.failures.append(f"{p.action} at {when}: {len(found)} open {p.rule} alerts match, expected one")
            return
        act = self.alerts.acknowledge if p.action == "ack" else self.alerts.resolve
        try:
            act(found[0].id, p.by, "scenario", p.note)
        except LifecycleError as exc:
            self.failures.append(f"{p.action} at {when}: {exc}")

    def household_id(self, loc: Location) -> str:
        for h in self.registry.households.values():
            if (h.building, h.unit, h.number or h.id) == (loc.building, loc.unit, loc.household):
                return h.id
        return ""

    async def run(self) -> Result:
        await self.boot()
        try:
            for step in self.s.steps:
                await self.step(step)
            await self.advance_to(max(self.s.end, self.clock.now()))
            timeline = [seen(t) for t in self.seen if t.actor.startswith("rule:")]
            found = records(self.store, timeline, self.household_id)
            failures = self.failures + verdict(
                self.s.checks, self.registry, timeline, found, self.store, self.config, self.clock.now(),
                self.rules.settings.timezone, functools.partial(day_time, self.s.start),
            )  # fmt: skip
        finally:
            await self.stop(kill=False)
            for store in self.abandoned:
                store.close()
        return Result(self.s, timeline, failures, found)


def run_scenario(scenario: Scenario, data_dir: Path | None = None) -> Result:
    """Run one scenario on a fresh store in ``data_dir`` (default: a temporary directory)."""
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="sensegate-scenario-") as tmp:
            return run_scenario(scenario, Path(tmp))
    db = data_dir / "scenario.sqlite3"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh store: a run never sees another run's alerts
    return asyncio.run(_Run(scenario, db).run())


def run_files(paths: Iterable[str], out: TextIO | None = None) -> int:
    """Run each file and print its timeline: 0 all passed, 1 a mismatch, 2 a bad file."""
    stream = out if out is not None else sys.stdout
    code = 0
    for path in paths:
        try:
            result = run_scenario(load_scenario(path))
        except ScenarioError as exc:
            print(f"== {path}: bad scenario file: {exc}", file=stream)
            code = 2
            continue
        except ConfigError as exc:
            print(f"== {path}: bad site: {len(exc.problems)} problem(s)", file=stream)
            for problem in exc.problems:
                print(f"   {problem}", file=stream)
            code = 2
            continue
        print(result.report(), file=stream)
        if not result.passed and code == 0:
            code = 1
    return code
