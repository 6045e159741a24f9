"""The console's site pages in-process (httpx against the ASGI app, a virtual clock): what the
household card, the building grid, the site overview, the device list, the alert history and
the visits page show, and that each is cut to the signed-in person's scope exactly as the board
is — duty staff of building 1 get 404 for building 2, a visitor sees the households they look
after, an installer sees every device but no family phone number."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.alerts.commands import apply_command
from gateway.care.checkin import checkin_event
from gateway.care.report import build_report
from gateway.errors import StoreError
from gateway.models import Alert, AlertState, Family, Kind, Location, Severity
from gateway.web.auth import Identity, person_identity
from gateway.web.console import _sse
from gateway.web.live import LiveBoards
from tests.gateway.factories import event
from tests.web.helpers import Desk, desk, sign_in, two_buildings

HOUR = 3600.0

TOKEN_AUTH = {"Authorization": "Bearer sgt_pages-token-0123456789abcdef"}


def _site() -> dict[str, Any]:
    """Two buildings (see helpers.two_buildings) with family contacts and phones, a community
    worker on the staff for building 2, and a smoke detector that reports every 10 minutes."""
    site = two_buildings()
    site["residents"][0]["contacts"] = [{"name": "王小明", "phone": "13800000003", "relation": "儿子"}]
    site["residents"][1]["contacts"] = [{"name": "李建国", "phone": "13800000004", "relation": "女儿"}]
    site["visitors"][0]["phone"] = "13900000009"
    site["staff"].append({"id": "s-grid", "name": "赵社工", "role": "community_worker", "buildings": ["2"]})
    for d in site["devices"]:
        if d["id"] == "101-smoke":
            d["report_interval"] = 600
    return site


def _desk(tmp_path: Path) -> Desk:
    d = desk(tmp_path, _site())
    for person in ("s-li", "s-wang", "s-fix", "s-boss", "s-grid", "v-zhang"):
        d.set_password(person)
    return d


def _report(d: Desk, device: str, kind: Kind, family: Family, ago: float = 0.0, **values: Any) -> None:
    d.store.append([event(kind, family, device=device, t=d.clock.now() - ago, **values)], {})


@contextlib.asynccontextmanager
async def _as(d: Desk, person: str) -> AsyncIterator[httpx.AsyncClient]:
    async with d.client() as client:
        r = await sign_in(client, person)
        assert r.status_code == 303, person
        yield client


def _no_inline_script(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", html)


# ---------------------------------------------------------------------- household card


async def test_the_household_card_shows_residents_contacts_visitors_devices_activity_alerts_and_visits(
    tmp_path: Path,
) -> None:
    d = _desk(tmp_path)
    past = d.raise_sos()
    resolved = apply_command(
        d.alerts, {"action": "resolve", "alert": past.id, "by": "s-li", "note": "误按"}, authenticated=True
    )
    assert resolved["ok"]
    await d.clock.advance(60)
    smoke = d.store.append([event(Kind.SMOKE_ALARM, Family.SMOKE, device="101-smoke", t=d.clock.now())], {})
    (now_open,) = [t.alert for t in d.alerts.process(smoke) if t.kind == "raised"]
    _report(d, "101-door", Kind.DOOR_OPENED, Family.DOOR, ago=HOUR, linkquality=140)
    _report(d, "101-door", Kind.BATTERY, Family.DOOR, ago=HOUR, battery=96)
    _report(d, "101-smoke", Kind.BATTERY, Family.SMOKE, ago=0, battery=12, linkquality=31)
    ev, row = checkin_event(d.config, "1-1-101", "v-zhang", d.clock.now() - 2 * HOUR, d.clock.now(), "量血压", "cli")
    d.store.append_visit(ev, row)
    async with _as(d, "s-li") as client:
        page = await client.get("/households/1-1-101")
    assert page.status_code == 200
    html = page.text
    _no_inline_script(html)
    for text in ("1号楼1单元101室", "王秀英", "独居", "风险等级：高", "每7天", "王小明", "儿子", "13800000003"):
        assert text in html, text
    assert "张社工" in html and "13900000009" in html  # the visitor who looks after the flat
    # Devices: last report, battery, link quality, state and problems from device_state.
    assert "LQI 140" in html and "96 %" in html and "门开" in html
    smoke = html[html.index('id="d-101-smoke"') :].split("</tr>")[0]
    assert "12 %" in smoke and "低电量" in smoke and "信号弱" in smoke and "LQI 31" in smoke
    fall = html[html.index('id="d-101-fall"') :].split("</tr>")[0]
    assert "从未上报" in fall
    # Last activity: the SOS press at 08:00 (the door an hour before it is older; smoke is no person).
    assert "最近活动：<b>08:00:00</b>" in html
    # Open and past alerts, each linking to its detail page; the visit with its note.
    open_part, past_part = html.split("历史报警")[0], html.split("历史报警")[1]
    assert f'href="/alerts/{now_open.id}"' in open_part and f'href="/alerts/{past.id}"' in past_part
    assert "处置人：李值班 (s-li)" in past_part
    assert "量血压" in html and "手工登记" in html and "上次探访：06:01:00" in html


async def test_the_household_card_as_json_has_the_raw_figures(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    _report(d, "101-smoke", Kind.BATTERY, Family.SMOKE, ago=60, battery=12, linkquality=31)
    d.store.add_api_token("ha", "sgt_pages-token-0123456789abcdef", "duty", d.clock.now())
    async with d.client() as client:
        r = await client.get("/api/v1/households/1-1-101", headers=TOKEN_AUTH)
        assert r.status_code == 200
        card = r.json()
        smoke = next(x for x in card["devices"] if x["id"] == "101-smoke")
        assert smoke["battery"] == 12 and smoke["link_quality"] == 31 and smoke["last_seen"] == d.clock.now() - 60
        assert smoke["problems"] == ["battery", "weak"]
        assert card["residents"][0]["contacts"][0]["phone"] == "13800000003"
        r = await client.get("/api/v1/households/1-9-999", headers=TOKEN_AUTH)
        assert r.status_code == 404
        assert (await client.get("/api/v1/households/1-1-101")).status_code == 401


# ---------------------------------------------------------------------- scope


async def test_duty_staff_of_building_1_get_404_for_building_2_on_every_page_and_in_the_json(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    mine, theirs = d.raise_sos("101-sos"), d.raise_sos("201-sos")
    _report(d, "201-sos", Kind.TAMPER, Family.SOS)
    async with _as(d, "s-li") as client:
        for path in ("/households/2-1-201", "/buildings/2", "/api/v1/households/2-1-201", "/api/v1/buildings/2"):
            assert (await client.get(path)).status_code == 404, path
        for path in ("/households/1-1-101", "/households/1-1-102", "/buildings/1"):
            assert (await client.get(path)).status_code == 200, path
        site = (await client.get("/api/v1/site")).json()
        assert [b["id"] for b in site["buildings"]] == ["1"] and site["open_alerts"] == 1
        devices = (await client.get("/api/v1/devices")).json()["devices"]
        assert devices and all(x["building"] == "1" for x in devices)
        assert not any(x["id"].startswith("201") for x in devices)
        history = (await client.get("/api/v1/history")).json()["alerts"]
        assert [a["id"] for a in history] == [mine.id]
        assert (await client.get("/api/v1/history?building=2")).json()["alerts"] == []
        page = (await client.get("/history")).text
        assert mine.id in page and theirs.id not in page and "2号楼" not in page
        page = (await client.get("/site")).text
        assert "1号楼" in page and "2号楼" not in page
    async with _as(d, "s-wang") as client:  # and the other way round
        assert (await client.get("/households/2-1-201")).status_code == 200
        assert (await client.get("/households/1-1-101")).status_code == 404


async def test_a_visitor_sees_the_households_they_look_after_and_nothing_else(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    mine, theirs = d.raise_sos("101-sos"), d.raise_sos("201-sos")
    async with _as(d, "v-zhang") as client:
        assert (await client.get("/households/1-1-101")).status_code == 200
        assert (await client.get("/households/1-1-102")).status_code == 404  # same building, not theirs
        assert (await client.get("/households/2-1-201")).status_code == 404
        assert (await client.get("/buildings/2")).status_code == 404
        building = (await client.get("/api/v1/buildings/1")).json()
        flats = [h["id"] for u in building["units"] for h in u["households"]]
        assert flats == ["1-1-101"] and building["public"] == []  # not the building's doors either
        devices = (await client.get("/api/v1/devices")).json()["devices"]
        assert {x["household"] for x in devices} == {"1-1-101"}
        history = (await client.get("/api/v1/history")).json()["alerts"]
        assert [a["id"] for a in history] == [mine.id] and theirs.id not in str(history)
        visits = (await client.get("/api/v1/visits")).json()
        assert [e["id"] for e in visits["elders"]] == ["r1"]


async def test_a_community_worker_on_the_staff_sees_their_buildings_households(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    async with _as(d, "s-grid") as client:
        assert (await client.get("/households/2-1-201")).status_code == 200
        assert (await client.get("/households/1-1-101")).status_code == 404
        visits = (await client.get("/api/v1/visits")).json()
        assert [e["id"] for e in visits["elders"]] == ["r2"]
        assert [w["id"] for w in visits["workers"]] == ["s-grid"]


async def test_an_installer_sees_every_household_and_device_but_no_family_phone(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    async with _as(d, "s-fix") as client:
        for path in ("/households/1-1-101", "/households/2-1-201", "/buildings/1", "/buildings/2"):
            assert (await client.get(path)).status_code == 200, path
        card = (await client.get("/households/1-1-101")).text
        assert "王小明" in card and "13800000003" not in card and "13900000009" not in card
        assert "安装维护人员不显示" in card
        total = (await client.get("/api/v1/devices")).json()["total"]
        assert total == len(d.config.devices)


async def test_pages_need_a_person_and_tokens_get_json_only(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    d.store.add_api_token("ha", "sgt_pages-token-0123456789abcdef", "manager", d.clock.now())
    auth = TOKEN_AUTH
    async with d.client() as client:
        r = await client.get("/households/1-1-101", headers=auth)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Fhouseholds%2F1-1-101")
        assert (await client.get("/visits/report.csv", headers=auth)).status_code == 303
        for path in ("/api/v1/site", "/api/v1/buildings/2", "/api/v1/devices", "/api/v1/history", "/api/v1/visits"):
            r = await client.get(path, headers=auth)
            assert r.status_code == 200, path
            r = await client.get(path)
            assert r.status_code == 401, path


# ---------------------------------------------------------------------- buildings and the site


async def test_the_building_grid_shows_each_devices_health_and_open_alerts_per_unit(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    now = d.clock.now()
    sos = d.raise_sos("101-sos")
    for device, family in (("101-door", Family.DOOR), ("101-fall", Family.FALL), ("101-sos", Family.SOS)):
        _report(d, device, Kind.HEARTBEAT, family)
    _report(d, "101-door", Kind.OFFLINE, Family.DOOR)
    _report(d, "101-smoke", Kind.BATTERY_LOW, Family.SMOKE)
    _report(d, "main-door", Kind.TAMPER, Family.DOOR)
    async with _as(d, "s-li") as client:
        b = (await client.get("/api/v1/buildings/1")).json()
        page = (await client.get("/buildings/1")).text
    (unit,) = b["units"]
    flat = next(h for h in unit["households"] if h["id"] == "1-1-101")
    status = {x["id"]: x["status"] for x in flat["devices"]}
    assert status == {"101-door": "offline", "101-smoke": "battery", "101-fall": "ok", "101-sos": "ok"}
    assert [a["id"] for a in flat["open_alerts"]] == [sos.id] and [a["id"] for a in unit["open_alerts"]] == [sos.id]
    public = {x["id"]: x["status"] for x in b["public"]}
    assert public["main-door"] == "tamper" and public["gate-1"] == "silent"
    assert b["health"]["offline"] == 1 and b["health"]["battery"] == 1 and b["health"]["tamper"] == 1
    assert b["health"]["devices"] == len([x for x in d.config.devices if x.id.startswith(("101", "main", "gate"))])
    _no_inline_script(page)
    assert 'class="cell offline"' in page and 'class="cell battery"' in page and "1单元" in page
    assert f'href="/alerts/{sos.id}"' in page and 'href="/households/1-1-101"' in page
    assert now == d.clock.now()


async def test_the_site_overview_counts_devices_and_open_alerts_per_building(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    d.raise_sos("101-sos")
    d.raise_sos("201-sos")
    _report(d, "201-sos", Kind.OFFLINE, Family.SOS)
    async with _as(d, "s-boss") as client:
        site = (await client.get("/api/v1/site")).json()
        page = (await client.get("/site")).text
    by_id = {b["id"]: b for b in site["buildings"]}
    assert by_id["1"]["open_alerts"] == 1 and by_id["1"]["by_severity"]["1"] == 1
    assert by_id["2"]["health"]["offline"] == 1 and by_id["2"]["households"] == 1
    assert site["health"]["devices"] == len(d.config.devices) and site["households"] == 3
    assert 'href="/buildings/2"' in page and 'href="/devices?building=2&amp;problem=offline"' in page


# ---------------------------------------------------------------------- devices


async def test_the_device_list_filters_by_problem_building_family_and_text(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    for x in d.config.devices:
        if x.id != "101-smoke":
            _report(d, x.id, Kind.HEARTBEAT, x.family, ago=60)
    _report(d, "101-door", Kind.OFFLINE, Family.DOOR)
    _report(d, "201-sos", Kind.BATTERY, Family.SOS, battery=9)
    _report(d, "101-fall", Kind.RESIDENCE, Family.FALL, present=True, linkquality=12)
    _report(d, "main-door", Kind.TAMPER, Family.DOOR)
    # The smoke detector reports every 10 minutes: silent once 30 minutes have passed.
    _report(d, "101-smoke", Kind.HEARTBEAT, Family.SMOKE, ago=31 * 60)
    async with _as(d, "s-boss") as client:

        async def ids(query: str) -> list[str]:
            r = await client.get(f"/api/v1/devices?{query}")
            assert r.status_code == 200, query
            return [x["id"] for x in r.json()["devices"]]

        assert await ids("problem=offline") == ["101-door"]
        assert await ids("problem=battery") == ["201-sos"]
        assert await ids("problem=weak") == ["101-fall"]
        assert await ids("problem=silent") == ["101-smoke"]
        assert await ids("problem=tamper") == ["main-door"]
        assert sorted(await ids("problem=any")) == ["101-door", "101-fall", "101-smoke", "201-sos", "main-door"]
        assert await ids("building=2") == ["201-sos"]
        assert await ids("family=smoke") == ["101-smoke"]
        assert await ids("q=卫生间") == ["101-fall"]
        assert len(await ids("")) == len(d.config.devices)
        assert (await client.get("/api/v1/devices?problem=bogus")).status_code == 400
        page = await client.get("/devices?problem=silent")
        assert page.status_code == 200 and "已31分钟未上报" in page.text
        _no_inline_script(page.text)
        assert (await client.get("/devices?page=x")).status_code == 400


async def test_the_device_list_pages_keep_the_filters(tmp_path: Path) -> None:
    site = _site()
    for i in range(130):
        site["devices"].append(
            {
                "id": f"hall-{i:03d}",
                "family": "presence",
                "model": "hall-sensor",
                "building": "1",
                "room": "楼道",
                "mqtt": {"format": "native"},
            }
        )
    d = desk(tmp_path, site)
    d.set_password("s-li")
    async with _as(d, "s-li") as client:
        first = await client.get("/devices?family=presence")
        assert "共 130 台" in first.text and 'href="/devices?family=presence&amp;page=2"' in first.text
        second = (await client.get("/api/v1/devices?family=presence&page=2")).json()
        assert second["total"] == 130 and len(second["devices"]) == 30 and not second["more"]


# ---------------------------------------------------------------------- history


def _past_alert(i: int, raised: float, building: str, rule: str, severity: int, by: str = "", state: str = "") -> Alert:
    return Alert(
        id=f"h{i:04d}",
        dedup_key=f"{rule}:{i}",
        rule=rule,
        severity=Severity(severity),
        state=AlertState(state or ("resolved" if by else "raised")),
        raised_at=raised,
        last_seen=raised,
        message_zh=f"【测试】第{i}条",
        message_en=f"test {i}",
        location=Location(building=building, unit="1", household="101" if building == "1" else "201"),
        device_id="101-door" if building == "1" else "201-sos",
        acked_by=by,
        resolved_by=by,
        resolved_at=raised + 60 if by else None,
    )


async def test_history_filters_by_time_building_rule_severity_person_and_state_and_pages(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    day = 86_400.0
    t0 = d.clock.now() - 30 * day  # 2025-12-02 08:00 local
    alerts = [
        _past_alert(
            i,
            t0 + i * HOUR,
            "1" if i % 2 else "2",
            "door_held_open" if i % 3 else "sos",
            3 if i % 3 else 1,
            by="s-li" if i % 5 == 0 else "",
        )
        for i in range(120)
    ]
    d.store.save_alerts(alerts, [])
    async with _as(d, "s-boss") as client:

        async def ids(query: str) -> list[str]:
            r = await client.get(f"/api/v1/history?{query}")
            assert r.status_code == 200, query
            return [a["id"] for a in r.json()["alerts"]]

        newest = await ids("")
        assert len(newest) == 50 and newest[0] == "h0119" and newest[-1] == "h0070"
        assert (await ids("page=3"))[-1] == "h0000" and len(await ids("page=3")) == 20
        assert (await client.get("/api/v1/history?page=3")).json()["more"] is False
        assert all(int(a[1:]) % 2 for a in await ids("building=1"))
        assert all(int(a[1:]) % 3 == 0 for a in await ids("rule=sos"))
        assert await ids("severity=1") == await ids("rule=sos")
        assert sorted(await ids("person=s-li")) == [f"h{i:04d}" for i in range(0, 120, 5)]
        assert len(await ids("state=resolved&page=1")) == 24
        assert "h0000" not in await ids("state=open")
        # 2025-12-03 local: the alerts raised from 08:00 the day before + 16 h … (i = 16 … 39).
        assert sorted(await ids("from=2025-12-03&to=2025-12-03")) == [f"h{i:04d}" for i in range(16, 40)]
        assert await ids("q=第7条") == ["h0007"] and await ids("q=h0011") == ["h0011"]
        assert (await client.get("/api/v1/history?from=03-12-2025")).status_code == 400
        assert (await client.get("/api/v1/history?severity=9")).status_code == 400
        page = await client.get("/history?rule=sos&building=2")
        assert page.status_code == 200 and 'href="/alerts/h0000"' in page.text and "h0003" not in page.text
        assert 'href="/history?rule=sos&amp;building=2&amp;page=2"' not in page.text  # 20 match: one page
        _no_inline_script(page.text)
        full = await client.get("/history")
        assert 'href="/history?page=2"' in full.text


async def test_an_alert_from_the_history_opens_with_its_audit_trail_in_local_time(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    alert = d.raise_sos()
    apply_command(d.alerts, {"action": "ack", "alert": alert.id, "by": "s-li"}, authenticated=True)
    async with _as(d, "s-li") as client:
        history = await client.get("/history?state=open")
        assert f'href="/alerts/{alert.id}"' in history.text
        detail = await client.get(f"/alerts/{alert.id}")
        assert "2026-01-01 08:00:00" in detail.text and "李值班 (s-li)" in detail.text


# ---------------------------------------------------------------------- visits


async def test_the_visits_page_gives_the_reports_rate_per_worker_and_per_elder_and_the_csv(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    ev, row = checkin_event(d.config, "1-1-101", "v-zhang", d.clock.now() - HOUR, d.clock.now(), "送药", "cli")
    d.store.append_visit(ev, row)
    report = build_report(d.config, d.store, "2026-01", d.clock.now())
    assert report.rate == 0.5  # r1 visited, r2 not
    async with _as(d, "s-boss") as client:
        data = (await client.get("/api/v1/visits?month=2026-01")).json()
        assert (data["due"], data["visited"], data["rate"]) == (2, 1, report.rate)
        workers = {w["id"]: w for w in data["workers"]}
        assert workers["v-zhang"]["rate"] == 1.0 and workers["v-zhang"]["visits_made"] == 1
        assert workers["s-grid"]["rate"] == 0.0 and workers["s-grid"]["elders"] == 1
        elders = {e["id"]: e for e in data["elders"]}
        assert elders["r1"]["visits"] == 1 and elders["r2"]["visits"] == 0
        assert [e["id"] for e in data["missed"]] == ["r2"]
        page = await client.get("/visits")
        assert page.status_code == 200 and "月探访率" in page.text and "50.0 %" in page.text
        assert "李桂兰" in page.text and "送药" in page.text and "/visits/report.csv?month=2026-01" in page.text
        _no_inline_script(page.text)
        r = await client.get("/visits/report.csv?month=2026-01&part=elders")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "visit-report-2026-01.csv" in r.headers["content-disposition"]
        assert r.content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0][:3] == ["住户编号", "姓名", "住址"] and {x[0] for x in rows[1:]} == {"r1", "r2"}
        r = await client.get("/visits/report.csv?month=2026-01&part=visits")
        visits = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert len(visits) == 2 and visits[1][1] == "王秀英" and "送药" in visits[1]
        printed = await client.get("/visits/print?month=2026-01")
        assert printed.status_code == 200 and "2026-01 探访月报" in printed.text and "<table" in printed.text
        assert (await client.get("/visits?month=2026-13")).status_code == 400
        assert (await client.get("/visits/report.csv?part=x")).status_code == 400
    async with _as(d, "s-li") as client:  # building 1's duty officer: r1 only, in the CSV too
        r = await client.get("/visits/report.csv?month=2026-01")
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert [x[0] for x in rows[1:]] == ["r1"]


# ---------------------------------------------------------------------- language


async def test_the_pages_speak_english_after_the_toggle(tmp_path: Path) -> None:
    d = _desk(tmp_path)
    _report(d, "101-smoke", Kind.BATTERY, Family.SMOKE, battery=12)
    async with _as(d, "s-li") as client:
        await client.get("/lang/en?next=/site")
        site = (await client.get("/site")).text
        card = (await client.get("/households/1-1-101")).text
        devices = (await client.get("/devices?problem=battery")).text
        visits = (await client.get("/visits")).text
        csv_text = (await client.get("/visits/report.csv")).content.decode("utf-8-sig")
    assert "The whole site" in site and "Households" in site
    assert "building 1, unit 1, flat 101" in card and "lives alone" in card and "battery low" in card
    assert "smoke detector" in devices and "Monthly visit rate" in visits
    assert csv_text.startswith("Resident,Name,Address")
    for page in (site, card, devices):
        assert "History" in page and "Visits" in page  # the navigation


# ---------------------------------------------------------------------- the live board's streams


async def test_the_live_board_is_read_and_rendered_once_per_change_for_everyone_who_sees_the_same(
    tmp_path: Path,
) -> None:
    d = _desk(tmp_path)
    alert = d.raise_sos("101-sos")
    calls: list[tuple[str, str]] = []
    failing = [True]

    async def board(who: Identity, lang: str) -> dict[str, Any]:
        calls.append((who.actor, lang))
        if failing[0] and who.actor == "s-fix":
            failing[0] = False
            raise StoreError("disk I/O error")
        return await d.console._board(who, lang)

    live = LiveBoards(board, d.console.templates.get_template("_board.html"), _sse)
    li_one, li_two, wang, fix = (
        person_identity(d.config, person, csrf=token)
        for person, token in (("s-li", "tok-one"), ("s-li", "tok-two"), ("s-wang", "tok-three"), ("s-fix", "tok-4"))
    )
    assert li_one and li_two and wang and fix
    one, two, three = await asyncio.gather(
        live.event(li_one, "zh", 1), live.event(li_two, "zh", 1), live.event(wang, "zh", 1)
    )
    assert calls == [("s-li", "zh"), ("s-wang", "zh")]  # two sessions of one view: one read, one render
    assert one.startswith("id: 1\nevent: board\n") and alert.id in one and alert.id not in three
    assert 'value="tok-one"' in one and "tok-two" not in one and 'value="tok-two"' in two
    assert live.placeholder not in one + two + three
    await live.event(li_one, "en", 1)
    await live.event(li_one, "zh", 2)
    assert calls[2:] == [("s-li", "en"), ("s-li", "zh")]  # another language, another change
    with pytest.raises(StoreError):
        await live.event(fix, "zh", 2)
    assert alert.id in await live.event(fix, "zh", 2)  # a failed render is not kept
