"""`sensegate visits checkin|report` and `sensegate rules check|explain`, end to end on a store."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import tomli_w

from gateway.alerts.path import AlertPath
from gateway.care.checkin import checkin_event
from gateway.care.report import build_report, render_markdown
from gateway.care.visits import VisitTracker
from gateway.cli.app import main as cli
from gateway.clock import VirtualClock
from gateway.models import Event, Family, Kind, Location
from gateway.site.config import SiteConfig, load_config, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from tests.gateway.factories import minimal_site

SH = ZoneInfo("Asia/Shanghai")


def at(day: int, hour: int = 10, month: int = 10) -> float:
    return datetime(2026, month, day, hour, 0, tzinfo=SH).timestamp()


def write_site(tmp_path: Path, **overrides: Any) -> Path:
    site = minimal_site(**overrides)
    site["gateway"]["data_dir"] = "data"
    site["households"].append({"id": "1-1-103", "building": "1", "unit": "1", "number": "103"})
    site["residents"] += [
        {"id": "r2", "name": "赵大爷", "household": "1-1-102", "lives_alone": True},
        {"id": "r3", "name": "孙奶奶", "household": "1-1-103", "lives_alone": True, "risk_tier": "medium"},
    ]
    site["visitors"] = [
        {
            "id": "v1",
            "name": "张网格",
            "role": "grid_worker",
            "credentials": ["card:123-4567"],
            "households": ["1-1-101"],
        },
        {"id": "v2", "name": "刘志愿", "role": "volunteer"},
    ]
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(site))
    return path


def fill_october(config: SiteConfig) -> None:
    """r1 (weekly): a card swipe on 3 Oct and a check-in on 20 Oct; r2 (monthly): one check-in; r3: none."""
    store = Store(config.store_path)
    clock = VirtualClock(at(1, 0))
    rules = site_rules(config)
    alerts = AlertPath(Registry(config), store, clock, config.topic_prefix, rules)
    tracker = VisitTracker(config, store, clock, alerts, rules)
    tracker.catch_up()  # plans start on 1 October
    clock.set(at(3))
    card = {"credential": "card:123-4567"}
    swipe = Event("gate-1", Family.DOOR, Kind.ACCESS_GRANTED, at(3), at(3), location=Location("1"), values=card)
    alerts.process(store.append([swipe], {}))
    tracker.process()
    for day, household, visitor, note in ((20, "1-1-101", "v2", "送药"), (12, "1-1-102", "v2", "")):
        store.append_visit(*checkin_event(config, household, visitor, at(day), at(day), note, "cli"))
    clock.set(at(31, 20))
    tracker.process()
    store.close()


def test_monthly_report_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_site(tmp_path)
    config = load_config(path)
    assert cli(["visits", "report", "-c", str(path), "--month", "2026-10"]) == 0  # no store yet: nothing to say
    assert "no events yet" in capsys.readouterr().out
    fill_october(config)
    out_dir = tmp_path / "out"
    assert cli(["visits", "report", "-c", str(path), "--month", "2026-10", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "月探访率 66.7 % (2/3)" in printed

    md = (out_dir / "visit-report-2026-10.md").read_text(encoding="utf-8")
    assert md.startswith("# 2026-10 探访月报")
    assert "**月探访率: 66.7 %** (目标 100 %) — 应探访 3 人，已探访 2 人" in md
    assert "未达到目标：以下老人本月未获探访: 孙奶奶（1号楼1单元103室）" in md
    gaps = "2026-10-03 至 2026-10-20（17 天）; 2026-10-20 至 月末（11.6 天）"
    assert f"| r1 | 王秀英 | 1号楼1单元101室 | 高 | 7 | 2 | {gaps} |" in md
    assert "| r1 | 王秀英 | 2026-10-03 10:00 | 张网格 | 网格员 | 门禁刷卡 |" in md
    assert "| r1 | 王秀英 | 2026-10-20 10:00 | 刘志愿 | 志愿者 | 手工登记 | 送药 |" in md
    assert "| r3 | 孙奶奶 | 1号楼1单元103室 | 中 | 14 | 0 | 2026-10-01 至 月末（31 天） |" in md

    elders = list(csv.reader(io.StringIO((out_dir / "visit-report-2026-10.csv").read_text(encoding="utf-8-sig"))))
    assert elders[0] == ["住户编号", "姓名", "住址", "风险等级", "探访周期(天)", "本月探访次数", "超期间隔"]
    assert [(r[0], r[5]) for r in elders[1:]] == [("r1", "2"), ("r2", "1"), ("r3", "0")]
    visits = list(csv.reader(io.StringIO((out_dir / "visits-2026-10.csv").read_text(encoding="utf-8-sig"))))
    assert len(visits) == 1 + 3

    assert cli(["visits", "report", "-c", str(path), "--month", "2026-10", "--out", str(out_dir), "--lang", "en"]) == 0
    en = (out_dir / "visit-report-2026-10.md").read_text(encoding="utf-8")
    assert en.startswith("# Visit report 2026-10") and "**Monthly visit rate: 66.7 %**" in en
    assert "| r1 | 王秀英 | 2026-10-03 10:00 | 张网格 | grid_worker | access |" in en
    assert cli(["visits", "report", "-c", str(path), "--month", "October"]) == 2


def test_report_for_a_month_in_progress_counts_gaps_up_to_now(tmp_path: Path) -> None:
    config = load_config(write_site(tmp_path))
    fill_october(config)
    store = Store(config.store_path)
    try:
        report = build_report(config, store, "2026-11", now=at(5, 12, month=11))
    finally:
        store.close()
    assert report.rate == 0.0
    md = render_markdown(report)
    assert "2026-10-20 至 至今（16.1 天）" in md  # r1, weekly: 20 Oct → 5 Nov 12:00
    assert "本月无探访记录" in md


def test_checkin_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_site(tmp_path)
    args = ["visits", "checkin", "-c", str(path), "--household", "1-1-101", "--visitor", "v2"]
    assert cli([*args, "--note", "量血压", "--time", "2026-10-05T09:30"]) == 0
    assert "recorded visit to 1-1-101 (r1) by v2 at 2026-10-05T09:30:00+08:00" in capsys.readouterr().out
    assert cli(["visits", "checkin", "-c", str(path), "--household", "9-9-9", "--visitor", "v2"]) == 2
    assert "unknown household" in capsys.readouterr().err
    assert cli([*args[:-1], "nobody"]) == 2
    store = Store(load_config(path).store_path)
    try:
        (v,) = store.visits()
        assert (v.method, v.note, v.at, v.residents) == ("cli", "量血压", at(5, 9) + 1800, ("r1",))
        (ev,) = store.events_after(0)
        assert ev.kind is Kind.VISIT and ev.seq == v.event_seq
    finally:
        store.close()


def test_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_site(tmp_path)
    assert cli(["rules", "check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "from elderly_care, smart_community (timezone Asia/Shanghai)" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("no_activity "))
    assert "type=absence  severity=2  per=household  duration=6 h" in line
    assert "thresholds={high=3 h, medium=4 h" in line and "applies_to={lives_alone=true}" in line
    assert "device_silent  type=absence  severity=4  per=device  duration=3×report_interval" in out
    assert "access_denied_repeated  type=count  severity=3" in out and "count=5" in out

    (tmp_path / "bad-rules.toml").write_text('[[rules]]\nid = "x"\ntype = "absence"\nseverity = 9\n')
    bad = write_site(tmp_path, rules={"files": ["bad-rules.toml"]})
    assert cli(["rules", "check", "-c", str(bad)]) == 2
    assert "rules[0].severity" in capsys.readouterr().err


def test_rules_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_site(tmp_path)
    config = load_config(path)
    assert cli(["rules", "explain", "-c", str(path), "--household", "1-1-101"]) == 0  # no store yet: no timers
    assert "no events yet" in capsys.readouterr().out
    fill_october(config)
    assert cli(["rules", "explain", "-c", str(path), "--household", "1-1-101"]) == 0
    out = capsys.readouterr().out
    assert "resident r1 王秀英 (risk high, lives alone)" in out
    assert "devices: 101-door, 101-smoke, 101-sos, 101-fall" in out
    rules_part = out.split("rules that apply:")[1].split("timers")[0]
    for rule in ("sos ", "fall ", "no_activity ", "door_not_opened_24h ", "smoke_alarm ", "bathroom_stay "):
        assert f"\n  {rule}" in rules_part
    assert "door_not_opened_24h  type=absence  severity=3  per=household  duration=24 h" in rules_part
    assert "      for household 1-1-101\n" in rules_part
    assert "      for device 101-door, 101-smoke, 101-sos, 101-fall, main-door, gate-1\n" in rules_part
    assert "sos_public  type=match" in rules_part  # the building's doors are the household's too
    # Timers as the store holds them (the engine is not advanced: a past time fires at the next tick).
    assert "  no_activity [1-1-101] fires at 2026-10-03 13:00:00 (" in out
    assert "  door_not_opened_48h [1-1-101] fires at 2026-10-05 10:00:00 (" in out
    assert "open alerts (engine): none" in out
    # The gateway fires the overdue deadlines: explain shows the open alerts the engine holds.
    store = Store(config.store_path)
    AlertPath(Registry(config), store, VirtualClock(at(31, 20)), config.topic_prefix, site_rules(config)).catch_up()
    store.close()
    assert cli(["rules", "explain", "-c", str(path), "--household", "1-1-101"]) == 0
    out = capsys.readouterr().out
    assert "open alerts (engine):\n  door_not_opened_24h:1-1-101 rule=door_not_opened_24h severity=3 count=1" in out
    assert "  no_activity:1-1-101 rule=no_activity severity=2 count=1" in out
    assert "visit plan (探访计划):\n  r1 every 7 d: next visit due 2026-10-27 10:00:00" in out
    # A household without an elder: rules for everyone, none of the elder pack's.
    assert cli(["rules", "explain", "-c", str(path), "--household", "1-1-102"]) == 0
    out = capsys.readouterr().out
    assert "no_activity" not in out.split("rules that apply:")[1].split("timers")[0]
    assert cli(["rules", "explain", "-c", str(path), "--household", "nope"]) == 2
