"""A small block for rule tests: building 3 with an elder living alone in 502, a family in
501, public doors and detectors. Times are local (Asia/Shanghai) on Monday 2026-03-02."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from edge_rules import Context, Decision, DeviceInfo, Engine, ResidentInfo, load_rules
from edge_rules.rules import RuleSet
from gateway.models import Event, Family, Kind, Location, Scalar

TZ = ZoneInfo("Asia/Shanghai")
DAY0 = datetime(2026, 3, 2, tzinfo=TZ)  # a Monday


def at(hhmm: str, day: int = 0, seconds: float = 0.0) -> float:
    h, m = (int(x) for x in hhmm.split(":"))
    return (DAY0 + timedelta(days=day, hours=h, minutes=m)).timestamp() + seconds


WANG = ResidentInfo("r-502", "王秀英", lives_alone=True, risk_tier="medium")
LI = ResidentInfo("r-601", "李建国", lives_alone=True, risk_tier="high")
ZHANG = ResidentInfo("r-501", "张伟", lives_alone=False)


def _home(
    hh: str, number: str, residents: tuple[ResidentInfo, ...], devices: list[tuple[str, Family, str]]
) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            f"{hh}-{name}",
            family,
            household=hh,
            building="3",
            location=Location("3", "2", number, room),
            residents=residents,
            report_interval=3600.0,
        )
        for name, family, room in devices
    ]


HOME = [
    ("door", Family.DOOR, "入户门"),
    ("bath", Family.FALL, "卫生间"),
    ("bed", Family.FALL, "卧室"),
    ("smoke", Family.SMOKE, "厨房"),
    ("sos", Family.SOS, "卧室"),
    ("gas", Family.GAS, "厨房"),
]

DEVICES = [
    *_home("3-2-502", "502", (WANG,), HOME),
    *_home("3-2-601", "601", (LI,), HOME),
    *_home("3-2-501", "501", (ZHANG,), HOME),
    DeviceInfo("3-stair-smoke", Family.SMOKE, building="3", location=Location("3", "2", "", "楼梯间")),
    DeviceInfo("3-u2-reader", Family.DOOR, building="3", location=Location("3", "2", "", "单元门")),
    DeviceInfo("3-u2-door", Family.DOOR, building="3", location=Location("3", "2", "", "单元门")),
    DeviceInfo("5-stair-smoke", Family.SMOKE, building="5", location=Location("5", "1", "", "楼梯间")),
]
CONTEXT = Context(DEVICES)
BOTH = load_rules("elderly_care", "smart_community")  # the gateway's default order


class Feed:
    """Builds events with increasing seqs, families from the context."""

    def __init__(self) -> None:
        self.seqs = itertools.count(1)

    def __call__(self, device: str, kind: Kind | str, t: float, **values: Scalar) -> Event:
        info = CONTEXT.device(device)
        assert info is not None and info.family is not None, device
        return Event(
            device_id=device,
            family=info.family,
            kind=Kind(kind),
            event_time=t,
            received_at=t,
            location=info.location,
            values=values,
            seq=next(self.seqs),
        )


def engine(rules: RuleSet | None = None, state: list[tuple[str, dict[str, object]]] | None = None) -> Engine:
    return Engine(rules or BOTH, None, CONTEXT, state=state)


def timeline(decisions: list[Decision]) -> list[tuple[str, str, str, int, float]]:
    return [d.summary() for d in decisions]
