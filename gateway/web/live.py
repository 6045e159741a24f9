"""The live board's event, rendered once per change for everyone who sees the same board.

Every console on the board has its own event stream (``/events``), and every change (an alert
raised, paged, acknowledged) used to read the open alerts and render the board again in each
of them: twenty consoles, twenty reads and twenty renders of the same HTML, and twenty copies
of it held while the streams waited. Here the board is read and rendered once per change and
per *view* — the language and what the identity sees and may do (role, buildings, households);
each stream only puts its own session's CSRF token into the shared text (the forms carry it).

A render in progress is shared (a task the streams await, shielded so one console going away
does not cancel it for the others); a failed one is forgotten, so the next change tries again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import jinja2

from gateway.web.auth import Identity
from gateway.web.i18n import TEXT

# What the board template is given for a viewer: cards, alarm, tests (``Console._board``).
Board = Callable[[Identity, str], Awaitable[dict[str, Any]]]
Sse = Callable[[str, str, int], str]


class LiveBoards:
    def __init__(self, board: Board, template: jinja2.Template, sse: Sse) -> None:
        self.board = board
        self.template = template
        self.sse = sse
        self.placeholder = secrets.token_hex(16)  # where each stream's CSRF token goes
        self._version = -1
        self._renders: dict[Hashable, asyncio.Task[str]] = {}

    @staticmethod
    def view(who: Identity, lang: str) -> Hashable:
        """What decides the board's content: the same for every session of one role and scope."""
        return (lang, who.role, who.buildings, who.households)

    async def event(self, who: Identity, lang: str, version: int) -> str:
        """The ``board`` server-sent event for ``who`` at changes ``version``."""
        if version != self._version:
            self._version, self._renders = version, {}
        key = self.view(who, lang)
        task = self._renders.get(key)
        if task is None:
            task = self._renders[key] = asyncio.ensure_future(self._render(who, lang, version))
            task.add_done_callback(lambda t: self._forget_failed(key, t))
        text = await asyncio.shield(task)
        return text.replace(self.placeholder, who.csrf)

    async def _render(self, who: Identity, lang: str, version: int) -> str:
        board = await self.board(who, lang)
        html = self.template.render({"t": TEXT[lang], "lang": lang, "csrf": self.placeholder, **board})
        return self.sse("board", html, version)

    def _forget_failed(self, key: Hashable, task: asyncio.Task[str]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._renders.get(key) is task:
            del self._renders[key]
