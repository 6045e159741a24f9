"""Visit check-ins and plans from the site config: pure, no I/O (docs/visits.md).

The registry decodes MQTT check-ins (``<topic_prefix>/visits/checkin``) with
``decode_checkin``; the CLI builds its check-in with ``checkin_event``; the visit tracker
(gateway/visits.py) and the monthly report use ``covered_residents`` and ``plan_interval``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from gateway.config import Household, Resident, SiteConfig
from gateway.errors import PayloadError
from gateway.models import Event, Family, Kind, Location
from gateway.store import VisitRow

CHECKIN_DEVICE = "visits"

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


def household_location(h: Household) -> Location:
    return Location(h.building, h.unit, h.number or h.id)


def checkin_topic(config: SiteConfig) -> str:
    return f"{config.topic_prefix}/visits/checkin"


def checkin_event(
    config: SiteConfig, household: str, visitor: str, at: float, received_at: float, note: str, method: str
) -> tuple[Event, VisitRow]:
    """A check-in as an event and its visit record; ``ValueError`` names what is wrong."""
    houses = {h.id: h for h in config.households}
    visitors = {v.id: v for v in config.visitors}
    if household not in houses:
        raise ValueError(f"unknown household {household!r}")
    if visitor not in visitors:
        raise ValueError(f"unknown visitor {visitor!r} (register it under [[visitors]])")
    who = visitors[visitor]
    covered = tuple(r.id for r in covered_residents(config) if r.household == household)
    event = Event(
        device_id=CHECKIN_DEVICE,
        family=Family.DOOR,
        kind=Kind.VISIT,
        event_time=at,
        received_at=received_at,
        location=household_location(houses[household]),
        values={"household": household, "visitor": visitor, "note": note, "method": method},
        source=method,
    )
    row = VisitRow(household, covered, visitor, at, method, note, None, who.name, who.role, CHECKIN_DEVICE)
    return event, row


def decode_checkin(config: SiteConfig, payload: bytes, received_at: float) -> Event:
    """``{"household": "3-2-502", "visitor": "v1", "time"?: epoch s | ISO 8601, "note"?: str}``."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("bad_json", f"visit check-in: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError("wrong_type", "visit check-in: expected a JSON object")
    household, visitor, note = data.get("household"), data.get("visitor"), data.get("note", "")
    if not isinstance(household, str) or not isinstance(visitor, str):
        raise PayloadError("missing_field", "visit check-in: household and visitor (strings) are required")
    if not isinstance(note, str):
        raise PayloadError("wrong_type", "visit check-in: note must be a string")
    at = _time(data.get("time"), received_at)
    try:
        event, _ = checkin_event(config, household, visitor, at, received_at, note[:500], "mqtt")
    except ValueError as exc:
        raise PayloadError("unknown_reference", f"visit check-in: {exc}") from None
    return event


def _time(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise PayloadError("wrong_type", "visit check-in: time must be epoch seconds or ISO 8601 with a UTC offset")
