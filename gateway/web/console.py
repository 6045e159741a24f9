"""The duty desk (值班台): pages for people, a JSON API for machines, one Starlette app on the
gateway's event loop (served by ``gateway.web.server``). See docs/console.md.

::

    GET  /healthz                        no sign-in: {"ok": true}
    GET  /login, POST /login             sign in (rate-limited); POST /logout
    GET  /lang/<zh|en>?next=/            the language toggle (a cookie); /login?lang=en signed out
    GET  /                               the live board: open alerts by severity and age
    GET  /events                         server-sent events: the board again whenever it changes
    GET  /alerts/<id>                    one alert: its ladder and audit trail in local time
    POST /alerts/<id>/ack | /resolve     form posts (CSRF field), as the signed-in person
    GET  /api/v1/alerts[?all=1]          JSON, by session or ``Authorization: Bearer <token>``
    GET  /api/v1/alerts/<id>
    POST /api/v1/alerts/<id>/ack | /resolve   {"note": "…"}; a session also sends X-CSRF-Token
    GET  /api/openapi.json               the JSON API described (OpenAPI 3.1)
    GET  /static/…                       CSS, JS (no inline script: the CSP forbids it)
    GET  /ack/<id>/<token>, POST         a one-tap link from a page (gateway.web.onetap)

Nothing but the login page, /healthz, the static files and one-tap links (whose signed token is
their credential) answers without a session or a token: a page redirects to /login, the API
says 401.

Acknowledging and resolving go through the alert path, the one writer of alert state, with
the same command as the CLI and MQTT (``gateway.alerts.commands``), applied at once on this
loop; ``by`` is who signed in — a config id, or ``token:<name>`` for a token — never a name
from the request. What a person sees and may act on is their role's (``auth.Identity``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drivers.native import load_json
from gateway.alerts.commands import MAX_NOTE, apply_command
from gateway.alerts.notify import Notifier
from gateway.alerts.path import AlertPath, LifecycleError
from gateway.clock import Clock
from gateway.errors import PayloadError
from gateway.models import Alert
from gateway.site.config import SiteConfig
from gateway.store import Store
from gateway.web.auth import (
    Identity,
    LoginLimiter,
    person_identity,
    retry_header,
    token_identity,
    verify_password_async,
)
from gateway.web.board import (
    BoardReader,
    LadderView,
    action_text,
    age_text,
    detail_text,
    needs_alarm,
    sort_key,
    state_text,
)
from gateway.web.changes import Changes
from gateway.web.i18n import ROLE_EN, TEXT, pick_lang
from gateway.web.live import LiveBoards
from gateway.web.onetap import onetap_routes
from gateway.web.openapi import openapi
from gateway.web.pages import page_routes
from gateway.web.testmode import TestModePages

log = logging.getLogger("sensegate.console")

MAX_BODY = 16 * 1024  # a form or a JSON command; nothing the console takes is bigger
MAX_HEAD = 16 * 1024  # request line and headers
BODY_SECONDS = 10.0  # a request body must arrive within this
PING_SECONDS = 15.0  # an event stream says something this often (proxies, dead phones)
COALESCE_SECONDS = 0.1  # a burst of changes is one board update
LOGIN_COOKIE_SECONDS = 3600


class Console:
    def __init__(
        self,
        config: SiteConfig,
        store: Store,
        clock: Clock,
        alerts: AlertPath,
        notifier: Notifier,
        changes: Changes,
        *,
        timezone: str = "Asia/Shanghai",
    ) -> None:
        self.config = config
        self.settings = config.console
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.changes = changes
        self.reader = BoardReader(store, notifier, timezone)
        self.limiter = LoginLimiter(clock)
        self.hashing = asyncio.Semaphore(2)
        self.closing = asyncio.Event()
        tls = self.settings.tls
        # __Host-: the browser keeps it for this host only, sent over TLS only.
        self.session_cookie = "__Host-sg_session" if tls else "sg_session"
        self.secure = tls
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates = env
        self.live = LiveBoards(self._board, env.get_template("_board.html"), _sse)
        static = resources.files("gateway.web") / "static"
        routes = [
            Route("/healthz", self.healthz),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/lang/{lang}", self.set_lang),
            Route("/", self.board),
            Route("/events", self.events),
            Route("/alerts/{alert_id}", self.alert_page),
            Route("/alerts/{alert_id}/{action}", self.act_form, methods=["POST"]),
            Route("/api/openapi.json", self.openapi),
            Route("/api/v1/alerts", self.api_list),
            Route("/api/v1/alerts/{alert_id}", self.api_show),
            Route("/api/v1/alerts/{alert_id}/{action}", self.api_act, methods=["POST"]),
            *onetap_routes(self),
            *TestModePages(self, timezone).routes(),  # 测试模式 / 现场调试 (gateway/web/testmode.py)
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ]
        routes += page_routes(self)  # 全小区, 楼栋, 住户卡, 设备, 告警记录, 探访 (gateway/web/pages.py)
        app = Starlette(routes=routes, max_body_size=MAX_BODY, exception_handlers={HTTPException: self._http_error})
        app.router.redirect_slashes = False  # /api/v1/alerts/ is no page: 404, not a redirect to one
        self.asgi: ASGIApp = SecurityHeaders(BodyDeadline(app, BODY_SECONDS), hsts=tls)

    def close(self) -> None:
        """The server is stopping: end the event streams so their connections can close."""
        self.closing.set()
        self.changes.bump()

    # ------------------------------------------------------------------ who is asking

    async def identity(self, request: Request) -> Identity | None:
        """The token in ``Authorization: Bearer``, else the session cookie; None if neither is valid."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            token = await asyncio.to_thread(self.store.api_token_by_secret, credential.strip())
            return None if token is None else token_identity(token.name, token.role)
        session_id = request.cookies.get(self.session_cookie, "")
        if not session_id:
            return None
        session = await asyncio.to_thread(self.store.session, session_id, self.clock.now())
        if session is None:
            return None
        return person_identity(self.config, session.user_id, csrf=session.csrf, expires_at=session.expires_at)

    def _csrf_ok(self, who: Identity, given: str | None) -> bool:
        return who.is_token or (bool(who.csrf) and hmac.compare_digest(who.csrf, given or ""))

    def _lang(self, request: Request) -> str:
        return pick_lang(request.cookies.get("sg_lang"))

    def _render(
        self, request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> Response:
        lang = self._lang(request)
        template = self.templates.get_template(name)
        base = {
            "t": TEXT[lang],
            "lang": lang,
            "site": self.config.gateway.site,
            "path": request.url.path,
            "who": None,
            "role_label": "",
            "csrf": "",
            "notice": "",
        }
        who = context.get("who")
        if isinstance(who, Identity):
            base["role_label"] = who.role.label_zh if lang == "zh" else ROLE_EN[who.role.value]
            base["csrf"] = who.csrf
        body = template.render({**base, **context})
        return Response(body, status, headers=headers, media_type="text/html; charset=utf-8")

    def _to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status)
        return PlainTextResponse(str(detail), status)

    # ------------------------------------------------------------------ open endpoints

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def login_page(self, request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next"))
        if await self.identity(request) is not None:
            return RedirectResponse(nxt, status_code=303)
        if "lang" in request.query_params:  # the toggle before signing in
            lang = pick_lang(request.query_params["lang"])
            response = RedirectResponse(f"/login?next={quote(nxt, safe='')}", status_code=303)
            self._lang_cookie(response, lang)
            return response
        return self._login_form(request, nxt)

    def _login_form(
        self, request: Request, nxt: str, error: str = "", status: int = 200, user: str = "", retry: str = ""
    ) -> Response:
        token = secrets.token_urlsafe(24)
        headers = {"Retry-After": retry} if retry else {}
        response = self._render(
            request, "login.html", status, headers, next=nxt, error=error, login_csrf=token, user=user
        )
        response.set_cookie(
            "sg_login",
            token,
            max_age=LOGIN_COOKIE_SECONDS,
            path="/login",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        user = str(form.get("user", "")).strip()[:64]
        password = str(form.get("password", ""))
        nxt = _safe_next(str(form.get("next", "/")))
        t = TEXT[self._lang(request)]
        cookie = request.cookies.get("sg_login", "")
        if not cookie or not hmac.compare_digest(cookie, str(form.get("csrf", ""))):
            return self._login_form(request, nxt, t["bad_form"], 400, user)
        client = request.client.host if request.client else "?"
        wait = self.limiter.retry_after(client, user)
        if wait > 0:
            seconds = retry_header(wait)
            return self._login_form(request, nxt, t["too_many"].format(seconds=seconds), 429, user, seconds)
        who = person_identity(self.config, user)
        row = await asyncio.to_thread(self.store.user, user) if who is not None else None
        ok = await verify_password_async(self.hashing, row.password_hash if row else None, password)
        if not ok or who is None:
            wait = self.limiter.failed(client, user)
            # The id typed only when it is one: a password typed into the id field stays out of the log.
            log.warning(
                "console: failed sign-in as %s from %s%s",
                repr(user) if who is not None else "an unknown id",
                client,
                f"; next attempt in {wait:.0f} s" if wait else "",
            )
            return self._login_form(request, nxt, t["wrong_password"], 401, user)
        self.limiter.succeeded(client, user)
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock.now()
        lifetime = self.settings.session_hours * 3600
        await asyncio.to_thread(self.store.add_session, session_id, user, csrf, now, now + lifetime)
        log.info("console: %s signed in from %s", user, client)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            self.session_cookie,
            session_id,
            max_age=int(lifetime),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie("sg_login", path="/login", secure=self.secure, httponly=True, samesite="strict")
        return response

    async def logout(self, request: Request) -> Response:
        who = await self.identity(request)
        form = await request.form()
        if who is not None and not who.is_token:
            if not self._csrf_ok(who, str(form.get("csrf", ""))):
                return PlainTextResponse("CSRF token missing or wrong", 403)
            await asyncio.to_thread(self.store.drop_session, request.cookies.get(self.session_cookie, ""))
            log.info("console: %s signed out", who.actor)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(self.session_cookie, path="/", secure=self.secure, httponly=True, samesite="strict")
        return response

    async def set_lang(self, request: Request) -> Response:
        lang = pick_lang(request.path_params["lang"])
        nxt = _safe_next(request.query_params.get("next"))
        if await self.identity(request) is None:  # signed out: the login page has its own toggle
            return RedirectResponse(f"/login?lang={lang}&next={quote(nxt, safe='')}", status_code=303)
        response = RedirectResponse(nxt, status_code=303)
        self._lang_cookie(response, lang)
        return response

    def _lang_cookie(self, response: Response, lang: str) -> None:
        response.set_cookie(
            "sg_lang", lang, max_age=365 * 86_400, path="/", secure=self.secure, httponly=True, samesite="strict"
        )

    # ------------------------------------------------------------------ the board

    async def _board(self, who: Identity, lang: str) -> dict[str, Any]:
        """What the board shows ``who``: the open alerts, whether one needs the alarm sound, and
        the test modes running (the alarms of those places page nobody: the person on duty must
        know, and a test mode forgotten is seen)."""
        cards, alarm = await self._cards(who, lang)
        return {"cards": cards, "alarm": alarm, "tests": await asyncio.to_thread(self._tests)}

    def _tests(self) -> list[dict[str, str]]:
        """The test modes running, oldest first, for everyone who sees the board: a site's or
        another building's is news to every person on duty."""
        now = self.clock.now()
        names = {s.id: s.name for s in self.config.staff}
        return [
            {
                "label": m.label,
                "by": names.get(m.started_by, m.started_by),
                "until": self.reader.when(m.ends_at, now, seconds=False),
            }
            for m in reversed(self.store.test_modes(open_only=True))
            if m.running(now)
        ]

    async def _cards(self, who: Identity, lang: str) -> tuple[list[dict[str, Any]], bool]:
        """The open alerts ``who`` sees, most severe and oldest first, ready for the templates."""
        now = self.clock.now()

        def read() -> list[tuple[Alert, LadderView, str]]:
            found = []
            for alert in self.store.alerts(open_only=True, limit=10_000):
                household = self.reader.household_of(alert)
                if who.sees(alert, household):
                    found.append((alert, self.reader.ladder(alert), household))
            found.sort(key=lambda f: sort_key(f[0]))
            return found

        rows = await asyncio.to_thread(read)
        cards = [self._card(a, ladder, household, who, lang, now) for a, ladder, household in rows]
        return cards, any(needs_alarm(a) for a, _, _ in rows)

    def _card(
        self, a: Alert, ladder: LadderView, household: str, who: Identity, lang: str, now: float
    ) -> dict[str, Any]:
        zh = lang == "zh"
        return {
            "id": a.id,
            "severity": int(a.severity),
            "severity_label": a.severity.label_zh if zh else a.severity.label_en,
            "message": a.message_zh if zh else a.message_en,
            "place": a.location.label_zh() if zh else a.location.label_en(),
            "raised": self.reader.when(a.raised_at, now),
            "raised_full": self.reader.full_time(a.raised_at),
            "raised_at": a.raised_at,
            "age": age_text(now - a.raised_at, lang),
            "count": a.count,
            "state": state_text(a.state, lang),
            "acked": a.acked_at is not None,
            "acked_by": self.reader.actor_name(a.acked_by, lang) if a.acked_by else "",
            "acked_at": self.reader.when(a.acked_at, now) if a.acked_at else "",
            "alarm": needs_alarm(a),
            "may_act": who.may_act(a, household),
            "open": a.is_open,
            "resolved_by": self.reader.actor_name(a.resolved_by, lang) if a.resolved_by else "",
            "resolve_note": a.resolve_note,
            "ladder": self._ladder(ladder, lang, now),
        }

    def _ladder(self, ladder: LadderView, lang: str, now: float) -> dict[str, Any]:
        t = TEXT[lang]
        sep = "、" if lang == "zh" else ", "
        pages = [
            {
                "tier": t["tier"].format(n=p.tier + 1),
                "to": sep.join(p.to) or t["nobody"],
                "channels": ", ".join(p.channels),
                "at": self.reader.when(p.at, now),
                "held_until": self.reader.when(p.held_until, now) if p.held_until is not None else "",
            }
            for p in ladder.pages
        ]
        nxt = None
        if ladder.next is not None:
            n = ladder.next
            nxt = {
                "tier": t["tier"].format(n=n.tier + 1),
                "to": sep.join(n.to) or t["nobody"],
                "channels": ", ".join(n.channels),
                "at": self.reader.when(n.at, now),
                "in": age_text(n.at - now, lang) if n.at > now else "",
            }
        return {"pages": pages, "next": nxt, "stopped": ladder.stopped, "unrouted": ladder.unrouted}

    async def board(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None or who.is_token:
            return self._to_login(request)
        lang = self._lang(request)
        board = await self._board(who, lang)
        return self._render(request, "board.html", who=who, notice=_notice(request, lang), **board)

    async def events(self, request: Request) -> Response:
        """The board as server-sent events: a ``board`` event with the board's HTML whenever it
        changes, a comment every PING_SECONDS, ``expired`` when the sign-in ends."""
        who = await self.identity(request)
        if who is None or who.is_token:
            return PlainTextResponse("sign in first", 401)
        lang = self._lang(request)
        session_id = request.cookies.get(self.session_cookie, "")

        async def stream() -> AsyncIterator[str]:
            yield "retry: 3000\n\n"
            seen = -1
            while not self.closing.is_set():
                session = await asyncio.to_thread(self.store.session, session_id, self.clock.now())
                if session is None:
                    yield "event: expired\ndata: -\n\n"
                    return
                if self.changes.version != seen:
                    seen = self.changes.version
                    yield await self.live.event(who, lang, seen)  # rendered once for all who see the same
                    yield ": sent\n\n"  # the server keeps no copy of the board while the stream waits
                else:
                    yield ": ping\n\n"
                await self.changes.wait(seen, PING_SECONDS)
                await asyncio.sleep(COALESCE_SECONDS)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def alert_page(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None or who.is_token:
            return self._to_login(request)
        lang = self._lang(request)
        alert, household = await self._visible(who, request.path_params["alert_id"])
        if alert is None:
            t = TEXT[lang]
            return self._render(request, "message.html", 404, who=who, message=t["not_found"])
        now = self.clock.now()

        def read() -> tuple[LadderView, list[dict[str, Any]]]:
            rows = self.store.alert_log(alert.id)
            trail = [
                {
                    "at": self.reader.full_time(r.at),
                    "action": action_text(r.action, lang),
                    "kind": r.action,
                    "who": r.actor,
                    "channel": r.channel,
                    "detail": detail_text(r.action, r.detail, self.reader, lang),
                }
                for r in self.reader.trail(alert, rows, lang)
            ]
            return self.reader.ladder(alert, rows), trail

        ladder, trail = await asyncio.to_thread(read)
        card = self._card(alert, ladder, household, who, lang, now)
        return self._render(request, "alert.html", who=who, c=card, trail=trail, notice=_notice(request, lang))

    async def _visible(self, who: Identity, alert_id: str) -> tuple[Alert | None, str]:
        """The alert (by id or a unique prefix) if ``who`` may see it; else None, as if it did not
        exist (a duty officer of one building learns nothing of another's)."""

        def read() -> tuple[Alert | None, str]:
            try:
                alert = self.alerts.find(alert_id[:64])
            except LifecycleError:
                return None, ""
            household = self.reader.household_of(alert)
            return (alert, household) if who.sees(alert, household) else (None, "")

        return await asyncio.to_thread(read)

    async def _act(self, who: Identity, alert_id: str, action: str, note: str) -> tuple[int, dict[str, Any]]:
        """Acknowledge or resolve as ``who``: (HTTP status, the command's result)."""
        if action not in ("ack", "resolve"):
            return 404, {"error": "POST …/ack or …/resolve"}
        alert, household = await self._visible(who, alert_id)
        if alert is None:
            return 404, {"ok": False, "error": f"no alert {alert_id[:64]!r}", "reason": "no_alert"}
        if not who.may_act(alert, household):
            return 403, {"ok": False, "error": f"a {who.role.value} may not {action} this alert", "reason": "forbidden"}
        command = {"action": action, "alert": alert.id, "by": who.actor, "note": note[:MAX_NOTE], "via": who.via}
        # On the loop, like the gateway's queued commands: the alert path is the one writer.
        result = apply_command(self.alerts, command, authenticated=True)
        log.info(
            "console: %s %s by %s via %s: %s",
            action,
            alert.id,
            who.actor,
            who.via,
            "ok" if result["ok"] else result.get("error"),
        )
        if result.get("ok"):
            return 200, result
        return _STATUS.get(str(result.get("reason")), 409), result

    async def act_form(self, request: Request) -> Response:
        who = await self.identity(request)
        wants_json = "application/json" in request.headers.get("accept", "")
        if who is None or who.is_token:
            return JSONResponse({"error": "sign in first"}, 401) if wants_json else self._to_login(request)
        form = await request.form()
        if not self._csrf_ok(who, str(form.get("csrf", ""))):
            return _refuse(wants_json, 403, "CSRF token missing or wrong")
        action = request.path_params["action"]
        note = str(form.get("note", "")).strip()
        if action == "resolve" and not note:
            return _refuse(wants_json, 400, "a resolve needs a 处置记录 (note)")
        status, result = await self._act(who, request.path_params["alert_id"], action, note)
        if wants_json:
            return JSONResponse(result, status)
        back = _safe_next(str(form.get("next", "/")))
        notice = "done" if status == 200 else str(result.get("reason", "error"))
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}notice={quote(notice)}", status_code=303)

    # ------------------------------------------------------------------ JSON API

    async def _api_identity(self, request: Request) -> Identity | Response:
        who = await self.identity(request)
        if who is None:
            return JSONResponse(
                {"error": "sign in, or send Authorization: Bearer <API token>"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="sensegate"'},
            )
        return who

    async def openapi(self, request: Request) -> Response:
        who = await self._api_identity(request)
        if isinstance(who, Response):
            return who
        return JSONResponse(openapi(self.settings.public_url))

    async def api_list(self, request: Request) -> Response:
        who = await self._api_identity(request)
        if isinstance(who, Response):
            return who
        every = request.query_params.get("all", "0") in ("1", "true")

        def read() -> list[dict[str, Any]]:
            out = []
            for a in self.store.alerts(open_only=not every, limit=10_000):
                household = self.reader.household_of(a)
                if who.sees(a, household):
                    out.append({**a.to_dict(), "household": household, "may_act": who.may_act(a, household)})
            return out

        return JSONResponse({"alerts": await asyncio.to_thread(read)})

    async def api_show(self, request: Request) -> Response:
        who = await self._api_identity(request)
        if isinstance(who, Response):
            return who
        alert, household = await self._visible(who, request.path_params["alert_id"])
        if alert is None:
            return JSONResponse({"error": f"no alert {request.path_params['alert_id'][:64]!r}"}, 404)

        def read() -> dict[str, Any]:
            rows = self.store.alert_log(alert.id)
            trail = [
                {"at": r.at, "action": r.action, "actor": r.actor, "channel": r.channel, "detail": r.detail}
                for r in rows
            ]
            notes = [
                {"key": n.key, "channel": n.channel, "state": n.state, "attempts": n.attempts, "due_at": n.due_at}
                for n in self.store.notifications(alert.id)
            ]
            ladder = self.reader.ladder(alert, rows)
            return {
                "alert": {**alert.to_dict(), "household": household, "may_act": who.may_act(alert, household)},
                "trail": trail,
                "notifications": notes,
                "ladder": _ladder_json(ladder),
            }

        return JSONResponse(await asyncio.to_thread(read))

    async def api_act(self, request: Request) -> Response:
        who = await self._api_identity(request)
        if isinstance(who, Response):
            return who
        if not self._csrf_ok(who, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "a signed-in browser sends its CSRF token in X-CSRF-Token"}, 403)
        raw = await request.body()
        try:
            data = load_json(raw, "body") if raw.strip() else {}  # strict JSON, no absurd nesting
        except PayloadError as exc:
            return JSONResponse({"error": f"body is not JSON: {exc}"}, 400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "body must be a JSON object"}, 400)
        if "by" in data:
            return JSONResponse(
                {"error": "by is not accepted: the actor is the signed-in person or the token (docs/console.md)"}, 400
            )
        note = data.get("note", "")
        if not isinstance(note, str):
            return JSONResponse({"error": "note must be text"}, 400)
        status, result = await self._act(who, request.path_params["alert_id"], request.path_params["action"], note)
        return JSONResponse(result, status)


# A refused command's reason (gateway.alerts.path.LifecycleError) → status; the rest are 409.
_STATUS = {"no_alert": 404, "unknown_person": 401, "forbidden": 403}

_NOTICES = {"done", "already_resolved", "no_alert", "ambiguous", "forbidden", "unknown_person"}


def _notice(request: Request, lang: str) -> str:
    """A known result code from the redirect after a form post, as words (never the query's text)."""
    code = request.query_params.get("notice", "")
    if code not in _NOTICES:
        return ""
    words = {
        "zh": {
            "done": "已提交",
            "already_resolved": "这条报警已处置完毕",
            "no_alert": "没有这条报警",
            "ambiguous": "报警编号不唯一",
            "forbidden": "您的角色不能处置这条报警",
            "unknown_person": "您的账号不能处置报警",
        },
        "en": {
            "done": "Done",
            "already_resolved": "This alert is already resolved",
            "no_alert": "No such alert",
            "ambiguous": "The alert id is ambiguous",
            "forbidden": "Your role may not act on this alert",
            "unknown_person": "Your account may not act on alerts",
        },
    }
    return words[lang][code]


def _refuse(wants_json: bool, status: int, error: str) -> Response:
    return JSONResponse({"ok": False, "error": error}, status) if wants_json else PlainTextResponse(error, status)


def _safe_next(value: str | None) -> str:
    """A local path to go back to; anything else (another host, ``//evil``) is the board."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _sse(event: str, data: str, event_id: int) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {event_id}\nevent: {event}\n{lines}\n"


def _ladder_json(ladder: LadderView) -> dict[str, Any]:
    return {
        "ladder": ladder.ladder,
        "pages": [
            {"at": p.at, "tier": p.tier, "to": list(p.to), "channels": list(p.channels), "held_until": p.held_until}
            for p in ladder.pages
        ],
        "next": None
        if ladder.next is None
        else {
            "tier": ladder.next.tier,
            "at": ladder.next.at,
            "to": list(ladder.next.to),
            "channels": list(ladder.next.channels),
            "repeat": ladder.next.repeat,
        },
        "stopped": ladder.stopped,
        "unrouted": ladder.unrouted,
    }


# ---------------------------------------------------------------------- ASGI wrappers

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Every response, errors included: the CSP (no inline script or style), no framing, no
    referrer outside the box, no sniffing, nothing cached but the static files; HSTS over TLS."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if hsts:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"max-age=300" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyDeadline:
    """A request body must arrive within ``seconds``: a client that sends its headers and then
    trickles the body gets 408 instead of holding a task. Once the body is in, ``receive`` is
    the server's own again (an event stream waits on it for the disconnect). A request head over
    ``MAX_HEAD`` gets 431."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_HEAD:
            # h11 bounds a head that arrives in pieces (gateway.web.server); one that arrived whole
            # is bounded here.
            await PlainTextResponse("request head too large", 431)(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, "request body not received in time") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
