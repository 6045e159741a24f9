"""The console's test-mode and walk-test pages (gateway/web/testmode.py), in-process: installers
and managers only, the signed-in person in the audit trail, the checklist and the stored report."""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from gateway.models import TEST, Family, Kind
from tests.gateway.factories import event
from tests.web.helpers import Desk, desk, form_token, sign_in


@contextlib.asynccontextmanager
async def _signed_in(d: Desk, person: str) -> AsyncIterator[httpx.AsyncClient]:
    d.set_password(person)
    async with d.client() as client:
        assert (await sign_in(client, person)).status_code == 303
        yield client


async def test_only_installers_and_managers_see_the_page_and_the_link(tmp_path: Path) -> None:
    d = desk(tmp_path)
    for person, status in (("s-li", 403), ("v-zhang", 403), ("s-fix", 200), ("s-boss", 200)):
        async with _signed_in(d, person) as client:
            r = await client.get("/testmode")
            assert r.status_code == status, person
            board = await client.get("/")
            assert ('href="/testmode"' in board.text) == (status == 200), person


async def test_an_installer_sets_and_ends_a_test_mode_in_their_own_name(tmp_path: Path) -> None:
    d = desk(tmp_path)
    async with _signed_in(d, "s-fix") as client:
        page = await client.get("/testmode")
        assert "目前没有测试模式" in page.text
        csrf = form_token(page.text)
        form = {"csrf": csrf, "scope": "building", "target": "1", "minutes": "30", "kind": "testmode", "by": "s-boss"}
        r = await client.post("/testmode/start", data=form)
        assert r.status_code == 303 and "notice=ok" in r.headers["location"]
        (mode,) = d.store.test_modes(open_only=True)
        assert (mode.label, mode.started_by, mode.via, mode.ends_at - mode.started_at) == (
            "1号楼",
            "s-fix",
            "console",
            1800,
        )
        (stored,) = d.store.append([event(Kind.SOS_PRESSED, Family.SOS, device="101-sos", t=d.clock.now())], {})
        assert stored.values[TEST] is True and d.alerts.process([stored]) == []
        page = await client.get("/testmode")
        assert "1号楼" in page.text and "结束测试模式" in page.text
        bad = await client.post("/testmode/start", data={**form, "target": "9"})
        shown = await client.get(bad.headers["location"])  # the service's refusal, shown as a notice
        assert "no building '9' in the site" in html.unescape(shown.text)
        assert (await client.post(f"/testmode/{mode.id}/end", data={"scope": "x"})).status_code == 403  # no CSRF
        r = await client.post(f"/testmode/{mode.id}/end", data={"csrf": csrf})
        assert r.status_code == 303
    assert [(r.action, r.actor, r.via) for r in d.store.test_mode_log(mode.id)] == [
        ("started", "s-fix", "console"),
        ("ended", "s-fix", "console"),
    ]


async def test_a_walk_test_from_the_console_shows_its_checklist_and_keeps_its_report(tmp_path: Path) -> None:
    d = desk(tmp_path)
    async with _signed_in(d, "s-boss") as client:
        csrf = form_token((await client.get("/testmode")).text)
        form = {"csrf": csrf, "scope": "household", "target": "1-1-101", "minutes": "", "kind": "commission"}
        r = await client.post("/testmode/start", data=form)
        assert r.status_code == 303 and r.headers["location"].startswith("/commission/1")
        d.store.append([event(Kind.SOS_PRESSED, Family.SOS, device="101-sos", t=d.clock.now(), linkquality=30)], {})
        page = await client.get("/commission/1")
        assert page.status_code == 200 and 'http-equiv="refresh"' in page.text
        for words in ("101-sos", "信号弱", "101-smoke", "未上报", "请按测试键"):
            assert words in page.text, words
        r = await client.post("/commission/1/finish", data={"csrf": csrf})
        assert r.status_code == 303
        page = await client.get("/commission/1")
        assert 'http-equiv="refresh"' not in page.text and "report.html" in page.text
        report = await client.get("/commission/1/report.html")
        assert report.status_code == 200 and "现场调试报告" in report.text and "孙经理 (s-boss)" in report.text
        assert "style-src 'unsafe-inline'" in report.headers["content-security-policy"]
        assert "script" not in report.headers["content-security-policy"]
        sheet = await client.get("/commission/1/report.csv")
        assert sheet.text.startswith("\ufeff楼栋") and "attachment" in sheet.headers["content-disposition"]
        assert (await client.get("/commission/2/report.html")).status_code == 404
    (c,) = d.store.commissions()
    assert c.finished_by == "s-boss" and c.summary is not None and "101-smoke" in c.summary["not_seen"]


async def test_everyone_on_the_board_sees_the_test_modes_running_and_the_live_board_is_told(tmp_path: Path) -> None:
    d = desk(tmp_path)
    async with _signed_in(d, "s-li") as duty:
        assert "测试模式进行中" not in (await duty.get("/")).text
        seen = d.console.changes.version
        async with _signed_in(d, "s-fix") as fixer:
            csrf = form_token((await fixer.get("/testmode")).text)
            form = {"csrf": csrf, "scope": "household", "target": "1-1-101", "minutes": "30", "kind": "testmode"}
            assert (await fixer.post("/testmode/start", data=form)).status_code == 303
            assert d.console.changes.version > seen  # the live boards render again
            board = html.unescape((await duty.get("/")).text)
            assert "测试模式进行中：以下范围的报警不会通知任何人" in board
            assert "1号楼1单元101室 · 周师傅 · 至 " in board  # where, who set it, until when
            (mode,) = d.store.test_modes(open_only=True)
            seen = d.console.changes.version
            assert (await fixer.post(f"/testmode/{mode.id}/end", data={"csrf": csrf})).status_code == 303
            assert d.console.changes.version > seen
        assert "测试模式进行中" not in (await duty.get("/")).text
