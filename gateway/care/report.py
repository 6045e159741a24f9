"""The monthly visit report (探访月报): ``sensegate visits report -c site.toml --month 2026-11``.

Per covered elder: the visits made in the month (when, by whom, how), the gaps longer than
their plan, and the block's 月探访率 — elders visited in the month ÷ elders who should have
been — against the 100 % target. Markdown and CSV, Chinese headings by default. Reads the
store only (a running gateway keeps writing: SQLite WAL lets a reader in). See docs/visits.md.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from edge_rules.schedule import zone
from gateway.care.checkin import METHOD_ZH, ROLE_ZH, covered_residents, plan_interval
from gateway.site.config import Resident, SiteConfig
from gateway.store import Store, VisitRow

Lang = Literal["zh", "en"]
TARGET = 1.0  # 特殊困难老年人月探访率达到 100 %
TIER_ZH = {"high": "高", "medium": "中", "low": "低"}


@dataclass(frozen=True, slots=True)
class Gap:
    start: float
    end: float  # the next visit, or the end of the month (or now, for the current month)
    open_end: bool  # no visit closed the gap within the month


@dataclass(frozen=True, slots=True)
class ElderLine:
    resident: Resident
    household_label: str
    interval: float
    visits: tuple[VisitRow, ...]
    gaps: tuple[Gap, ...]


@dataclass(frozen=True, slots=True)
class VisitReport:
    month: str
    start: float
    end: float
    tz: str
    elders: tuple[ElderLine, ...]

    @property
    def visited(self) -> int:
        return sum(1 for e in self.elders if e.visits)

    @property
    def rate(self) -> float | None:
        return self.visited / len(self.elders) if self.elders else None


def month_bounds(month: str, tz: str) -> tuple[float, float]:
    """``"2026-11"`` → [start, end) in epoch seconds, local time."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=zone(tz))
    except ValueError:
        raise ValueError(f"a month such as 2026-11, not {month!r}") from None
    nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return first.timestamp(), nxt.timestamp()


def build_report(config: SiteConfig, store: Store, month: str, now: float, tz: str = "Asia/Shanghai") -> VisitReport:
    start, end = month_bounds(month, tz)
    horizon = min(end, now)
    households = {h.id: h for h in config.households}
    buildings = {b.id: b.name or f"{b.id}号楼" for b in config.buildings}
    everything = store.visits(until=end)
    lines = []
    for r in covered_residents(config):
        mine = [v for v in everything if r.id in v.residents]
        before = [v.at for v in mine if v.at < start]
        inside = tuple(v for v in mine if v.at >= start)
        interval = plan_interval(config, r)
        # A gap counts from the last visit before the month (or the month's start).
        points = [max(before) if before else start, *(v.at for v in inside)]
        gaps = [Gap(a, b, False) for a, b in itertools.pairwise(points) if b - a > interval]
        if horizon - points[-1] > interval:
            gaps.append(Gap(points[-1], horizon, True))
        h = households[r.household]
        label = f"{buildings.get(h.building, h.building)}{h.unit + '单元' if h.unit else ''}{h.number or h.id}室"
        lines.append(ElderLine(r, label, interval, inside, tuple(gaps)))
    return VisitReport(month, start, end, tz, tuple(lines))


# ---------------------------------------------------------------------- rendering

_TEXT = {
    "zh": {
        "title": "{month} 探访月报",
        "rate": "月探访率",
        "target": "目标",
        "summary": "应探访 {due} 人，已探访 {visited} 人",
        "below": "未达到目标：以下老人本月未获探访",
        "met": "已达到目标",
        "elders": "老人探访情况",
        "visits": "探访记录",
        "none": "本月无探访记录",
        "gap": "{a} 至 {b}（{days} 天）",
        "open": "至今",
        "month_end": "月末",
    },
    "en": {
        "title": "Visit report {month}",
        "rate": "Monthly visit rate",
        "target": "target",
        "summary": "{due} elders to visit, {visited} visited",
        "below": "Below target: not visited this month",
        "met": "Target met",
        "elders": "Elders",
        "visits": "Visits",
        "none": "no visit this month",
        "gap": "{a} to {b} ({days} days)",
        "open": "now",
        "month_end": "month end",
    },
}


_HEAD = {
    "zh": ["住户编号", "姓名", "住址", "风险等级", "探访周期(天)", "本月探访次数", "超期间隔"],
    "en": ["Resident", "Name", "Address", "Risk tier", "Plan (days)", "Visits this month", "Gaps over plan"],
}
_VHEAD = {
    "zh": ["住户编号", "姓名", "探访时间", "探访人", "身份", "记录方式", "备注"],
    "en": ["Resident", "Name", "Time", "Visitor", "Role", "Recorded by", "Note"],
}


def _fmt(t: float, tz: str, with_time: bool = True) -> str:
    return datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def _days(seconds: float) -> str:
    return f"{seconds / 86_400:.1f}".rstrip("0").rstrip(".")


def _gaps(line: ElderLine, report: VisitReport, lang: Lang) -> str:
    t = _TEXT[lang]

    def end(g: Gap) -> str:
        if not g.open_end:
            return _fmt(g.end, report.tz, False)
        return t["month_end"] if g.end >= report.end else t["open"]

    return "; ".join(
        t["gap"].format(a=_fmt(g.start, report.tz, False), b=end(g), days=_days(g.end - g.start)) for g in line.gaps
    )


def _rows(report: VisitReport, lang: Lang) -> list[list[str]]:
    tier = TIER_ZH if lang == "zh" else {k: k for k in TIER_ZH}
    return [
        [
            e.resident.id,
            e.resident.name,
            e.household_label if lang == "zh" else e.resident.household,
            tier[e.resident.risk_tier],
            _days(e.interval),
            str(len(e.visits)),
            _gaps(e, report, lang),
        ]
        for e in report.elders
    ]


def _visit_rows(report: VisitReport, lang: Lang) -> list[list[str]]:
    rows = []
    for e in report.elders:
        for v in e.visits:
            role = ROLE_ZH.get(v.role, v.role) if lang == "zh" else v.role
            method = METHOD_ZH.get(v.method, v.method) if lang == "zh" else v.method
            who = v.visitor_name or v.visitor
            rows.append([e.resident.id, e.resident.name, _fmt(v.at, report.tz), who, role, method, v.note])
    return rows


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def render_markdown(report: VisitReport, lang: Lang = "zh") -> str:
    t = _TEXT[lang]
    due = len(report.elders)
    out = [f"# {t['title'].format(month=report.month)}", ""]
    out.append(
        f"**{t['rate']}: {_percent(report.rate)}** ({t['target']} 100 %) — "
        + t["summary"].format(due=due, visited=report.visited)
    )
    out.append("")
    missed = [e for e in report.elders if not e.visits]
    if missed:
        names = "、".join(f"{e.resident.name}（{e.household_label}）" for e in missed)
        out += [f"{t['below']}: {names}", ""]
    else:
        out += [t["met"], ""]
    out += [f"## {t['elders']}", "", _table(_HEAD[lang], _rows(report, lang)), ""]
    visits = _visit_rows(report, lang)
    out += [f"## {t['visits']}", "", _table(_VHEAD[lang], visits) if visits else t["none"], ""]
    return "\n".join(out)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/") or " " for c in cells) + " |"

    return "\n".join([line(head), line(["---"] * len(head)), *(line(r) for r in rows)])


Table = tuple[list[str], list[list[str]]]  # headings, rows


def tables(report: VisitReport, lang: Lang = "zh") -> tuple[Table, Table]:
    """(per elder, per visit) as headings and rows of text: the CSV's, and the console's print page's."""
    return (_HEAD[lang], _rows(report, lang)), (_VHEAD[lang], _visit_rows(report, lang))


def render_csv(report: VisitReport, lang: Lang = "zh") -> tuple[str, str]:
    """(per elder, per visit) as CSV text, UTF-8 with headings in ``lang``."""
    elders, visits = io.StringIO(), io.StringIO()
    (head, rows), (vhead, vrows) = tables(report, lang)
    csv.writer(elders).writerows([head, *rows])
    csv.writer(visits).writerows([vhead, *vrows])
    return elders.getvalue(), visits.getvalue()


def write_report(report: VisitReport, out_dir: Path, lang: Lang = "zh") -> list[Path]:
    """Write ``visit-report-<month>.md``, ``visit-report-<month>.csv`` and ``visits-<month>.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"visit-report-{report.month}.md"
    elders_csv = out_dir / f"visit-report-{report.month}.csv"
    visits_csv = out_dir / f"visits-{report.month}.csv"
    md.write_text(render_markdown(report, lang), encoding="utf-8")
    elders, visits = render_csv(report, lang)
    # With a BOM, so that Excel (the usual reader at a 社区居委会) opens the Chinese correctly.
    elders_csv.write_text("\ufeff" + elders, encoding="utf-8")
    visits_csv.write_text("\ufeff" + visits, encoding="utf-8")
    return [md, elders_csv, visits_csv]
