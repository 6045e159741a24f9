"""Visit plans and check-in records from the site config: pure, no I/O (docs/visits.md).

The CLI builds its check-in with ``checkin_event`` (the event and its visit record); the visit
tracker (gateway/care/visits.py) and the monthly report use ``covered_residents`` and
``plan_interval``. The check-in message itself is decoded in ``gateway.site.checkin``.
"""

from __future__ import annotations

from gateway.models import Event
from gateway.site.checkin import CHECKIN_DEVICE, visit_event
from gateway.site.config import Resident, SiteConfig
from gateway.store import VisitRow

ROLE_ZH = {
    "community_worker": "社区工作人员",
    "volunteer": "志愿者",
    "grid_worker": "网格员",
    "family": "家属",
    "doctor": "医生",
}
METHOD_ZH = {"access": "门禁刷卡", "mqtt": "MQTT签到", "cli": "手工登记"}


def covered_residents(config: SiteConfig) -> list[Resident]:
    """The residents visit plans apply to (特殊困难老年人: by default those living alone)."""
    v = config.visits
    return [
        r
        for r in config.residents
        if r.id not in v.exclude and (r.id in v.include or r.lives_alone or not v.lives_alone)
    ]


def plan_interval(config: SiteConfig, resident: Resident) -> float:
    if resident.visit_every is not None:
        return resident.visit_every
    return float(getattr(config.visits.plans, resident.risk_tier))


def checkin_event(
    config: SiteConfig, household: str, visitor: str, at: float, received_at: float, note: str, method: str
) -> tuple[Event, VisitRow]:
    """A check-in as an event and its visit record; ``ValueError`` names what is wrong."""
    event = visit_event(config, household, visitor, at, received_at, note, method)
    who = next(v for v in config.visitors if v.id == visitor)
    covered = tuple(r.id for r in covered_residents(config) if r.household == household)
    row = VisitRow(household, covered, visitor, at, method, note, None, who.name, who.role, CHECKIN_DEVICE)
    return event, row
