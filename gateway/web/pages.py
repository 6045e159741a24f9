"""The console's site pages and their JSON (docs/console.md), added to the duty desk's app by
``page_routes``::

    GET /site                          全小区: every building in scope, device health, open alerts
    GET /buildings/<id>                楼栋: the device health grid per unit, open alerts per unit
    GET /households/<id>               住户卡: residents, contacts, visitors, devices, alerts, visits
    GET /devices?problem=&building=&family=&q=&page=     设备, filtered by problem
    GET /history?from=&to=&building=&rule=&severity=&person=&state=&q=&page=     告警记录
    GET /visits?month=                 探访: records, the month's rate per visitor and per elder
    GET /visits/report.csv?month=&part=elders|visits     the monthly report's CSV (UTF-8, BOM)
    GET /visits/print?month=           the monthly report, print-friendly
    GET /api/v1/site | /api/v1/buildings/<id> | /api/v1/households/<id> | /api/v1/devices
        | /api/v1/history | /api/v1/visits            the same as JSON (session or API token)

Pages need a signed-in person (a token is not one: redirected to /login); the JSON takes either.
What is outside the signed-in person's scope is 404 on both, as on the board.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.alerts.path import AlertPath
from gateway.clock import Clock
from gateway.site.config import SiteConfig
from gateway.store import Store
from gateway.web.auth import Identity
from gateway.web.board import BoardReader, age_text
from gateway.web.pages_text import PAGE_TEXT
from gateway.web.views import BadQuery, DeviceFilter, HistoryFilter, SiteViews, month_after, month_before


class Console(Protocol):
    """What the pages use of the console app (``gateway.web.console.Console``), named here so
    that this module does not import the one that imports it."""

    config: SiteConfig
    store: Store
    clock: Clock
    alerts: AlertPath
    reader: BoardReader
    templates: jinja2.Environment

    async def identity(self, request: Request) -> Identity | None: ...
    async def _api_identity(self, request: Request) -> Identity | Response: ...
    def _to_login(self, request: Request) -> Response: ...
    def _lang(self, request: Request) -> str: ...
    def _render(
        self, request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> Response: ...


def page_routes(console: Console) -> list[Route]:
    """The routes of the site pages and their JSON, for the console's app."""
    pages = Pages(console)
    return [
        Route("/site", pages.site),
        Route("/buildings/{building_id}", pages.building),
        Route("/households/{household_id}", pages.household),
        Route("/devices", pages.devices),
        Route("/history", pages.history),
        Route("/visits", pages.visits),
        Route("/visits/report.csv", pages.visits_csv),
        Route("/visits/print", pages.visits_print),
        Route("/api/v1/site", pages.api_site),
        Route("/api/v1/buildings/{building_id}", pages.api_building),
        Route("/api/v1/households/{household_id}", pages.api_household),
        Route("/api/v1/devices", pages.api_devices),
        Route("/api/v1/history", pages.api_history),
        Route("/api/v1/visits", pages.api_visits),
    ]


class Pages:
    def __init__(self, console: Console) -> None:
        self.console = console
        rules = console.alerts.rules
        self.views = SiteViews(console.config, console.store, console.reader, rules, rules.settings.timezone)
        reader = console.reader
        env = console.templates
        env.globals["PAGE_TEXT"] = PAGE_TEXT
        env.filters["when"] = lambda t, now: reader.when(t, now) if t is not None else "-"
        env.filters["full"] = reader.full_time
        env.filters["ago"] = lambda t, now, lang: age_text(now - t, lang) if t is not None else "-"
        env.filters["percent"] = lambda rate: "—" if rate is None else f"{rate * 100:.1f} %"
        env.filters["days"] = lambda d: "" if d is None else f"{d:g}"

    # ------------------------------------------------------------------ plumbing

    async def _person(self, request: Request) -> Identity | Response:
        who = await self.console.identity(request)
        if who is None or who.is_token:
            return self.console._to_login(request)
        return who

    def _page(self, request: Request, who: Identity, name: str, status: int = 200, **context: Any) -> Response:
        lang = self.console._lang(request)
        return self.console._render(
            request, name, status, who=who, p=PAGE_TEXT[lang], now=self.console.clock.now(), **context
        )

    def _missing(self, request: Request, who: Identity, status: int = 404, message: str = "") -> Response:
        lang = self.console._lang(request)
        return self.console._render(
            request, "message.html", status, who=who, message=message or PAGE_TEXT[lang]["not_found_page"]
        )

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ pages

    async def site(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        data = await self._read(self.views.site_overview, who, lang, now)
        return self._page(request, who, "site.html", s=data)

    async def building(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        data = await self._read(self.views.building, who, request.path_params["building_id"][:64], lang, now)
        if data is None:
            return self._missing(request, who)
        return self._page(request, who, "building.html", b=data)

    async def household(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        data = await self._read(self.views.household, who, request.path_params["household_id"][:64], lang, now)
        if data is None:
            return self._missing(request, who)
        return self._page(request, who, "household.html", h=data)

    async def devices(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        try:
            f = _device_filter(request)
            data = await self._read(self.views.device_list, who, f, lang, now)
        except BadQuery as exc:
            return self._missing(request, who, 400, str(exc))
        return self._page(request, who, "devices.html", d=data, f=f, more=_more(request, data))

    async def history(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang = self.console._lang(request)
        try:
            f = _history_filter(request)
            data = await self._read(self.views.history, who, f, lang)
        except BadQuery as exc:
            return self._missing(request, who, 400, str(exc))
        scope = self.views.scope(who)
        buildings = [(b, n) for b, n in self.views.site.buildings.items() if scope.building(b)]
        return self._page(
            request,
            who,
            "history.html",
            a=data,
            f=f,
            more=_more(request, data),
            buildings=buildings,
            rules=self.views.rule_ids,
            people=self.views.people,
        )

    async def visits(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        month = request.query_params.get("month", "") or self.views.this_month(now)
        try:
            data = await self._read(self.views.visits, who, month[:7], lang, now)
        except BadQuery as exc:
            return self._missing(request, who, 400, str(exc))
        return self._page(
            request,
            who,
            "visits.html",
            v=data,
            month=data["month"],
            prev_month=month_before(data["month"]),
            next_month=month_after(data["month"]),
            is_current=data["month"] == self.views.this_month(now),
        )

    async def visits_csv(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        month = request.query_params.get("month", "") or self.views.this_month(now)
        part = request.query_params.get("part", "elders")
        try:
            name, text = await self._read(self.views.visits_csv, who, month[:7], part, lang, now)
        except BadQuery as exc:
            return self._missing(request, who, 400, str(exc))
        headers = {"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"}
        return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8", headers=headers)

    async def visits_print(self, request: Request) -> Response:
        who = await self._person(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        month = request.query_params.get("month", "") or self.views.this_month(now)
        try:
            data = await self._read(self.views.visits_print, who, month[:7], lang, now)
        except BadQuery as exc:
            return self._missing(request, who, 400, str(exc))
        return self._page(request, who, "visits_print.html", r=data)

    # ------------------------------------------------------------------ JSON

    async def _api(self, request: Request, read: Callable[[Identity, str, float], Any]) -> Response:
        who = await self.console._api_identity(request)
        if isinstance(who, Response):
            return who
        lang, now = self.console._lang(request), self.console.clock.now()
        try:
            data = await self._read(read, who, lang, now)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if data is None:
            return JSONResponse({"error": "not found, or not in this identity's scope"}, 404)
        return JSONResponse(data)

    async def api_site(self, request: Request) -> Response:
        return await self._api(request, self.views.site_overview)

    async def api_building(self, request: Request) -> Response:
        building = request.path_params["building_id"][:64]
        return await self._api(request, lambda who, lang, now: self.views.building(who, building, lang, now))

    async def api_household(self, request: Request) -> Response:
        household = request.path_params["household_id"][:64]
        return await self._api(request, lambda who, lang, now: self.views.household(who, household, lang, now))

    async def api_devices(self, request: Request) -> Response:
        def read(who: Identity, lang: str, now: float) -> dict[str, Any]:
            data = self.views.device_list(who, _device_filter(request), lang, now)
            return {k: data[k] for k in ("total", "page", "per_page", "more", "devices")}

        return await self._api(request, read)

    async def api_history(self, request: Request) -> Response:
        return await self._api(request, lambda who, lang, now: self.views.history(who, _history_filter(request), lang))

    async def api_visits(self, request: Request) -> Response:
        def read(who: Identity, lang: str, now: float) -> dict[str, Any]:
            month = request.query_params.get("month", "") or self.views.this_month(now)
            return self.views.visits(who, month[:7], lang, now)

        return await self._api(request, read)


# ---------------------------------------------------------------------- query strings


def _int(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadQuery(f"{name}: a whole number, not {raw[:20]!r}") from None


def _text(request: Request, name: str, limit: int = 100) -> str:
    return request.query_params.get(name, "").strip()[:limit]


def _device_filter(request: Request) -> DeviceFilter:
    return DeviceFilter(
        problem=_text(request, "problem", 20),
        building=_text(request, "building", 64),
        family=_text(request, "family", 20),
        text=_text(request, "q"),
        page=_int(request, "page", 1) or 1,
    )


def _history_filter(request: Request) -> HistoryFilter:
    return HistoryFilter(
        since=_text(request, "from", 10),
        until=_text(request, "to", 10),
        building=_text(request, "building", 64),
        rule=_text(request, "rule", 64),
        severity=_int(request, "severity", None),
        person=_text(request, "person", 140),
        state=_text(request, "state", 10),
        text=_text(request, "q"),
        page=_int(request, "page", 1) or 1,
    )


def _more(request: Request, data: dict[str, Any]) -> dict[str, str]:
    """Links to the previous and next page, keeping the filters."""
    params = {k: v for k, v in request.query_params.items() if k != "page" and v}
    page = int(data.get("page", 1))
    prev = request.url.path + "?" + urlencode({**params, "page": page - 1}) if page > 1 else ""
    nxt = request.url.path + "?" + urlencode({**params, "page": page + 1}) if data.get("more") else ""
    return {"prev": prev, "next": nxt}
