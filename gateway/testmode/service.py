"""Start, end and supervise test modes (测试模式) and walk tests (现场调试). See docs/installer.md.

The running gateway is the one writer: the CLI queues a command in the store (the queue the
alert CLI uses, gateway.alerts.commands) and the gateway applies it here within a second; the
console calls ``apply`` on the gateway's loop with the signed-in person. A command is

    {"action": "testmode_start", "scope": "building", "target": "3", "for": 7200, "by": "s-zhou", "note": ""}
    {"action": "testmode_end", "id": 4}            or   "scope" / "target": every running one of that scope
    {"action": "commission_start", "scope": …, "target": …, "for": …, "by": …}
    {"action": "commission_finish", "id": 2}       or   no id: the one walk test still open

with ``via`` set by the path it came in on; the result is ``{"ok": true, "test_mode": {…}}`` (or
``"commission"``, ``"ended"``), or ``{"ok": false, "error": "…", "reason": "…"}``.

``by`` must be a staff member of the site config (an installer is maintenance staff): a test
mode silences alarms, so it is set in somebody's name, and that name is in its audit trail.

``tick`` is the supervisor: a test mode past its end is closed as ``expired`` (events stopped
being marked at ``ends_at`` already: the store marks by time). If its devices were still
reporting in the ``overrun_activity`` before the end, the installer is probably still at work
and their next press is a real alarm: 三级 "测试模式超时未结束". Setting a scope in test mode
for more than ``daily_limit`` in one local day is 三级 "测试模式时间过长". Both go through the
alert path like any alert (routes by severity and rule id) and are resolved by a person.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from edge_rules import Decision, Subject
from edge_rules.schedule import format_duration_en, format_duration_zh, zone
from gateway.alerts.path import AlertPath, Transition
from gateway.clock import Clock
from gateway.models import Location, Severity
from gateway.site.config import SiteConfig
from gateway.site.registry import Registry
from gateway.store import CommissionRow, Store, TestModeRow
from gateway.testmode.scope import SCOPES, Scope, resolve
from gateway.testmode.walk import build_report

log = logging.getLogger("sensegate.testmode")

ACTIONS = ("testmode_start", "testmode_end", "commission_start", "commission_finish")
OVERRUN_RULE = "test_mode_overrun"
DAILY_RULE = "test_mode_daily_limit"
SEVERITY = Severity.SERIOUS  # 三级


class TestModeError(ValueError):
    """A command that cannot apply; ``reason`` is a stable tag: ``unknown_person``, ``bad_scope``,
    ``bad_duration``, ``no_devices``, ``no_test_mode``, ``no_commission``, ``ambiguous``, ``bad_command``."""

    __test__ = False

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class TestModes:
    __test__ = False

    def __init__(
        self,
        config: SiteConfig,
        registry: Registry,
        store: Store,
        clock: Clock,
        alerts: AlertPath,
        *,
        timezone: str = "Asia/Shanghai",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_change = on_change  # a test mode began or ended: the console's board shows which run
        self.settings = config.test_mode
        self.registry = registry
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.tz = timezone
        self.staff = {s.id: s.name for s in config.staff}

    # ------------------------------------------------------------------ commands

    def apply(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one command; never raises on a bad one (the result says why)."""
        action = command.get("action")
        by, via = str(command.get("by", "")).strip(), str(command.get("via", ""))
        result: dict[str, Any] = {"action": action, "request_id": command.get("request_id")}
        try:
            if action in ("testmode_start", "commission_start"):
                scope = self.scope(str(command.get("scope", "")), str(command.get("target", "")))
                row = self.start(
                    scope,
                    by,
                    via,
                    _seconds(command.get("for")),
                    str(command.get("note", ""))[:500],
                    commission=action == "commission_start",
                )
                result.update(ok=True, test_mode=row.to_dict(), devices=len(scope.devices))
            elif action == "testmode_end":
                ended = self.end(by, via, _int(command.get("id")), command.get("scope"), command.get("target"))
                result.update(ok=True, ended=[r.to_dict() for r in ended])
            elif action == "commission_finish":
                done = self.finish_commission(by, via, _int(command.get("id")))
                result.update(ok=True, commission=_commission_dict(done))
            else:
                raise TestModeError("bad_command", f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        except TestModeError as exc:
            result.update(ok=False, error=str(exc), reason=exc.reason)
        log.info("command %s by %s via %s: %s", action, by, via, "ok" if result["ok"] else result["error"])
        if result["ok"] and self.on_change is not None:
            self.on_change()
        return result

    def scope(self, kind: str, target: str) -> Scope:
        if kind not in SCOPES:
            raise TestModeError("bad_scope", f"scope must be one of {', '.join(SCOPES)}, got {kind!r}")
        try:
            return resolve(self.registry, kind, target)
        except ValueError as exc:
            raise TestModeError("bad_scope", str(exc)) from None

    def check_person(self, by: str) -> None:
        if by not in self.staff:
            close = difflib.get_close_matches(by, sorted(self.staff), 3, 0.6)
            by_name = [i for i, name in self.staff.items() if name and name == by]
            hint = [*by_name, *close][:3]
            said = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ": name a [[staff]] id"
            raise TestModeError("unknown_person", f"unknown staff member {by!r}{said}")

    def start(
        self,
        scope: Scope,
        by: str,
        via: str,
        duration: float | None = None,
        note: str = "",
        *,
        commission: bool = False,
    ) -> TestModeRow:
        """Put ``scope`` in test mode for ``duration`` (default: the settings'), in ``by``'s name."""
        self.check_person(by)
        s = self.settings
        seconds = duration if duration is not None else (s.commission if commission else s.default)
        if not 0 < seconds <= s.max:
            raise TestModeError(
                "bad_duration", f"a test mode lasts more than 0 and at most {format_duration_en(s.max)}, always"
            )
        if not scope.devices:
            raise TestModeError("no_devices", f"{scope.label_en} has no devices")
        now = self.clock.now()
        row = self.store.start_test_mode(
            scope.kind,
            scope.target,
            scope.label_zh,
            scope.devices,
            now,
            now + seconds,
            by,
            via,
            note,
            commission=commission,
        )
        log.info(
            "test mode %d: %s (%d devices) until %s by %s", row.id, scope.label_zh, len(scope.devices), row.ends_at, by
        )
        self._daily_limit(row, scope, now)
        return row

    def end(
        self, by: str, via: str, mode_id: int | None = None, kind: object = None, target: object = None
    ) -> list[TestModeRow]:
        """End a running test mode by id, or every running one of a scope."""
        self.check_person(by)
        now = self.clock.now()
        running = [m for m in self.store.test_modes(open_only=True) if m.running(now)]
        if mode_id is not None:
            chosen = [m for m in running if m.id == mode_id]
        elif kind is not None:
            scope = self.scope(str(kind), str(target or ""))
            chosen = [m for m in running if (m.scope, m.target) == (scope.kind, scope.target)]
        else:
            raise TestModeError("bad_command", "name the test mode (id) or its scope")
        if not chosen:
            raise TestModeError("no_test_mode", "no such test mode running")
        ended = []
        for m in chosen:
            row = self.store.end_test_mode(m.id, now, by, via)
            if row is not None:
                ended.append(row)
                log.info("test mode %d (%s) ended by %s", m.id, m.label, by)
        return ended

    def finish_commission(self, by: str, via: str, commission_id: int | None = None) -> CommissionRow:
        """End the walk test's test mode (if still running) and keep its report."""
        self.check_person(by)
        open_ = self.store.commissions(open_only=True)
        if commission_id is None:
            if len(open_) != 1:
                ids = ", ".join(str(c.id) for c in open_)
                raise TestModeError(
                    "ambiguous" if open_ else "no_commission",
                    f"{len(open_)} walk tests are open ({ids}): name one" if open_ else "no walk test is open",
                )
            commission_id = open_[0].id
        found = next((c for c in open_ if c.id == commission_id), None)
        if found is None:
            raise TestModeError("no_commission", f"no open walk test {commission_id}")
        now = self.clock.now()
        mode = self.store.test_mode(found.test_mode)
        if mode is not None and mode.ended_at is None:
            self.store.end_test_mode(mode.id, min(now, mode.ends_at), by, via, detail={"commission": found.id})
        report = build_report(
            self.config, self.registry, self.store, found, finished_at=now, finished_by=by, timezone=self.tz
        )
        done = self.store.finish_commission(found.id, now, by, report.summary(), report.html(), report.csv())
        if done is None:
            raise TestModeError("no_commission", f"walk test {found.id} was finished meanwhile")
        log.info("walk test %d finished by %s: %s", found.id, by, report.summary())
        return done

    # ------------------------------------------------------------------ the supervisor

    def next_deadline(self) -> float | None:
        """When the next running test mode ends."""
        return min((m.ends_at for m in self.store.test_modes(open_only=True)), default=None)

    def tick(self) -> list[Transition]:
        """Close test modes that ran out; alert when one ran out while it was being worked on."""
        now = self.clock.now()
        out: list[Transition] = []
        for m in self.store.test_modes(open_only=True):
            if m.ends_at > now:
                continue
            window = self.settings.overrun_activity
            devices = self.store.test_mode_devices(m.id)
            last = self.store.last_event_at(devices, m.ends_at - window, m.ends_at)
            detail = {"last_event_at": last} if last is not None else {}
            if self.store.end_test_mode(m.id, m.ends_at, "system", "", "expired", detail) is None:
                continue
            if self.on_change is not None:
                self.on_change()
            log.warning("test mode %d (%s, set by %s) ran out without being ended", m.id, m.label, m.started_by)
            if last is not None:
                out += self.alerts.external([self._overrun(m, window)])
                self.store.log_test_mode(m.id, now, "alerted", "system", "", {"rule": OVERRUN_RULE})
        return out

    # ------------------------------------------------------------------ alerts about test modes

    def _subject(self, kind: str, target: str, label: str) -> Subject:
        building = household = ""
        location = Location()
        if kind == "household" and target in self.registry.households:
            h = self.registry.households[target]
            building, household = h.building, target
            location = Location(h.building, h.unit, h.number or h.id)
        elif kind == "device" and target in self.registry.devices:
            e = self.registry.devices[target]
            building, household, location = e.location.building, e.config.household, e.location
        elif kind in ("building", "unit"):
            building, _, unit = target.partition("/")
            location = Location(building, unit)
        return Subject(kind, target or "site", building, household, target if kind == "device" else "", location)

    def _overrun(self, m: TestModeRow, window: float) -> Decision:
        who = self.staff.get(m.started_by, m.started_by)
        end, start = self._hhmm(m.ends_at), self._hhmm(m.started_at)
        minutes = format_duration_zh(window)
        return Decision(
            "raise",
            OVERRUN_RULE,
            f"{OVERRUN_RULE}:{m.id}",
            SEVERITY,
            m.ends_at,
            f"【测试模式超时未结束】{m.label} 测试模式已于{end}到期（{who}于{start}设置，未手动结束），"
            f"到期前{minutes}内仍有设备上报，调试可能仍在进行：此后的报警均为真实报警，请与安装人员核实",
            f"Test mode over {m.label} ran out at {end} (set by {who} at {start}, never ended) while its "
            f"devices were still reporting: testing may go on, and its alarms are real from now on; "
            f"check with the installer",
            self._subject(m.scope, m.target, m.label),
        )

    def _daily_limit(self, row: TestModeRow, scope: Scope, now: float) -> None:
        """A scope set in test mode for more than the daily limit (this one included) today."""
        tz = zone(self.tz)
        day = datetime.fromtimestamp(now, tz).date()
        lo = datetime.combine(day, datetime.min.time(), tz).timestamp()
        hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).timestamp()
        total = 0.0
        for m in self.store.test_modes(since=lo):
            if (m.scope, m.target) != (scope.kind, scope.target):
                continue
            end = m.ends_at if m.ended_at is None else min(m.ended_at, m.ends_at)
            total += max(0.0, min(end, hi) - max(m.started_at, lo))
        limit = self.settings.daily_limit
        if total <= limit:
            return
        decision = Decision(
            "raise",
            DAILY_RULE,
            f"{DAILY_RULE}:{scope.kind}:{scope.target}:{day.isoformat()}",
            SEVERITY,
            now,
            f"【测试模式时间过长】{scope.label_zh} 今日测试模式累计{format_duration_zh(total)}"
            f"（上限{format_duration_zh(limit)}），测试模式期间报警不会通知任何人，请管理人员核实",
            f"Test mode over {scope.label_en} adds up to {format_duration_en(total)} today (limit "
            f"{format_duration_en(limit)}); nobody is paged for its alarms meanwhile: a manager to check",
            self._subject(scope.kind, scope.target, scope.label_zh),
        )
        self.alerts.external([decision])
        self.store.log_test_mode(row.id, now, "alerted", "system", "", {"rule": DAILY_RULE, "total": total})

    def _hhmm(self, t: float) -> str:
        return datetime.fromtimestamp(t, zone(self.tz)).strftime("%H:%M")


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TestModeError("bad_duration", "for must be a number of seconds")
    return float(value)


def _int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TestModeError("bad_command", "id must be a number")
    return value


def _commission_dict(c: CommissionRow) -> dict[str, Any]:
    return {
        "id": c.id,
        "scope": c.scope,
        "target": c.target,
        "label": c.label,
        "started_at": c.started_at,
        "started_by": c.started_by,
        "test_mode": c.test_mode,
        "finished_at": c.finished_at,
        "finished_by": c.finished_by,
        "summary": dict(c.summary or {}),
    }
