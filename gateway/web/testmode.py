"""The console's test-mode and walk-test pages (测试模式 / 现场调试), for installers and managers
(docs/installer.md, docs/console.md)::

    GET  /testmode                        running test modes and walk tests, the forms to start one
    POST /testmode/start                  scope, target, minutes, note; kind = testmode | commission
    POST /testmode/<id>/end
    GET  /commission/<id>                 the checklist (it reloads itself every 15 s: no script)
    POST /commission/<id>/finish
    GET  /commission/<id>/report.html     the stored report, to print (or print to PDF)
    GET  /commission/<id>/report.csv

Every command goes through ``gateway.testmode.service`` on the gateway's loop, as the CLI's
queued ones do, with ``by`` the person signed in — never a field of the form. Anyone else
signed in gets 403; an API token gets nothing (these are pages for a person on site).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from edge_rules.schedule import zone
from gateway.alerts.path import AlertPath
from gateway.clock import Clock
from gateway.models import Severity
from gateway.site.config import SiteConfig
from gateway.site.console import ConsoleRole
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.testmode.scope import SCOPE_ZH, SCOPES
from gateway.testmode.service import TestModes
from gateway.testmode.walk import FAMILY_ZH, TRY_ZH, battery_text, signal_text, walk
from gateway.web.auth import Identity
from gateway.web.changes import Changes

MAY = (ConsoleRole.INSTALLER, ConsoleRole.MANAGER)
REFRESH_SECONDS = 15
# The stored report is a page of its own: its inline style is allowed, nothing else.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

WORDS: Mapping[str, Mapping[str, str]] = {
    "zh": {
        "title": "测试模式与现场调试",
        "running": "正在进行的测试模式",
        "none_running": "目前没有测试模式：所有设备的报警照常通知。",
        "until": "至",
        "by": "设置人",
        "end": "结束测试模式",
        "start": "设置测试模式",
        "start_walk": "开始现场调试",
        "scope": "范围",
        "target": "编号",
        "target_hint": "楼栋 3，单元 3/2，住户 3-2-502，设备编号；全小区不填",
        "minutes": "时长（分钟）",
        "note": "备注",
        "explain": "测试模式期间，范围内设备的事件照常保存，但不产生报警、不通知任何人，到时间自动结束。",
        "walks": "现场调试",
        "open": "进行中",
        "finish": "结束调试并生成报告",
        "report": "报告",
        "seen": "已上报",
        "not_seen": "未上报",
        "weak": "信号弱",
        "low": "低电量",
        "ok": "正常",
        "device": "设备",
        "room": "房间",
        "family": "类型",
        "result": "结果",
        "first": "首次上报",
        "signal": "信号",
        "battery": "电量",
        "would": "本应触发的报警",
        "try": "请",
        "forbidden": "只有安装维护人员和管理人员可以设置测试模式。",
        "not_found": "没有这次现场调试。",
        "back": "返回",
    },
    "en": {
        "title": "Test mode and walk tests",
        "running": "Test modes running",
        "none_running": "No test mode: every device's alarms page as usual.",
        "until": "until",
        "by": "set by",
        "end": "End test mode",
        "start": "Start test mode",
        "start_walk": "Start a walk test",
        "scope": "Scope",
        "target": "Id",
        "target_hint": "building 3, unit 3/2, household 3-2-502, a device id; nothing for the site",
        "minutes": "Minutes",
        "note": "Note",
        "explain": "In test mode the scope's events are stored but raise no alert and page nobody; it ends by itself.",
        "walks": "Walk tests",
        "open": "open",
        "finish": "Finish and keep the report",
        "report": "Report",
        "seen": "seen",
        "not_seen": "not seen",
        "weak": "weak signal",
        "low": "low battery",
        "ok": "ok",
        "device": "Device",
        "room": "Room",
        "family": "Kind",
        "result": "Result",
        "first": "First heard",
        "signal": "Signal",
        "battery": "Battery",
        "would": "Would have raised",
        "try": "",
        "forbidden": "Only installers and managers may set test modes.",
        "not_found": "No such walk test.",
        "back": "Back",
    },
}
SCOPE_EN = {"site": "whole site", "building": "building", "unit": "unit", "household": "household", "device": "device"}


class Desk(Protocol):
    """What these pages use of the console (gateway.web.console.Console)."""

    config: SiteConfig
    store: Store
    clock: Clock
    alerts: AlertPath
    changes: Changes

    async def identity(self, request: Request) -> Identity | None: ...

    def _csrf_ok(self, who: Identity, given: str | None) -> bool: ...

    def _lang(self, request: Request) -> str: ...

    def _to_login(self, request: Request) -> Response: ...

    def _render(
        self, request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> Response: ...


Handler = Callable[[Request], Awaitable[Response]]


class TestModePages:
    __test__ = False

    def __init__(self, desk: Desk, timezone: str) -> None:
        self.desk = desk
        self.tz = timezone
        self.registry = Registry(desk.config)
        self.modes = TestModes(
            desk.config,
            self.registry,
            desk.store,
            desk.clock,
            desk.alerts,
            timezone=timezone,
            on_change=desk.changes.bump,  # the board's banner of running test modes
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/testmode", self.page),
            Route("/testmode/start", self.start, methods=["POST"]),
            Route("/testmode/{mode_id}/end", self.end, methods=["POST"]),
            Route("/commission/{commission_id}", self.checklist),
            Route("/commission/{commission_id}/finish", self.finish, methods=["POST"]),
            Route("/commission/{commission_id}/report.{fmt}", self.report),
        ]

    # ------------------------------------------------------------------ who may

    async def _who(self, request: Request) -> Identity | Response:
        who = await self.desk.identity(request)
        if who is None or who.is_token:
            return self.desk._to_login(request)
        if who.role not in MAY:
            w = WORDS[self.desk._lang(request)]
            return self.desk._render(request, "message.html", 403, who=who, message=w["forbidden"])
        return who

    async def _form(self, request: Request, who: Identity) -> Mapping[str, str] | Response:
        form = await request.form()
        if not self.desk._csrf_ok(who, str(form.get("csrf", ""))):
            return PlainTextResponse("CSRF token missing or wrong", 403)
        return {k: str(v) for k, v in form.items()}

    def _done(self, to: str, result: Mapping[str, Any]) -> Response:
        notice = "ok" if result.get("ok") else str(result.get("error", "error"))
        return RedirectResponse(f"{to}?notice={quote(notice[:200])}", status_code=303)

    def _notice(self, request: Request, lang: str) -> str:
        notice = request.query_params.get("notice", "")[:200]
        if notice == "ok":
            return "已提交" if lang == "zh" else "Done"
        return notice  # the service's own words (escaped by the template)

    # ------------------------------------------------------------------ pages

    async def page(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        lang = self.desk._lang(request)
        now = self.desk.clock.now()
        store = self.desk.store

        def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            names = {s.id: s.name for s in self.desk.config.staff}
            running = [
                {
                    "id": m.id,
                    "label": m.label,
                    "until": self._when(m.ends_at, "%H:%M"),
                    "by": names.get(m.started_by, m.started_by),
                    "walk": m.commission,
                }
                for m in store.test_modes(open_only=True)
                if m.running(now)
            ]
            walks = [
                {
                    "id": c.id,
                    "label": c.label,
                    "started": self._when(c.started_at),
                    "by": names.get(c.started_by, c.started_by),
                    "finished": self._when(c.finished_at) if c.finished_at else "",
                    "summary": dict(c.summary or {}),
                }
                for c in store.commissions(limit=20)
            ]
            return running, walks

        running, walks = await asyncio.to_thread(read)
        scopes = [(s, SCOPE_ZH[s] if lang == "zh" else SCOPE_EN[s]) for s in SCOPES]
        return self.desk._render(
            request,
            "testmode.html",
            who=who,
            w=WORDS[lang],
            running=running,
            walks=walks,
            scopes=scopes,
            default_minutes=round(self.desk.config.test_mode.default / 60),
            notice=self._notice(request, lang),
        )

    async def start(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        form = await self._form(request, who)
        if isinstance(form, Response):
            return form
        command: dict[str, Any] = {
            "action": "commission_start" if form.get("kind") == "commission" else "testmode_start",
            "scope": form.get("scope", ""),
            "target": form.get("target", "").strip(),
            "note": form.get("note", "")[:500],
            "by": who.actor,
            "via": "console",
        }
        minutes = form.get("minutes", "").strip()
        if minutes:
            try:
                command["for"] = float(minutes) * 60
            except ValueError:
                return self._done("/testmode", {"ok": False, "error": "时长须为分钟数 minutes must be a number"})
        result = self.modes.apply(command)
        commission = (result.get("test_mode") or {}).get("commission")
        return self._done(f"/commission/{commission}" if commission else "/testmode", result)

    async def end(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        form = await self._form(request, who)
        if isinstance(form, Response):
            return form
        mode_id = _number(request.path_params["mode_id"])
        result = self.modes.apply({"action": "testmode_end", "id": mode_id, "by": who.actor, "via": "console"})
        return self._done("/testmode", result)

    async def finish(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        form = await self._form(request, who)
        if isinstance(form, Response):
            return form
        commission_id = _number(request.path_params["commission_id"])
        command = {"action": "commission_finish", "id": commission_id, "by": who.actor, "via": "console"}
        return self._done(f"/commission/{commission_id}", self.modes.apply(command))

    async def checklist(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        lang = self.desk._lang(request)
        w = WORDS[lang]
        commission = await asyncio.to_thread(self.desk.store.commission, _number(request.path_params["commission_id"]))
        if commission is None:
            return self.desk._render(request, "message.html", 404, who=who, message=w["not_found"])
        report = await asyncio.to_thread(
            walk, self.desk.config, self.registry, self.desk.store, commission, timezone=self.tz
        )
        households = [
            {
                "place": place,
                "items": [
                    {
                        "device": i.device_id,
                        "model": i.model,
                        "room": i.room,
                        "family": FAMILY_ZH[i.family],
                        "state": "bad" if i.seen is None else ("warn" if i.problems else "ok"),
                        "result": "、".join(i.problems) or w["ok"],
                        "first": self._when(i.seen.first_seen, "%H:%M:%S") if i.seen else "",
                        "try": f"{w['try']}{TRY_ZH[i.family]}" if lang == "zh" else "",
                        "signal": signal_text(i.seen),
                        "battery": battery_text(i.seen),
                        "would": [f"[{Severity(x.severity).label_zh}] {x.message_zh}" for x in i.would_have],
                    }
                    for i in items
                ],
            }
            for place, items in report.households()
        ]
        return self.desk._render(
            request,
            "commission.html",
            who=who,
            w=w,
            c=commission,
            summary=report.summary(),
            installer=report.installer,
            started=self._when(commission.started_at),
            finished=self._when(commission.finished_at) if commission.finished_at else "",
            households=households,
            refresh=REFRESH_SECONDS if commission.finished_at is None else 0,
            notice=self._notice(request, lang),
        )

    async def report(self, request: Request) -> Response:
        who = await self._who(request)
        if isinstance(who, Response):
            return who
        commission_id = _number(request.path_params["commission_id"])
        fmt = request.path_params["fmt"]
        if fmt not in ("html", "csv"):
            return PlainTextResponse("report.html or report.csv", 404)
        stored = await asyncio.to_thread(self.desk.store.commission_report, commission_id)
        if stored is None:
            return PlainTextResponse("no finished walk test with this id", 404)
        if fmt == "html":
            return Response(
                stored[0], media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": REPORT_CSP}
            )
        name = f"commission-{commission_id}.csv"
        return Response(
            stored[1],
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def _when(self, t: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "" if t is None else datetime.fromtimestamp(t, zone(self.tz)).strftime(fmt)


def _number(text: str) -> int:
    """A path's id; 0 (which names nothing) for anything but digits."""
    return int(text) if text.isdigit() and len(text) < 12 else 0
