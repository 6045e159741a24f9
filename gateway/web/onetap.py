"""The pages a one-tap link opens (一键确认): the alert, and one big 确认 that acknowledges it as
the person the link was sent to — no sign-in. Links are made and checked by
``gateway.alerts.links``; docs/console.md explains the design.

::

    GET  /ack/<alert id>/<token>   the alert, and a 确认 button (a person's link), or "who are you"
                                   among the people that channel paged (a group link); never acts
    POST /ack/<alert id>/<token>   acknowledge as the link's person (via "link"); 303 back to the GET

Why a GET never acts: chat apps and mail scanners fetch links to preview them, so the link a
WeCom group shows is opened by a robot before any person sees it. The POST needs no session and
no CSRF token of its own: what makes it safe is that the signed token in its URL is the secret,
bound to this alert and this person, which a forging page cannot know. (The console's
``SameSite=Strict`` session cookie plays no part: a link from WeCom opens without it anyway.)

A link that does not verify (edited, or another alert's) is a 403 page; an expired one a 410
page that says so and points to the sign-in; neither says more. Acknowledging an alert someone
already acknowledged changes nothing (the alert path keeps the first) and the page says who did.
Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.alerts.commands import apply_command
from gateway.alerts.links import AckLinks, Claim, LinkError, LinkSigner, store_key
from gateway.alerts.notify import PAGE_KINDS
from gateway.alerts.path import AlertPath
from gateway.clock import Clock
from gateway.models import Alert
from gateway.site.config import SiteConfig
from gateway.site.console import ConsoleSettings
from gateway.site.people import People
from gateway.store import Store
from gateway.web.board import BoardReader
from gateway.web.i18n import pick_lang

log = logging.getLogger("sensegate.console")

VIA = "link"
MAX_TOKEN = 256

WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "一键确认",
        "ack": "确认",
        "ack_as": "以 {name} 的身份确认这条报警",
        "who": "您是哪一位？（本条报警已通知的人员）",
        "i_am": "我是 {name}，确认",
        "nobody": "这条报警在此通道还没有通知到任何人，请登录值班台确认。",
        "done": "已确认，升级已停止。谢谢！",
        "already": "这条报警已由 {name} 于 {at} 确认，无需再次确认。",
        "resolved": "这条报警已处置完毕。",
        "bad": "链接无效：它可能被改动过，或不是这条报警的链接。请用短信回复、值班台或联系值班室确认。",
        "expired": "链接已过期（有效期 {hours} 小时）。请登录值班台确认，或联系值班室。",
        "no_alert": "没有这条报警。",
        "unknown_person": "这个链接的人员已不在站点配置中，不能用它确认。",
        "group": "请在上面选择您是谁。",
        "open_desk": "登录值班台查看详情、填写处置记录",
        "place": "地点",
        "raised": "报警时间",
        "state": "状态",
        "acked_by": "确认人",
        "resolved_by": "处置人",
    },
    "en": {
        "title": "Acknowledge",
        "ack": "Acknowledge",
        "ack_as": "Acknowledge this alert as {name}",
        "who": "Who are you? (the people this alert was sent to)",
        "i_am": "I am {name}: acknowledge",
        "nobody": "This channel has paged nobody about this alert yet; sign in to the duty desk.",
        "done": "Acknowledged; escalation stopped. Thank you!",
        "already": "{name} acknowledged this alert at {at}; nothing more to do.",
        "resolved": "This alert is resolved.",
        "bad": "This link is not valid: it was changed, or it is another alert's. Reply by SMS, use the duty desk "
        "or call the duty room.",
        "expired": "This link has expired (it lasts {hours} h). Sign in to the duty desk, or call the duty room.",
        "no_alert": "No such alert.",
        "unknown_person": "The person this link was for is no longer in the site config.",
        "group": "Choose who you are above.",
        "open_desk": "Sign in to the duty desk for details and the 处置 record",
        "place": "Place",
        "raised": "Raised",
        "state": "State",
        "acked_by": "Acknowledged by",
        "resolved_by": "Resolved by",
    },
}


class Desk(Protocol):
    """What the link pages use of the console (``gateway.web.console.Console``)."""

    config: SiteConfig
    settings: ConsoleSettings
    store: Store
    clock: Clock
    alerts: AlertPath
    reader: BoardReader
    templates: jinja2.Environment


class OneTap:
    def __init__(self, console: Desk) -> None:
        self.console = console
        self.people = People(console.config)
        self.hours = console.settings.link_hours
        self._links: AckLinks | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/ack/{alert_id}/{token}", self.page, methods=["GET"]),
            Route("/ack/{alert_id}/{token}", self.act, methods=["POST"]),
        ]

    async def _signer(self) -> AckLinks:
        if self._links is None:
            key = await asyncio.to_thread(store_key, self.console.store)
            self._links = AckLinks(LinkSigner(key), "", self.hours)
        return self._links

    async def _claim(self, request: Request) -> tuple[Claim | None, Response | None]:
        """The link's claim, or the page that says why there is none."""
        alert_id = request.path_params["alert_id"][:64]
        token = request.path_params["token"][:MAX_TOKEN]
        links = await self._signer()
        try:
            return links.signer.verify(alert_id, token, self.console.clock.now()), None
        except LinkError as exc:
            self.console.store.count({f"console.link.{exc.reason}": 1})
            log.warning("console: a %s one-tap link for alert %s", exc.reason, alert_id)
            key = "expired" if exc.reason == "expired" else "bad"
            status = 410 if exc.reason == "expired" else 403
            return None, self._render(request, status, error=key, login=f"/login?next=/alerts/{alert_id}")

    async def page(self, request: Request) -> Response:
        claim, refused = await self._claim(request)
        if claim is None:
            assert refused is not None
            return refused
        alert = await asyncio.to_thread(self.console.store.alert, claim.alert_id)
        if alert is None:
            return self._render(request, 404, error="no_alert")
        card = self._card(alert, request)
        login = f"/login?next=/alerts/{alert.id}"
        if claim.is_group:
            links = await self._signer()
            choices = [
                {
                    "name": self._name(p),
                    "action": links.path(alert.id, links.signer.token(alert.id, p, claim.expires_at)),
                }
                for p in await asyncio.to_thread(self._paged_on, alert.id, claim.channel)
            ]
            return self._render(request, 200, c=card, choices=choices, group=True, login=login)
        if claim.person not in self.people:
            return self._render(request, 403, c=card, error="unknown_person", login=login)
        return self._render(request, 200, c=card, person=self._name(claim.person), action=request.url.path, login=login)

    async def act(self, request: Request) -> Response:
        claim, refused = await self._claim(request)
        if claim is None:
            assert refused is not None
            return refused
        back = request.url.path
        if claim.is_group:
            return RedirectResponse(f"{back}?notice=group", status_code=303)
        command = {"action": "ack", "alert": claim.alert_id, "by": claim.person, "note": "", "via": VIA}
        # On the loop, like the console's own acknowledgements: the alert path is the one writer.
        result = apply_command(self.console.alerts, command)
        if result["ok"]:
            notice = "already" if result.get("already") else "done"
        else:
            notice = str(result.get("reason") or "error")
        log.info("console: ack %s by %s via link: %s", claim.alert_id, claim.person, notice)
        return RedirectResponse(f"{back}?notice={notice}", status_code=303)

    # ------------------------------------------------------------------ helpers

    def _paged_on(self, alert_id: str, channel: str) -> list[str]:
        """The people ``channel`` paged about the alert, in the order first paged."""
        found: dict[str, None] = {}
        for n in self.console.store.notifications(alert_id):
            if n.channel == channel and n.body.get("kind") in PAGE_KINDS:
                found.update((str(r["id"]), None) for r in n.body.get("recipients", ()))
        return [p for p in found if p in self.people]

    def _name(self, person: str) -> str:
        return self.people.names.get(person) or person

    def _card(self, a: Alert, request: Request) -> dict[str, Any]:
        lang = pick_lang(request.cookies.get("sg_lang"))
        zh = lang == "zh"
        reader = self.console.reader
        return {
            "id": a.id,
            "severity": int(a.severity),
            "severity_label": a.severity.label_zh if zh else a.severity.label_en,
            "message": a.message_zh if zh else a.message_en,
            "place": a.location.label_zh() if zh else a.location.label_en(),
            "raised": reader.full_time(a.raised_at),
            "open": a.is_open,
            "acked": a.acked_at is not None,
            "acked_by": reader.actor_name(a.acked_by, lang) if a.acked_by else "",
            "acked_by_name": self._name(a.acked_by) if a.acked_by else "",
            "acked_at": reader.full_time(a.acked_at) if a.acked_at else "",
            "resolved_by": reader.actor_name(a.resolved_by, lang) if a.resolved_by else "",
        }

    def _render(self, request: Request, status: int, **context: Any) -> Response:
        lang = pick_lang(request.cookies.get("sg_lang"))
        words = WORDS[lang]
        card = context.get("c")
        notice = request.query_params.get("notice", "")
        text = ""
        if card is not None:
            if notice in ("done", "group"):  # this person's acknowledgement just went in / choose who
                text = words[notice]
            elif not card["open"]:
                text = words["resolved"]
            elif card["acked"]:
                text = words["already"].format(name=card["acked_by_name"], at=card["acked_at"])
        error = context.pop("error", "")
        body = self.console.templates.get_template("onetap.html").render(
            {
                "w": words,
                "lang": lang,
                "site": self.console.config.gateway.site,
                "error": words[error].format(hours=f"{self.hours:g}") if error else "",
                "notice": text,
                "c": None,
                "choices": [],
                "group": False,
                "person": "",
                "action": "",
                "login": "/login",
                **context,
            }
        )
        return Response(body, status, media_type="text/html; charset=utf-8")


def onetap_routes(console: Desk) -> list[Route]:
    """The one-tap link routes for the console's app (gateway.web.console adds them)."""
    return OneTap(console).routes()
