"""Scenario runner: a site, a script of events at virtual times, the alerts expected.

``sensegate scenario run FILE`` loads a scenario TOML (format: scenarios/README.md), runs the
real store and alert path (gateway/alerts/path.py) with the site's rules on a virtual clock — a
simulated week in well under a second — prints the alert timeline and a verdict.

A step is stored with ``Store.append`` and handed to ``AlertPath.process`` exactly as the
runtime does; before each step and at the end the clock is set and ``tick()`` fires the
deadlines that passed. A ``restart`` step closes the store, reopens it and runs ``catch_up()``
(a gateway crash and reboot, optionally after being ``down`` for a while).
"""

from __future__ import annotations

import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from edge_rules.schedule import parse_duration
from gateway.alerts.path import AlertPath, Transition
from gateway.clock import VirtualClock
from gateway.errors import ConfigError, SenseGateError
from gateway.models import Event, Kind
from gateway.site.config import SiteConfig, load_config, parse_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store

TZ = ZoneInfo("Asia/Shanghai")
SITE_KEYS = ("gateway", "buildings", "households", "residents", "devices", "rules", "alerts")
TRANSITIONS = frozenset({"raised", "updated", "repeated", "escalated", "downgraded", "resolved"})
_AT = re.compile(r"^(?:day\s+(\d+)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class ScenarioError(SenseGateError):
    """The scenario file itself is wrong (exit 2), as opposed to a failed expectation."""


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    device: str = ""
    kind: Kind | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    restart: bool = False
    down: float = 0.0  # restart: seconds the gateway stays down before booting


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

    def describe(self, fmt: Callable[[float], str]) -> str:
        parts = [self.rule]
        for name in ("household", "subject", "device", "building"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        if self.severity is not None:
            parts.append(f"severity={self.severity}")
        if self.message:
            parts.append(f"message~{self.message!r}")
        if self.transitions not in (TRANSITIONS, TRANSITIONS - {"resolved"}):
            parts.append("/".join(sorted(self.transitions)))
        if self.start is not None and self.end is not None:
            parts.append(f"between {fmt(self.start)} and {fmt(self.end)}")
        return " ".join(parts)


@dataclass(slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    config: SiteConfig
    start: float
    end: float
    steps: list[Step]
    expect: list[Expect]
    expect_not: list[Expect]
    expect_none: bool


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


@dataclass(slots=True)
class Result:
    scenario: Scenario
    timeline: list[Seen]
    failures: list[str]

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
        for t in self.timeline:
            lines.append(f"   {_fmt(s.start, t.at)}  {t.kind:<10} {t.rule:<24} 级{t.severity}  {t.message_zh}")
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
    known = {"name", "description", "site", "start", "end", "script", "expect", "expect_not", "expect_none", *SITE_KEYS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown}")
    config = _site(p, data)
    start = _start(data.get("start"))
    end = _at(str(data.get("end", "day 7 00:00")), start, start)
    registry_ids = {d.id for d in config.devices}
    steps: list[Step] = []
    previous = start
    for i, raw in enumerate(_tables(data, "script")):
        where = f"script[{i}]"
        at = _at(_req(raw, "at", where), start, previous)
        if at < start:
            raise ValueError(f"{where}.at: before the start")
        if raw.get("restart"):
            _only(raw, {"at", "restart", "down"}, where)
            steps.append(Step(at, restart=True, down=parse_duration(raw["down"]) if "down" in raw else 0.0))
            previous = at
            continue
        _only(raw, {"at", "device", "kind", "values", "every", "until"}, where)
        device = _req(raw, "device", where)
        if device not in registry_ids:
            raise ValueError(f"{where}.device: no device {device!r} in the site")
        try:
            kind = Kind(_req(raw, "kind", where))
        except ValueError:
            raise ValueError(f"{where}.kind: expected one of {[k.value for k in Kind]}") from None
        values = raw.get("values", {})
        if not isinstance(values, dict):
            raise ValueError(f"{where}.values: expected a table")
        times = [at]
        if "every" in raw:
            every = parse_duration(raw["every"])
            until = _at(_req(raw, "until", where), start, at)
            while times[-1] + every <= until:
                times.append(times[-1] + every)
        steps.extend(Step(t, device, kind, values) for t in times)
        previous = at
    steps.sort(key=lambda s: s.at)  # stable: same-time steps keep the file's order
    if steps and steps[-1].at > end:
        raise ValueError(f"end: the script runs past the end ({_fmt(start, end)})")
    expect = [_expect(raw, f"expect[{i}]", start, True) for i, raw in enumerate(_tables(data, "expect"))]
    expect_not = [_expect(raw, f"expect_not[{i}]", start, False) for i, raw in enumerate(_tables(data, "expect_not"))]
    expect_none = data.get("expect_none", False)
    if not isinstance(expect_none, bool):
        raise ValueError("expect_none: expected true or false")
    if expect_none and expect:
        raise ValueError("expect_none = true with [[expect]] entries")
    return Scenario(
        p, str(data.get("name", p.stem)), str(data.get("description", "")), config, start, end, steps, expect,
        expect_not, expect_none,
    )  # fmt: skip


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
        if not any(k in d for k in ("mqtt", "serial", "modbus")):
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


def _at(value: str, start: float, previous: float) -> float:
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


def _expect(raw: dict[str, Any], where: str, start: float, positive: bool) -> Expect:
    _only(
        raw,
        {"rule", "severity", "transition", "household", "subject", "device", "building", "message", "at", "within"},
        where,
    )
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
    lo = hi = None
    if "at" in raw:
        lo = _at(str(raw["at"]), start, start)
        hi = lo + parse_duration(raw.get("within", "1m"))
    severity = raw.get("severity")
    if severity is not None and not isinstance(severity, int):
        raise ValueError(f"{where}.severity: expected 1–4")
    return Expect(
        rule=_req(raw, "rule", where),
        transitions=transitions,
        severity=severity,
        household=str(raw.get("household", "")),
        subject=str(raw.get("subject", "")),
        device=str(raw.get("device", "")),
        building=str(raw.get("building", "")),
        message=str(raw.get("message", "")),
        start=lo,
        end=hi,
    )


def _tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{key}: expected [[{key}]] tables")
    return value


def _req(raw: dict[str, Any], key: str, where: str) -> str:
    if key not in raw:
        raise ValueError(f"{where}.{key}: missing")
    return str(raw[key])


def _only(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown keys {extra} (allowed: {sorted(allowed)})")


def _fmt(start: float, t: float) -> str:
    first = datetime.fromtimestamp(start, TZ).date()
    dt = datetime.fromtimestamp(t, TZ)
    day = (dt.date() - first).days + 1
    return f"day {day} {dt:%H:%M:%S}"


# ---------------------------------------------------------------------- running


def run_scenario(scenario: Scenario, data_dir: Path | None = None) -> Result:
    """Run one scenario on a fresh store in ``data_dir`` (default: a temporary directory)."""
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="sensegate-scenario-") as tmp:
            return run_scenario(scenario, Path(tmp))
    config = scenario.config
    registry = Registry(config)
    rules = site_rules(config)
    clock = VirtualClock(scenario.start)
    seen: list[Transition] = []
    db = data_dir / "scenario.sqlite3"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh store: a run never sees another run's alerts

    def boot(store: Store) -> AlertPath:
        return AlertPath(
            registry,
            store,
            clock,
            config.topic_prefix,
            rules,
            config.alerts.repeat_window,
            seen.append,
            flap_threshold=config.alerts.flap_threshold,
            flap_window=config.alerts.flap_window,
        )

    store = Store(db, synchronous="normal")
    alerts = boot(store)
    alerts.catch_up()
    try:
        for step in scenario.steps:
            clock.set(step.at)
            alerts.tick()
            if step.restart:
                store.close()
                clock.set(step.at + step.down)
                store = Store(db, synchronous="normal")
                alerts = boot(store)
                alerts.catch_up()
                continue
            assert step.kind is not None
            entry = registry.devices[step.device]
            event = Event(
                device_id=entry.id,
                family=entry.family,
                kind=step.kind,
                event_time=step.at,
                received_at=step.at,
                model=entry.model,
                location=entry.location,
                values=dict(step.values),
                source="scenario",
            )
            alerts.process(store.append([event], {}, now=step.at))
            alerts.checkpoint()  # the runtime checkpoints every few seconds
        clock.set(max(scenario.end, clock.now()))
        alerts.tick()
    finally:
        store.close()
    timeline = [_seen(t) for t in seen]
    return Result(scenario, timeline, _verdict(scenario, registry, timeline))


def _seen(t: Transition) -> Seen:
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
        loc.building, a.device_id, a.dedup_key,
    )  # fmt: skip


def _matches(e: Expect, s: Seen, registry: Registry, window: bool = True) -> bool:
    if s.rule != e.rule or s.kind not in e.transitions:
        return False
    if e.severity is not None and s.severity != e.severity:
        return False
    if e.household:
        h = registry.households.get(e.household)
        want = f"{h.building}/{h.unit}/{h.number or h.id}" if h else e.household
        if s.household != want:
            return False
    if e.subject and s.dedup_key.rsplit(":", 1)[-1] != e.subject:
        return False
    if e.device and s.device != e.device:
        return False
    if e.building and s.building != e.building:
        return False
    if e.message and e.message not in s.message_zh:
        return False
    return not window or e.start is None or e.end is None or e.start <= s.at <= e.end


def _verdict(scenario: Scenario, registry: Registry, timeline: list[Seen]) -> list[str]:
    def fmt(t: float) -> str:
        return _fmt(scenario.start, t)

    failures: list[str] = []
    used: set[int] = set()
    for e in scenario.expect:
        hit = next((i for i, s in enumerate(timeline) if i not in used and _matches(e, s, registry)), None)
        if hit is not None:
            used.add(hit)
            continue
        near = [s for s in timeline if s.rule == e.rule]
        found = "; ".join(f"{s.kind} {s.rule} 级{s.severity} at {fmt(s.at)}" for s in near) or "nothing like it"
        failures.append(f"expected {e.describe(fmt)}; found {found}")
    for e in scenario.expect_not:
        for s in timeline:
            if _matches(e, s, registry):
                failures.append(f"must not fire: {e.describe(fmt)}; got {s.kind} at {fmt(s.at)}: {s.message_zh}")
    if scenario.expect_none and timeline:
        for s in timeline:
            failures.append(f"expected no alert at all; got {s.kind} {s.rule} 级{s.severity} at {fmt(s.at)}")
    return failures


def run_files(paths: list[str], out: TextIO | None = None) -> int:
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
