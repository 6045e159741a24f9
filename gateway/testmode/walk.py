"""The walk test (现场调试): the checklist of every device in scope and the report. Pure: reads
the store, writes nothing (docs/installer.md).

A walk test puts its scope in test mode; the store ticks a device off the first time it is
heard during it (gateway/store/testmode.py), with its latest link quality (zigbee LQI), RSSI
(dBm, from devices that report one) and battery. The checklist marks a device:

- **not seen** (未上报): nothing from it since the walk test started — pressed, opened, walked
  past or not, the gateway never heard it;
- **weak** (信号弱): LQI under ``weak_linkquality`` or RSSI under ``weak_rssi``;
- **low battery** (低电量): its low-battery flag, or a level under ``low_battery`` %;

and lists what each press would have raised outside test mode (the shadow engine's records).
The report is per household, in Chinese, as print-friendly HTML (the browser's "print to PDF"
makes the PDF: a PDF library would need a CJK font of its own) and as CSV (UTF-8 with a BOM,
so spreadsheet programs read the Chinese right).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_rules.schedule import zone
from gateway.models import Family, Location, Severity
from gateway.site.config import SiteConfig
from gateway.site.registry import Registry
from gateway.store import CommissionRow, SeenRow, Store, WouldHave
from gateway.testmode.scope import building_label

FAMILY_ZH = {
    Family.DOOR: "门磁/门禁",
    Family.FALL: "跌倒检测雷达",
    Family.SMOKE: "烟感",
    Family.SOS: "紧急呼叫按钮",
    Family.GAS: "燃气报警器",
    Family.WATER: "水浸",
    Family.PRESENCE: "人体感应",
}
# What the installer does at each device to make it report.
TRY_ZH = {
    Family.DOOR: "开门或刷卡",
    Family.FALL: "在雷达前走动",
    Family.SMOKE: "按测试键",
    Family.SOS: "按下按钮",
    Family.GAS: "按测试键",
    Family.WATER: "触发探头",
    Family.PRESENCE: "在感应区走动",
}
NOT_SEEN, WEAK, LOW = "未上报", "信号弱", "低电量"


@dataclass(frozen=True, slots=True)
class Item:
    device_id: str
    family: Family
    model: str
    building: str
    unit: str
    household: str  # household id; "" for a public area
    place: str  # 3号楼2单元502室, or 3号楼 公共区域
    room: str
    seen: SeenRow | None
    weak: bool
    low_battery: bool
    would_have: tuple[WouldHave, ...]

    @property
    def problems(self) -> list[str]:
        if self.seen is None:
            return [NOT_SEEN]
        return [p for p, on in ((WEAK, self.weak), (LOW, self.low_battery)) if on]


@dataclass(frozen=True, slots=True)
class Walk:
    commission: CommissionRow
    installer: str  # 周师傅 (s-zhou)
    items: tuple[Item, ...]
    timezone: str
    finished_at: float | None = None
    finished_by: str = ""  # a name, as installer
    limits: tuple[float, float, float] = (40, -85, 20)  # weak LQI, weak RSSI (dBm), low battery (%)

    # ------------------------------------------------------------------ figures

    @property
    def not_seen(self) -> list[Item]:
        return [i for i in self.items if i.seen is None]

    def summary(self) -> dict[str, Any]:
        return {
            "devices": len(self.items),
            "seen": sum(1 for i in self.items if i.seen is not None),
            "not_seen": [i.device_id for i in self.not_seen],
            "weak": [i.device_id for i in self.items if i.seen is not None and i.weak],
            "low_battery": [i.device_id for i in self.items if i.seen is not None and i.low_battery],
            "would_have": sum(len(i.would_have) for i in self.items),
        }

    def households(self) -> list[tuple[str, list[Item]]]:
        """Items per household (public areas per building), in walking order."""
        groups: dict[str, list[Item]] = {}
        for i in self.items:
            groups.setdefault(i.place, []).append(i)
        return list(groups.items())

    def when(self, t: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return "" if t is None else datetime.fromtimestamp(t, zone(self.timezone)).strftime(fmt)

    # ------------------------------------------------------------------ the checklist, as text

    def text(self) -> str:
        c = self.commission
        s = self.summary()
        lines = [
            f"现场调试 walk test {c.id}: {c.label}, {self.installer}, {self.when(c.started_at)} 起",
            f"  已上报 seen {s['seen']}/{s['devices']}, 未上报 not seen {len(s['not_seen'])}, "
            f"信号弱 weak {len(s['weak'])}, 低电量 low battery {len(s['low_battery'])}",
        ]
        for place, items in self.households():
            lines.append(f"  {place}")
            for i in items:
                mark = "✗" if i.seen is None else ("!" if i.problems else "✓")
                state = "、".join(i.problems) or "正常"
                lines.append(
                    f"    {mark} {i.device_id:<24} {i.room or '-':<6} {FAMILY_ZH[i.family]:<8} {state:<8} "
                    f"{signal_text(i.seen)} {battery_text(i.seen)}"
                    + (f"  {self.when(i.seen.first_seen, '%H:%M:%S')}" if i.seen else f"  请{TRY_ZH[i.family]}")
                )
                for w in i.would_have:
                    level = Severity(w.severity).label_zh
                    lines.append(f"        本应触发 would have raised [{level}] {w.message_zh}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ the report

    def csv(self) -> str:
        out = io.StringIO()
        out.write("\ufeff")  # a BOM: spreadsheet programs then read UTF-8 Chinese correctly
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(
            ["楼栋", "单元", "住户", "地点", "房间", "设备", "类型", "型号", "结果", "首次上报", "最后上报",
             "上报次数", "信号(LQI)", "RSSI(dBm)", "电量(%)", "本应触发的报警"]
        )  # fmt: skip
        for i in self.items:
            seen = i.seen
            w.writerow(
                [
                    i.building,
                    i.unit,
                    i.household,
                    i.place,
                    i.room,
                    i.device_id,
                    FAMILY_ZH[i.family],
                    i.model,
                    "、".join(i.problems) or "正常",
                    self.when(seen.first_seen) if seen else "",
                    self.when(seen.last_seen) if seen else "",
                    seen.events if seen else 0,
                    _num(seen.linkquality) if seen else "",
                    _num(seen.rssi) if seen else "",
                    _num(seen.battery) if seen else "",
                    "；".join(f"{Severity(x.severity).label_zh} {x.message_zh}" for x in i.would_have),
                ]
            )
        return out.getvalue()

    def html(self) -> str:
        c, s = self.commission, self.summary()
        e = html.escape
        rows: list[str] = []
        for place, items in self.households():
            missing = sum(1 for i in items if i.seen is None)
            head = f"{e(place)}" + (f" <span class='bad'>（{missing}台未上报）</span>" if missing else "")
            rows.append(f"<h2>{head}</h2>")
            rows.append(
                "<table><thead><tr><th>房间</th><th>设备</th><th>类型</th><th>结果</th><th>首次上报</th>"
                "<th>信号</th><th>电量</th><th>本应触发的报警</th></tr></thead><tbody>"
            )
            for i in items:
                problems = "、".join(i.problems)
                cls = "bad" if i.seen is None else ("warn" if problems else "ok")
                would = "<br>".join(f"[{e(Severity(x.severity).label_zh)}] {e(x.message_zh)}" for x in i.would_have)
                rows.append(
                    f"<tr class='{cls}'><td>{e(i.room)}</td><td>{e(i.device_id)}<br><small>{e(i.model)}</small></td>"
                    f"<td>{e(FAMILY_ZH[i.family])}</td><td>{e(problems or '正常')}</td>"
                    f"<td>{e(self.when(i.seen.first_seen, '%H:%M:%S') if i.seen else '—')}</td>"
                    f"<td>{e(signal_text(i.seen))}</td><td>{e(battery_text(i.seen))}</td><td>{would}</td></tr>"
                )
            rows.append("</tbody></table>")
        missing_list = "".join(f"<li>{e(i.place)} {e(i.room)} {e(i.device_id)}</li>" for i in self.not_seen)
        finished = self.when(self.finished_at) if self.finished_at is not None else "进行中"
        lq, rssi, battery = self.limits
        return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>现场调试报告 {e(c.label)} {e(self.when(c.started_at, "%Y-%m-%d"))}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; margin: 2em; color: #111; }}
h1 {{ font-size: 1.5em; margin-bottom: .2em; }} h2 {{ font-size: 1.1em; margin: 1.4em 0 .3em; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9em; }}
th, td {{ border: 1px solid #999; padding: .25em .5em; text-align: left; vertical-align: top; }}
th {{ background: #eee; }} tr.bad td {{ background: #fdd; font-weight: bold; }} tr.warn td {{ background: #ffd; }}
td:nth-child(-n+7) {{ white-space: nowrap; }} .bad {{ color: #b00; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }}
dt {{ font-weight: bold; }} small {{ color: #555; }}
@media print {{ body {{ margin: 0; }} h2 {{ break-after: avoid; }} tr {{ break-inside: avoid; }} }}
</style></head><body>
<h1>现场调试报告</h1>
<dl>
<dt>范围</dt><dd>{e(c.label)}</dd>
<dt>调试人员</dt><dd>{e(self.installer)}</dd>
<dt>开始</dt><dd>{e(self.when(c.started_at))}</dd>
<dt>结束</dt><dd>{e(finished)}{f"，{e(self.finished_by)}" if self.finished_by else ""}</dd>
<dt>设备</dt><dd>共{s["devices"]}台，已上报{s["seen"]}台，未上报{len(s["not_seen"])}台，信号弱{len(s["weak"])}台，低电量{len(s["low_battery"])}台</dd>
</dl>
<h2>未上报的设备（{len(s["not_seen"])}台）</h2>
{f"<ul class='bad'>{missing_list}</ul>" if missing_list else "<p>无：全部设备均已上报。</p>"}
{"".join(rows)}
<p><small>调试期间的事件已保存并标记为测试（test=true），未通知任何人；“本应触发的报警”为非测试模式下会产生的报警。
信号弱：Zigbee链路质量低于{_num(lq)}或RSSI低于{_num(rssi)} dBm；低电量：低于{_num(battery)}%或设备报低电量。</small></p>
</body></html>
"""


def walk(
    config: SiteConfig,
    registry: Registry,
    store: Store,
    commission: CommissionRow,
    *,
    timezone: str = "Asia/Shanghai",
    finished_at: float | None = None,
    finished_by: str | None = None,
) -> Walk:
    """The walk test's checklist now (or, with ``finished_at``, as its report)."""
    s = config.test_mode
    names = {p.id: p.name for p in config.staff}
    devices = store.test_mode_devices(commission.test_mode)
    seen = store.commission_seen(commission.id)
    would: dict[str, list[WouldHave]] = {}
    for w in store.would_haves(devices=devices, since=commission.started_at):
        if finished_at is None or w.at <= finished_at:
            would.setdefault(w.device_id, []).append(w)
    items = []
    for device_id in devices:
        entry = registry.devices.get(device_id)
        if entry is None:  # removed from the config since the walk test began
            continue
        loc = entry.location
        got = seen.get(device_id)
        weak = got is not None and (
            (got.linkquality is not None and got.linkquality < s.weak_linkquality)
            or (got.rssi is not None and got.rssi < s.weak_rssi)
        )
        low = got is not None and (got.battery_low or (got.battery is not None and got.battery < s.low_battery))
        household = entry.config.household
        flat = Location(loc.building, loc.unit, loc.household).label_zh()
        place = flat if household else f"{building_label(registry, loc.building)} 公共区域"
        items.append(
            Item(
                device_id,
                entry.family,
                entry.model,
                loc.building,
                loc.unit,
                household,
                place,
                loc.room,
                got,
                weak,
                low,
                tuple(would.get(device_id, ())),
            )
        )
    items.sort(key=lambda i: (i.building, i.household == "", i.unit, i.household, i.room, i.device_id))
    return Walk(
        commission,
        _person(names, commission.started_by),
        tuple(items),
        timezone,
        finished_at,
        _person(names, finished_by) if finished_by else "",
        (s.weak_linkquality, s.weak_rssi, s.low_battery),
    )


def build_report(
    config: SiteConfig,
    registry: Registry,
    store: Store,
    commission: CommissionRow,
    *,
    finished_at: float,
    finished_by: str,
    timezone: str = "Asia/Shanghai",
) -> Walk:
    return walk(
        config, registry, store, commission, timezone=timezone, finished_at=finished_at, finished_by=finished_by
    )


def _person(names: dict[str, str], person: str) -> str:
    name = names.get(person)
    return f"{name} ({person})" if name else person


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def signal_text(seen: SeenRow | None) -> str:
    if seen is None:
        return ""
    parts = []
    if seen.linkquality is not None:
        parts.append(f"LQI {_num(seen.linkquality)}")
    if seen.rssi is not None:
        parts.append(f"RSSI {_num(seen.rssi)} dBm")
    return " ".join(parts)


def battery_text(seen: SeenRow | None) -> str:
    if seen is None:
        return ""
    text = f"{_num(seen.battery)}%" if seen.battery is not None else ""
    return f"{text} 低电量".strip() if seen.battery_low else text


__all__: Sequence[str] = ("FAMILY_ZH", "TRY_ZH", "Item", "Walk", "battery_text", "build_report", "signal_text", "walk")
